import { keyOf } from '../domain/ids.js';
import type { Actor } from '../domain/actor.js';
import type { RateLimits } from './limits.js';
import type { EventPublisher } from './publisher.js';
import type { AccessService } from './access.js';


interface TypingState {
  roomId: string;
  userId: string;
  typing: boolean;
  lastPublish: number;
  timer: NodeJS.Timeout | null;
}

/** Typing indicators: live only, throttled, expiring. */
export class TypingService {
  private readonly state = new Map<string, TypingState>();

  constructor(
    private readonly access: AccessService,
    private readonly publisher: EventPublisher,
    private readonly limits: RateLimits,
    /** TYPING_TTL_MS and TYPING_THROTTLE_MS (config). */
    private readonly timing: { ttlMs: number; throttleMs: number },
  ) {}

  async set(actor: Actor, roomId: string, typing: boolean): Promise<{ forwarded: boolean }> {
    // Who may not post may not show "is typing" either (a broadcast room's readers).
    this.access.requirePoster(await this.access.requireAccess(actor, roomId, 'send'));
    await this.limits.consume('typing', keyOf(actor.tenant, actor.id, roomId));
    const key = `${roomId}\u0000${actor.tenant}\u0000${actor.id}`;
    const now = Date.now();
    let s = this.state.get(key);
    if (!s) {
      s = { roomId, userId: actor.id, typing: false, lastPublish: 0, timer: null };
      this.state.set(key, s);
    }
    if (s.timer) clearTimeout(s.timer);
    s.timer = null;
    const forward = s.typing !== typing || now - s.lastPublish >= this.timing.throttleMs;
    s.typing = typing;
    if (typing) {
      s.timer = setTimeout(() => {
        this.state.delete(key);
        void this.publisher.room({ type: 'typing', roomId, userId: actor.id, typing: false });
      }, this.timing.ttlMs);
      s.timer.unref();
    } else {
      this.state.delete(key);
    }
    if (forward) {
      s.lastPublish = now;
      await this.publisher.room({ type: 'typing', roomId, userId: actor.id, typing });
    }
    return { forwarded: forward };
  }

  /**
   * Ends the indicators this node would have ended itself after TYPING_TTL_MS: members on other
   * nodes would otherwise see "typing" until the user types again. Called before the bus closes.
   */
  async close(): Promise<void> {
    const ending = [...this.state.values()].filter((s) => s.typing);
    for (const s of this.state.values()) if (s.timer) clearTimeout(s.timer);
    this.state.clear();
    await Promise.allSettled(ending.map((s) => this.publisher.room({ type: 'typing', roomId: s.roomId, userId: s.userId, typing: false })));
  }
}
