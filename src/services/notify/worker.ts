import { PollingLoop } from '../polling.js';
import type { NotifyConfig } from '../../config.js';
import { oneLine } from '../../domain/text.js';
import type { Logger } from '../../logger.js';
import type { Counters } from '../../metrics.js';
import type { PresenceStore } from '../../realtime/presence-store.js';
import {
  abandonPush,
  type ClaimedDigest,
  type ClaimedPush,
  claimDigests,
  claimPushes,
  cursorAfter,
  deleteDigest,
  digestItems,
  digestSent,
  failPush,
  findPreference,
  findRoomPreference,
  finishPush,
  forgetDevice,
  holdPush,
  listDevices,
  markDevicePushed,
  postponeDigest,
  pruneIdlePushes,
  pushContext,
  retryDigest,
  type UnreadItems,
  unreadOfRow,
  userEmail,
} from '../../store/notify.js';
import type { Store } from '../../store/store.js';
import { retryDelay } from '../webhooks/worker.js';
import { type Mailer, previewOf, renderDigest, roomUrl, sendLimits } from './digest.js';
import { DEFAULT_LEVEL, decidePush, type Preferences, type RoomLevel } from './policy.js';
import { preferencesOf } from './preferences.js';
import { type PushPayload, sendPush } from './push.js';

const PUSH_BATCH = 20;
const DIGEST_BATCH = 10;
const DIGEST_ITEMS = 50;
const PRUNE_EVERY_MS = 60 * 60_000;

export interface NotifyWorkerOptions {
  /**
   * The node's clock (default Date.now). Read for decisions only (quiet hours, how long ago a user
   * was seen); every due time is written as the database's now() plus a duration, so a node whose
   * clock is off does not make rows due early or late.
   */
  now?: () => number;
  /** At most this many items in one digest (default 50); the rest go into the next one. */
  digestItems?: number;
}

/**
 * Sends the notification queue, on every node, as the webhook worker does: polls every
 * NOTIFY_POLL_MS and is woken after a local commit that queued something. Pushes and e-mail digests
 * have a loop each, so a slow SMTP server holds back no push. A row is claimed with a lease longer
 * than its send may take (`sendLimits`: a send is cut off at its deadline first), so it is handled by
 * one node at a time, and a node that dies mid-send leaves it to another once the lease ends (at least once).
 * Whether to tell the user is decided when the row is due (presence across nodes, preferences,
 * read state: src/services/notify/policy.ts), so someone who came back or read meanwhile gets nothing.
 */
export class NotifyWorker {
  private readonly pushes: PollingLoop;
  private readonly digests: PollingLoop;
  private readonly abort = new AbortController();
  private prunedAt = 0;
  private readonly now: () => number;
  private readonly digestItems: number;

  constructor(
    private readonly store: Store,
    private readonly presence: PresenceStore,
    private readonly config: NotifyConfig,
    private readonly mailer: Mailer | null,
    private readonly log: Logger,
    private readonly counters: Counters,
    options: NotifyWorkerOptions = {},
  ) {
    this.pushes = new PollingLoop(() => this.pushRound(), config.pollMs);
    this.digests = new PollingLoop(() => this.digestRound(), config.pollMs);
    this.now = options.now ?? Date.now;
    this.digestItems = options.digestItems ?? DIGEST_ITEMS;
  }

  /** The lease of a claimed push or digest row (`sendLimits`). */
  get leaseMs(): number {
    return sendLimits(this.config.pushTimeoutMs).leaseMs;
  }

  start(): void {
    if (!this.config.vapid && !this.mailer) return;
    this.pushes.start(); // also prunes idle push rows
    if (this.mailer) this.digests.start();
  }

  wake(): void {
    this.pushes.wake();
    this.digests.wake();
  }

