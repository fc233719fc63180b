import type { Actor } from '../../domain/actor.js';
import { badRequest } from '../../domain/errors.js';
import { findPreference, listRoomPreferences, type PreferenceRow, savePreference, saveRoomPreference } from '../../store/notify.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { EmailMode, Preferences, PreferencesDto, QuietHours, RoomLevel, RoomPreferenceDto } from '../../domain/notify.js';
import { DEFAULT_PREFERENCES, isTimeZone } from './policy.js';

/** The stored row as preferences (no row: the defaults). */
export function preferencesOf(row: PreferenceRow | undefined): Preferences {
  if (!row) return DEFAULT_PREFERENCES;
  return {
    email: row.email === 'off' ? 'off' : 'digest',
    push: row.push,
    quietHours:
      row.quiet_start && row.quiet_end && row.quiet_time_zone ? { start: row.quiet_start, end: row.quiet_end, timeZone: row.quiet_time_zone } : null,
  };
}

/** `notify.preferences`, `notify.setPreferences`, `notify.setRoomPreference`. */
export class PreferenceService {
  constructor(
    private readonly store: Store,
    private readonly access: AccessService,
  ) {}

  async get(actor: Actor): Promise<PreferencesDto> {
    const db = this.store.db();
    const [row, rooms] = await Promise.all([findPreference(db, actor.tenant, actor.id), listRoomPreferences(db, actor.tenant, actor.id)]);
    return {
      ...preferencesOf(row),
      rooms: rooms.map((r) => ({ roomId: r.room_id, level: r.level as RoomLevel, muteUntil: r.mute_until })),
    };
  }

  async set(actor: Actor, input: { email?: EmailMode | undefined; push?: boolean | undefined; quietHours?: QuietHours | null | undefined }): Promise<PreferencesDto> {
    if (input.quietHours && !isTimeZone(input.quietHours.timeZone)) {
      throw badRequest(`quietHours.timeZone must be an IANA time zone such as Europe/Berlin (got ${JSON.stringify(input.quietHours.timeZone)})`);
    }
    const db = this.store.db();
    const current = preferencesOf(await findPreference(db, actor.tenant, actor.id));
    const quiet = input.quietHours === undefined ? current.quietHours : input.quietHours;
    await savePreference(db, actor.tenant, actor.id, {
      email: input.email ?? current.email,
      push: input.push ?? current.push,
      quiet_start: quiet?.start ?? null,
      quiet_end: quiet?.end ?? null,
      quiet_time_zone: quiet?.timeZone ?? null,
    });
    return this.get(actor);
  }

  /** A member's level for a room; `muteUntil` in the future mutes it until then (null or past: not muted). */
  async setRoom(actor: Actor, input: { roomId: string; level: RoomLevel; muteUntil?: Date | null | undefined }): Promise<RoomPreferenceDto> {
    await this.access.requireMember(actor, input.roomId);
    const muteUntil = input.muteUntil && input.muteUntil.getTime() > Date.now() ? input.muteUntil : null;
    await saveRoomPreference(this.store.db(), { tenant: actor.tenant, userId: actor.id, roomId: input.roomId, level: input.level, muteUntil });
    return { roomId: input.roomId, level: input.level, muteUntil };
  }
}
