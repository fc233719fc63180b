import type { PresenceStore } from '../realtime/presence-store.js';
import type { RedisLink } from '../realtime/redis.js';
import { RoomHubs } from '../stream/hubs.js';
import { type BaseDeps, type Deps, nativePool } from './deps.js';
import { InboxService } from './inbox.js';
import { RateLimits } from './limits.js';
import { SessionService } from './sessions.js';
import { Keyring } from './keyring.js';
import { MessageMapper } from './message-dto.js';
import { MessageService } from './messages.js';
import { PRESENCE_TTL_MS, PresenceService } from './presence.js';
import { ReceiptService } from './receipts.js';
import { RetentionService } from './retention.js';
import { RoomLog } from './room-log.js';
import { RoomService } from './rooms.js';
import { StreamService } from '../stream/streams.js';
import { TypingService } from './typing.js';
import { UserService } from './users.js';
import { createVideoProvider } from '../video/index.js';
import { MeetingService } from './meetings.js';
import { SignalService } from './signals.js';

export interface Services {
  deps: Deps;
  log: RoomLog;
  hubs: RoomHubs;
  keyring: Keyring;
  users: UserService;
  rooms: RoomService;
  messages: MessageService;
  streams: StreamService;
  inbox: InboxService;
  receipts: ReceiptService;
  typing: TypingService;
  presence: PresenceService;
  retention: RetentionService;
  limits: RateLimits;
  sessions: SessionService;
  meetings: MeetingService;
  signals: SignalService;
  /** Starts background parts (control channel, retention schedule). */
  start(): Promise<void>;
  close(): Promise<void>;
}

/** The stores chosen once for the node (src/realtime/infrastructure.ts): Redis or this process. */
export interface ServiceStores {
  presence: PresenceStore;
  /** Rate limit counters in Redis, or null to count in memory. */
  limits: RedisLink | null;
  /** The revocation list in Redis, or null to keep it in memory. */
  sessions: RedisLink | null;
}

export function createServices(base: BaseDeps, stores: ServiceStores): Services {
  const limits = new RateLimits(base.config, base.counters, stores.limits, (kind, key, retryAfterMs) =>
    base.log.warn({ audit: 'rate_limited', kind, key, retryAfterMs }, 'rate limit hit'),
  );
  const deps: Deps = { ...base, limits };
  const keyring = new Keyring(deps.config.messageKeys);
  const mapper = new MessageMapper(keyring, (err) => deps.log.warn({ err }, 'cannot decrypt a message body'));
  const log = new RoomLog(deps, mapper);
  const hubs = new RoomHubs(
    deps.bus,
    log,
    (err) => deps.log.warn({ err }, 'room hub error'),
    (e, subscribers) => deps.observers.fanout(e, subscribers),
  );
  const inbox = new InboxService(deps);
  const users = new UserService(deps);
  const rooms = new RoomService(deps, log, inbox, mapper, keyring);
  const messages = new MessageService(deps, log, rooms, inbox, mapper, keyring);
  const streams = new StreamService(rooms, log, hubs);
  const receipts = new ReceiptService(deps, log, rooms);
  const typing = new TypingService(rooms, log, limits, {
    ttlMs: deps.config.typingTtlMs,
    throttleMs: deps.config.typingThrottleMs,
  });
  const presence = new PresenceService(deps, stores.presence, log, presenceTtl(deps.config));
  const sessions = new SessionService(deps, stores.sessions);
  const meetings = new MeetingService(deps, log, rooms, inbox, createVideoProvider(deps.config.video));
  const signals = new SignalService(deps, rooms, inbox);
  const retention = new RetentionService(deps, () => nativePool(deps));
  return {
    deps,
    log,
    hubs,
    keyring,
    users,
    rooms,
    messages,
    streams,
    inbox,
    receipts,
    typing,
    presence,
    retention,
    limits,
    sessions,
    meetings,
    signals,
    async start() {
      await sessions.start();
      retention.start();
    },
    async close() {
      await sessions.close();
      retention.stop();
      typing.close();
      await presence.close();
      await Promise.all([hubs.close(), inbox.close(), limits.close()]);
    },
  };
}

/** How long a presence entry lives without a heartbeat. */
export function presenceTtl(config: BaseDeps['config']): number {
  return config.presenceTtlMs ?? PRESENCE_TTL_MS;
}