  /** Stops both loops, aborts sends in flight (their rows are retried after the lease) and waits for the rounds. */
  async stop(): Promise<void> {
    const done = Promise.all([this.pushes.stop(), this.digests.stop()]);
    this.abort.abort();
    await done;
    this.mailer?.close();
  }

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async pushRound(): Promise<void> {
    try {
      if (Date.now() - this.prunedAt > PRUNE_EVERY_MS) {
        this.prunedAt = Date.now();
        await pruneIdlePushes(this.store.db());
      }
      const { deadlineMs } = sendLimits(this.config.pushTimeoutMs);
      while (!this.stopped && this.config.vapid) {
        // Taken before the claim, as for digests: the pushes of the batch must have ended by `by`.
        const claimedAt = this.now();
        const rows = await claimPushes(this.store.db(), PUSH_BATCH, this.leaseMs);
        if (rows.length === 0) break;
        const by = claimedAt + deadlineMs;
        await Promise.all(
          rows.map((r) =>
            this.push(r, by).catch(async (err: unknown) => {
              this.log.warn({ err }, 'push failed');
              await this.abandon(r);
            }),
          ),
        );
      }
    } catch (err) {
      if (!this.stopped) this.log.warn({ err }, 'push round failed');
    }
  }

  private async digestRound(): Promise<void> {
    try {
      const { deadlineMs, leaseMs } = sendLimits(this.config.pushTimeoutMs);
      while (!this.stopped && this.mailer) {
        // Taken before the claim: the lease (from the database's now()) ends no earlier than `leaseMs` after it.
        const claimedAt = Date.now();
        const rows = await claimDigests(this.store.db(), DIGEST_BATCH, leaseMs);
        if (rows.length === 0) break;
        const by = claimedAt + deadlineMs;
        await Promise.all(rows.map((r) => this.digest(r, by).catch((err: unknown) => this.log.warn({ err }, 'digest failed'))));
      }
    } catch (err) {
      if (!this.stopped) this.log.warn({ err }, 'digest round failed');
    }
  }

  private async online(tenant: string, userId: string): Promise<boolean> {
    return (await this.presence.count({ tenant, userId })) > 0;
  }

  /** Counts an outcome not written because the claim's lease ran out and another node claimed the row. */
  private lost(what: 'push' | 'digest', fields: Record<string, unknown>): void {
    this.counters.claimsLost++;
    this.log.info(fields, `${what} outcome not recorded: the lease ran out and another node claimed the row`);
  }

  /** A claim that ends with no outcome: left to its lease, with its kind put back (`abandonPush`). */
  private async abandon(q: ClaimedPush): Promise<void> {
    try {
      await abandonPush(this.store.db(), q);
    } catch (err) {
      if (!this.stopped) this.log.warn({ err, user: q.user_id, room: q.room_id }, 'push claim not released (retried after the lease)');
    }
  }

