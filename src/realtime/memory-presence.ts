import type { PresenceStatus } from '../domain/events.js';
import type { PresenceState } from '../domain/events.js';
import { SEP, type PresenceConn, type PresenceKey, type PresenceStore } from './presence-store.js';

const enc = (k: PresenceKey) => `${k.tenant}${SEP}${k.userId}`;

/** Presence in this process's memory (one node only, without `REDIS_URL`). */
export class MemoryPresenceStore implements PresenceStore {
  private readonly conns = new Map<string, Map<string, number>>();
  private readonly status = new Map<string, Exclude<PresenceStatus, 'offline'>>();
  private readonly seen = new Map<string, number>();
  /**
   * Raised by every change (see PresenceStore). Starts at the clock in microseconds, not at 0: the
   * clients of a restarted node keep the highest version they were shown per user and drop older
   * ones, so a counter starting over would have frozen every user's presence for them.
   */
  private version = Date.now() * 1000;

  constructor(private readonly ttlMs: number) {}

  private live(key: string, now = Date.now()): Map<string, number> | undefined {
    const m = this.conns.get(key);
    if (!m) return undefined;
    for (const [id, exp] of m) if (exp <= now) m.delete(id);
    if (m.size === 0) {
      this.conns.delete(key);
      return undefined;
    }
    return m;
  }

  async connect(c: PresenceConn): Promise<boolean> {
    this.version++;
    const key = enc(c);
    const had = this.live(key)?.size ?? 0;
    let m = this.conns.get(key);
    if (!m) {
      m = new Map();
      this.conns.set(key, m);
    }
    m.set(c.connId, Date.now() + this.ttlMs);
    return had === 0;
  }

  async admit(c: PresenceConn, max: number): Promise<'full' | 'first' | 'more'> {
    const had = this.live(enc(c))?.size ?? 0;
    if (had >= max) return 'full';
    await this.connect(c);
    return had === 0 ? 'first' : 'more';
  }

  async admitMany(items: { c: PresenceConn; max: number }[]): Promise<('full' | 'first' | 'more')[]> {
    const out: ('full' | 'first' | 'more')[] = [];
    for (const { c, max } of items) out.push(await this.admit(c, max));
    return out;
  }

  async disconnect(c: PresenceConn): Promise<boolean> {
    this.version++;
    const key = enc(c);
    const m = this.conns.get(key);
    if (!m?.delete(c.connId)) return false;
    this.seen.set(key, Date.now());
    return !this.live(key);
  }

  async disconnectMany(conns: PresenceConn[]): Promise<boolean[]> {
    const out: boolean[] = [];
    for (const c of conns) out.push(await this.disconnect(c));
    return out;
  }

  async heartbeat(conns: PresenceConn[]): Promise<PresenceKey[]> {
    this.version++;
    const exp = Date.now() + this.ttlMs;
    const back = new Map<string, PresenceKey>();
    for (const c of conns) {
      const key = enc(c);
      let m = this.conns.get(key);
      if (!m) {
        m = new Map();
        this.conns.set(key, m);
      }
      if (!m.has(c.connId)) back.set(key, { tenant: c.tenant, userId: c.userId });
      m.set(c.connId, exp);
    }
    return [...back.values()];
  }

  async sweep(onGone?: (users: PresenceKey[]) => void): Promise<PresenceKey[]> {
    const gone: PresenceKey[] = [];
    const now = Date.now();
    for (const key of [...this.conns.keys()]) {
      const before = this.conns.get(key)!.size;
      if (before > 0 && !this.live(key, now)) {
        const [tenant, userId] = key.split(SEP) as [string, string];
        this.seen.set(key, now);
        this.version++;
        gone.push({ tenant, userId });
      }
    }
    if (gone.length > 0) onGone?.(gone);
    return gone;
  }

  async setStatus(k: PresenceKey, status: Exclude<PresenceStatus, 'offline'>): Promise<void> {
    this.version++;
    this.status.set(enc(k), status);
  }

  async count(k: PresenceKey): Promise<number> {
    return this.live(enc(k))?.size ?? 0;
  }

  async get(tenant: string, userIds: string[]): Promise<PresenceState[]> {
    return userIds.map((userId) => {
      const key = enc({ tenant, userId });
      const online = !!this.live(key);
      const seen = this.seen.get(key);
      return {
        userId,
        status: online ? (this.status.get(key) ?? 'online') : 'offline',
        lastSeenAt: online ? new Date() : seen ? new Date(seen) : null,
        version: this.version,
      };
    });
  }

  async ping(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {}
}
