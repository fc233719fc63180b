import type { Preferences, QuietHours, RoomLevel } from '../../domain/notify.js';
import type { PushKind } from '../../store/notify.js';

export type { EmailMode, Preferences, QuietHours, RoomLevel } from '../../domain/notify.js';

/**
 * The one place that decides whether a user is told about something while away (web push and
 * e-mail digests read it). Pure: the worker gathers the facts when an item is due.
 */

export const DEFAULT_PREFERENCES: Preferences = { email: 'digest', push: true, quietHours: null };
/** A room without a preference: mentions (and, in a direct room, every message). */
export const DEFAULT_LEVEL = 'mentions' as const;

/** What the worker knows when an item is due. */
export interface PushFacts {
  kind: PushKind;
  /** Whether the user has an open connection on any node. */
  online: boolean;
  prefs: Preferences;
  /** The user's level and mute for the item's room (null: no room or no preference). */
  room: { level: RoomLevel; muteUntil: Date | null } | null;
  /** The user read up to the item's message meanwhile (or left the room). */
  read: boolean;
  now: Date;
}

export type Decision = { send: true } | { send: false; reason: string } | { holdUntil: Date };

/** The kinds a `mentions` room still notifies about (a direct room's messages count as direct). */
const PERSONAL: Record<PushKind, boolean> = {
  mention: true,
  direct: true,
  reply: true,
  'meeting.invite': true,
  notification: true,
  message: false,
};

/** Whether a push goes out now, is dropped (and why) or is held until quiet hours end. */
export function decidePush(f: PushFacts): Decision {
  if (f.online) return { send: false, reason: 'online' };
  if (!f.prefs.push) return { send: false, reason: 'push off' };
  if (f.read) return { send: false, reason: 'read' };
  if (f.room) {
    if (f.room.muteUntil && f.room.muteUntil > f.now) return { send: false, reason: 'muted' };
    if (f.room.level === 'none') return { send: false, reason: 'level none' };
    if (f.room.level === 'mentions' && !PERSONAL[f.kind]) return { send: false, reason: 'level mentions' };
  } else if (!PERSONAL[f.kind]) return { send: false, reason: 'level mentions' };
  const until = f.prefs.quietHours ? quietUntil(f.prefs.quietHours, f.now) : null;
  return until ? { holdUntil: until } : { send: true };
}

/** True when `timeZone` is an IANA time zone Intl knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
    return true;
  } catch {
    return false;
  }
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** A formatter per time zone (a few hundred zones exist; making one costs more than using it). */
const formats = new Map<string, Intl.DateTimeFormat>();

/** The wall clock at `at` in `timeZone`, to the minute, as if it were UTC (ms). */
function wallClock(at: number, timeZone: string): number {
  let format = formats.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formats.set(timeZone, format);
  }
  const parts = format.formatToParts(at);
  const get = (t: string) => Number(parts.find((p) => p.type === t)?.value ?? 0);
  return Date.UTC(get('year'), get('month') - 1, get('day'), get('hour') % 24, get('minute'));
}

/** How far `timeZone`'s clock is ahead of UTC at the minute `at` starts (ms). */
const offsetAt = (at: number, timeZone: string) => wallClock(at, timeZone) - at;

/**
 * When the quiet hours around `now` end, or null when `now` is outside them. `start` is inside,
 * `end` outside; a range across midnight (22:00-07:00) works; equal start and end mean none. They end
 * at the first instant the zone's clock shows `end`: across a daylight saving change the hours in
 * between are as the clock counts them, an `end` the clocks skip ends them when it is skipped, and one
 * they show twice the first time.
 */
export function quietUntil(q: QuietHours, now: Date): Date | null {
  const start = minutesOf(q.start);
  const end = minutesOf(q.end);
  if (start === end) return null;
  const startOfMinute = now.getTime() - (now.getTime() % 60_000);
  const wall = wallClock(startOfMinute, q.timeZone);
  const m = Math.floor((wall % 86_400_000) / 60_000);
  const inside = start < end ? m >= start && m < end : m >= start || m < end;
  if (!inside) return null;
  // `end` comes that many minutes of the clock later; in UTC, that less the change of the zone's
  // offset by then, if the offset changes in between.
  const later = startOfMinute + ((end - m + 1440) % 1440) * 60_000;
  const before = wall - startOfMinute;
  const after = offsetAt(later, q.timeZone);
  const moved = later - (after - before);
  if (after === before || offsetAt(moved, q.timeZone) === after) return new Date(moved);
  // The clocks skip `end` (`moved` is still on the old offset, `later` past the change): the first
  // minute on the new offset, found by halving (zones change offset on whole minutes).
  let lo = moved;
  let hi = later;
  while (hi - lo > 60_000) {
    const mid = lo + Math.floor((hi - lo) / 120_000) * 60_000;
    if (offsetAt(mid, q.timeZone) === after) hi = mid;
    else lo = mid;
  }
  return new Date(hi);
}