  /**
   * `by`: when the push requests must have ended (this node's clock), before the claim's lease can
   * run out: the reads before them (presence, preferences, the room) count against it too.
   */
  private async push(q: ClaimedPush, by: number): Promise<void> {
    const db = this.store.db();
    const coalesce = this.config.coalesceMs;
    // Each outcome is written only while the row is still this claim's (src/store/notify.ts, `PushClaim`).
    const settled = (written: boolean) => {
      if (!written) this.lost('push', { user: q.user_id, room: q.room_id });
    };
    const drop = () => finishPush(db, q, q.pending, false, coalesce).then(settled);
    const [online, prefRow, roomPref, ctx] = await Promise.all([
      this.online(q.tenant, q.user_id),
      findPreference(db, q.tenant, q.user_id),
      q.room_id ? findRoomPreference(db, q.room_id, q.user_id) : Promise.resolve(undefined),
      pushContext(db, q),
    ]);
    if (q.room_id && (!ctx.room || ctx.room.member === null)) return drop(); // the room is gone or the user left
    // A row that stands for one message only, deleted since (or gone): nothing to tell. With more, the
    // push counts it among them and shows none of it (`payloadOf`).
    if (q.pending === 1 && q.message_id !== null && (!ctx.message || ctx.message.deleted_at !== null)) return drop();
    const level = (roomPref?.level as RoomLevel | undefined) ?? DEFAULT_LEVEL;
    const lastRead = Number(ctx.room?.last_read_seq ?? 0);
    const read = ctx.room != null && q.message_seq !== null && lastRead >= q.message_seq;
    // Read past some of its items only: the push tells of the rest, as their count and kind.
    let unread: UnreadItems = { count: q.pending, kind: q.kind };
    if (!read && ctx.room && q.pending > 1) {
      const direct = ctx.room.kind === 'direct';
      unread = (await unreadOfRow(db, q, { seq: lastRead, at: ctx.room.last_read_at }, direct || level === 'all', direct)) ?? unread;
    }
    const now = new Date(this.now());
    const decision = decidePush({
      kind: unread.kind,
      online,
      prefs: preferencesOf(prefRow),
      room: q.room_id ? { level, muteUntil: roomPref?.mute_until ?? null } : null,
      read,
      now,
    });
    // Held for as long as the quiet hours last by this node's clock, from the database's now().
    if ('holdUntil' in decision) return holdPush(db, q, Math.max(decision.holdUntil.getTime() - now.getTime(), 0)).then(settled);
    if (!decision.send) return drop();
    const devices = await listDevices(db, q.tenant, q.user_id);
    if (devices.length === 0) return drop();
    const payload = this.payloadOf(q, unread, ctx);
    const urgency = unread.kind === 'message' || unread.kind === 'notification' ? 'normal' : 'high';
    // What is left of the deadline: none, and the row is left to its lease (another claim retries it)
    // rather than pushed by a node whose claim may be another's by the time the request ends.
    const left = by - this.now();
    if (left <= 0) {
      await this.abandon(q);
      this.log.warn({ user: q.user_id, room: q.room_id }, 'push not sent: its deadline passed before the request (retried after the lease)');
      return;
    }
    const results = await Promise.all(devices.map((d) => sendPush(d, payload, this.config, { urgency, signal: this.abort.signal, timeoutMs: left })));
    const ok: string[] = [];
    const errors: string[] = [];
    let gone = 0;
    for (const [i, r] of results.entries()) {
      const d = devices[i]!;
      if (r.ok) ok.push(d.id);
      else if (r.statusCode === 404 || r.statusCode === 410) {
        gone++;
        await forgetDevice(db, d.id);
        this.log.info({ device: d.id, status: r.statusCode }, 'push device removed: its push service no longer knows it');
      } else errors.push(r.error);
    }
    if (ok.length > 0) {
      this.counters.pushesSent += ok.length;
      await markDevicePushed(db, ok);
      return finishPush(db, q, q.pending, true, coalesce).then(settled);
    }
    if (gone === devices.length) return drop();
    if (this.stopped) return this.abandon(q); // aborted by shutdown: retried after the lease
    this.counters.pushesFailed++;
    const retryInMs = q.attempts >= this.config.maxAttempts ? null : retryDelay(this.config.retryBaseMs, q.attempts);
    if (retryInMs === null) this.log.warn({ user: q.user_id, room: q.room_id, error: errors[0] }, 'push given up');
    settled(await failPush(db, q, q.pending, retryInMs, errors.join('; ')));
  }

