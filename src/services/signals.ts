import { keyOf } from '../domain/ids.js';
import type { InboxSignal } from '../domain/events.js';
import type { SignalConfigDto } from '../domain/calls.js';
import type { Actor } from '../domain/actor.js';
import type { RateLimits } from './limits.js';
import { AppError, badRequest, notFound } from '../domain/errors.js';
import { isMember } from '../store/members.js';
import type { Store } from '../store/store.js';
import type { EventPublisher } from './publisher.js';
import type { AccessService } from './access.js';
import type { RtcConfig } from '../config/rtc.js';
import { mintTurnCredential } from './turn-credentials.js';

/** Largest signal payload (JSON, UTF-8 bytes). An SDP offer with many codecs is a few KiB. */
export const MAX_SIGNAL_PAYLOAD_BYTES = 16 * 1024;

export type SignalType = InboxSignal['signal'];

/**
 * WebRTC signaling for 1:1 calls, relayed between two members of a room: offers, answers, ICE
 * candidates and hangups go to the target user's `inbox.events` as live `signal` events. Never
 * stored, never replayed, never logged (SDP carries addresses).
 */
export class SignalService {
  constructor(
    private readonly limits: RateLimits,
    private readonly store: Store,
    private readonly access: AccessService,
    private readonly publisher: EventPublisher,
    /** RTC_ICE_SERVERS and RTC_TURN_*: what call clients put in `RTCConfiguration.iceServers`. */
    private readonly rtc: RtcConfig = { iceServers: [] },
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * `signal.config`: the ICE servers (STUN/TURN) to call with; empty: host candidates only. With
   * RTC_TURN_URLS, one more TURN server with a credential minted for the caller, and its expiry.
   */
  config(actor: Actor): SignalConfigDto {
    const iceServers = this.rtc.iceServers.map((s) => ({ ...s, urls: [...s.urls] }));
    if (!this.rtc.turn) return { iceServers };
    const minted = mintTurnCredential(this.rtc.turn, actor, this.now());
    return { iceServers: [...iceServers, minted.server], expiresAt: minted.expiresAt };
  }

  async send(actor: Actor, input: { roomId: string; toUserId: string; type: SignalType; payload?: unknown }): Promise<{ ok: true }> {
    if (input.toUserId === actor.id) throw badRequest('cannot send a signal to yourself');
    const payload = input.payload ?? null;
    const size = Buffer.byteLength(JSON.stringify(payload), 'utf8');
    if (size > MAX_SIGNAL_PAYLOAD_BYTES) {
      throw new AppError('PAYLOAD_TOO_LARGE', `signal payload is ${size} bytes; at most ${MAX_SIGNAL_PAYLOAD_BYTES} bytes are relayed`);
    }
    await this.limits.consume('signal', keyOf(actor.tenant, actor.id));
    // Both ends must be members: the sender by the one access check (muted members cannot call),
    // support agents and service tokens without a membership do not count.
    const access = await this.access.requireAccess(actor, input.roomId, 'send');
    if (!access.member) throw notFound('room');
    if (!(await isMember(this.store.db(), input.roomId, input.toUserId))) throw notFound('recipient in this room');
    const signal: InboxSignal = { type: 'signal', roomId: input.roomId, from: actor.id, signal: input.type, payload };
    await this.publisher.inbox(actor.tenant, input.toUserId, signal);
    return { ok: true };
  }
}
