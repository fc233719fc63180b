/** `chat notify`: notification preferences (web push, e-mail digests, levels per room). */
import pc from 'picocolors';
import { allRooms } from '../index.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';

const LEVELS = ['all', 'mentions', 'none'] as const;
type Level = (typeof LEVELS)[number];

/** `2026-03-01T18:00Z`, or a duration from now: `30m`, `8h`, `2d`. */
export function parseUntil(raw: string, now = Date.now()): Date {
  const m = /^(\d+)\s*([mhd])$/i.exec(raw.trim());
  if (m) return new Date(now + Number(m[1]) * { m: 60_000, h: 3600_000, d: 86_400_000 }[m[2]!.toLowerCase() as 'm' | 'h' | 'd']);
  const d = new Date(raw);
  if (Number.isNaN(d.getTime())) throw new CliError(`--mute-until must be a date (2026-03-01T18:00Z) or a duration (30m, 8h, 2d), not "${raw}"`);
  return d;
}

export async function notify(
  ctx: Context,
  roomArg: string | undefined,
  level: string | undefined,
  opts: { muteUntil?: string; email?: string; push?: string },
): Promise<void> {
  const c = await ctx.client();
  if (opts.email !== undefined || opts.push !== undefined) {
    if (opts.email !== undefined && opts.email !== 'digest' && opts.email !== 'off') throw new CliError('--email must be digest or off');
    if (opts.push !== undefined && opts.push !== 'on' && opts.push !== 'off') throw new CliError('--push must be on or off');
    await c.trpc.notify.setPreferences.mutate({
      ...(opts.email !== undefined ? { email: opts.email as 'digest' | 'off' } : {}),
      ...(opts.push !== undefined ? { push: opts.push === 'on' } : {}),
    });
  }
  if (roomArg !== undefined) {
    if (level === undefined || !LEVELS.includes(level as Level)) throw new CliError(`give a level: chat notify <room> ${LEVELS.join('|')}`);
    const room = await ctx.resolveRoom(c, roomArg);
    const res = await c.trpc.notify.setRoomPreference.mutate({
      roomId: room.id,
      level: level as Level,
      ...(opts.muteUntil !== undefined ? { muteUntil: parseUntil(opts.muteUntil) } : {}),
    });
    ctx.out.result(res, `${pc.bold(room.name)}: ${res.level}${res.muteUntil ? `, muted until ${res.muteUntil.toISOString()}` : ''}`);
    return;
  }
  const prefs = await c.trpc.notify.preferences.query();
  const rooms = prefs.rooms.length > 0 ? await allRooms(c) : [];
  const nameOf = (id: string) => rooms.find((r) => r.id === id)?.name ?? id;
  const quiet = prefs.quietHours ? `${prefs.quietHours.start}-${prefs.quietHours.end} ${prefs.quietHours.timeZone}` : 'none';
  ctx.out.result(prefs, [
    `push: ${prefs.push ? 'on' : 'off'}, e-mail: ${prefs.email}, quiet hours: ${quiet}`,
    ...prefs.rooms.map((r) => `  ${pc.bold(nameOf(r.roomId))}: ${r.level}${r.muteUntil ? `, muted until ${r.muteUntil.toISOString()}` : ''}`),
    ...(prefs.rooms.length === 0 ? [pc.dim('  every room: mentions (and direct messages)')] : []),
  ].join('\n'));
}