  /** `unread`: what of the row the push tells of (all of it unless the user read past some). */
  private payloadOf(q: ClaimedPush, unread: UnreadItems, ctx: Awaited<ReturnType<typeof pushContext>>): PushPayload {
    // Names stored before they were checked may hold line breaks: one line in a title.
    const roomName = oneLine(ctx.room?.name ?? '') || 'a room';
    const from = oneLine(ctx.fromName ?? '') || 'Someone';
    const preview = ctx.message
      ? previewOf({ encrypted: ctx.room?.encrypted === true || ctx.message.key_id !== null, roomName, body: ctx.message.body, deleted: ctx.message.deleted_at !== null })
      : '';
    const url = roomUrl(this.config.publicAppUrl, q.room_id);
    const count = unread.count;
    const many = (what: string) => (count > 1 ? `${count} ${what}` : null);
    // A row of several items has the most personal kind of them but the newest one's sender, who
    // may not be the one who mentioned, replied or invited: such a title names nobody then.
    const who = (personal: string, anonymous: string) => (count > 1 ? anonymous : personal);
    let title: string;
    let body: string;
    switch (unread.kind) {
      case 'mention':
        title = who(`${from} mentioned you in ${roomName}`, `You were mentioned in ${roomName}`);
        body = many(`new notifications in ${roomName}`) ?? preview;
        break;
      case 'direct':
        title = from;
        body = many('new messages') ?? preview;
        break;
      case 'reply':
        title = who(`${from} replied in ${roomName}`, `New replies in ${roomName}`);
        body = many(`new notifications in ${roomName}`) ?? preview;
        break;
      case 'message':
        title = roomName;
        body = many(`new messages in ${roomName}`) ?? `${from}: ${preview}`;
        break;
      case 'meeting.invite':
        title = who(`${from} invites you to a meeting in ${roomName}`, `You are invited to a meeting in ${roomName}`);
        body = many(`new notifications in ${roomName}`) ?? q.title ?? 'Join the meeting';
        break;
      case 'notification':
        title = q.title ?? 'Notification';
        body = many('new notifications') ?? `From ${from}`;
        break;
    }
    return {
      type: unread.kind,
      roomId: q.room_id,
      ...(q.message_id ? { messageId: q.message_id } : {}),
      title,
      body,
      url: unread.kind === 'meeting.invite' && q.url ? q.url : url,
      count,
    };
  }

  /** `by`: when the send must have ended (`Date.now()` time), before the claim's lease can run out. */
  private async digest(d: ClaimedDigest, by: number): Promise<void> {
    const db = this.store.db();
    const delay = this.config.digestDelayMs;
    // Each outcome is written only while the row is still this claim's (src/store/notify.ts, `DigestClaim`).
    const settled = (written: boolean) => {
      if (!written) this.lost('digest', { user: d.user_id });
    };
    // Nothing to send: the row goes, unless an item was queued since the claim (then it is due as a new row would be).
    const drop = async () => settled((await deleteDigest(db, d, delay)) !== 'lost');
    const [prefRow, user] = await Promise.all([findPreference(db, d.tenant, d.user_id), userEmail(db, d.tenant, d.user_id)]);
    const prefs: Preferences = preferencesOf(prefRow);
    if (!this.mailer || prefs.email === 'off' || !user?.email) return drop();
    // Away for the whole delay: not connected now, and not seen within it. Otherwise checked again
    // later: not a failed attempt (only failed sends count towards NOTIFY_MAX_ATTEMPTS).
    if (await this.online(d.tenant, d.user_id)) return postponeDigest(db, d, delay).then(settled);
    const [state] = await this.presence.get(d.tenant, [d.user_id]);
    const seen = state?.lastSeenAt ? new Date(state.lastSeenAt).getTime() : 0;
    const away = this.now() - seen;
    if (away < delay) return postponeDigest(db, d, delay - away).then(settled);
    const items = await digestItems(db, d.tenant, d.user_id, d.cursor, this.digestItems);
    if (items.length === 0) return drop();
    try {
      await this.mailer.send(user.email, renderDigest(user.name, items, this.config.publicAppUrl), { by, signal: this.abort.signal });
    } catch (err) {
      if (this.stopped) return; // aborted by shutdown: retried after the lease
      const retryInMs = d.attempts >= this.config.maxAttempts ? null : retryDelay(this.config.retryBaseMs, d.attempts);
      this.log.warn({ err, user: d.user_id, givenUp: retryInMs === null }, 'e-mail digest failed');
      if (retryInMs === null) return drop();
      return retryDigest(db, d, retryInMs, (err as Error).message).then(settled);
    }
    this.counters.digestsSent++;
    // What comes after its last item goes into the next digest (the row stays until a round finds nothing new).
    settled(await digestSent(db, d, cursorAfter(items), delay));
  }
}
