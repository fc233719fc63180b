import { TokenSigner } from '../auth/signer.js';
import { MAX_KNOWN_TENANTS, TokenVerifier } from '../auth/verifier.js';
import type { PresenceStore } from '../realtime/presence-store.js';
import type { RedisLink } from '../realtime/redis.js';
import { RoomHubs } from '../stream/room-hubs.js';
import type { BaseDeps, Deps } from './deps.js';
import { InboxService } from './inbox.js';
import { RateLimits } from './limits.js';
import { SessionService } from './sessions.js';
import { Keyring } from './keyring.js';
import { MessageMapper } from './message-dto.js';
import { createMessageServices, type MessageServices } from './messages/index.js';
import { PRESENCE_TTL_MS, PresenceService } from './presence.js';
import { ReceiptService } from './receipts.js';
import { RetentionService } from './retention.js';
import { RoomEventSource } from './room-events.js';
import { EventPublisher } from './publisher.js';
import { ActivityFeed } from './activity.js';
import { Store } from '../store/store.js';
import { tenantsWithUsers } from '../store/users.js';
import { createRoomServices, type RoomServices } from './rooms/index.js';
import { AccessService } from './access.js';
import { AuthService } from './auth.js';
import { StreamService } from './room-streams.js';
import { TypingService } from './typing.js';
import { UserService } from './users.js';
import { createVideoProvider } from '../video/index.js';
import { createMeetingServices, type MeetingServices } from './meetings/index.js';
import { SignalService } from './signals.js';
import { SecretBox, WebhookService, WebhookWorker } from './webhooks/index.js';
import { createStorage, FileService, FileWorker } from './files/index.js';
import { DeviceService, Mailer, NotifyWorker, PreferenceService, queueSettings } from './notify/index.js';
import { ComplianceService } from './compliance.js';
import { ReadRouting } from './read-routing.js';

export interface Services {
  deps: Deps;
  store: Store;
  publisher: EventPublisher;
  /** The room list's live feed on `inbox.events` (`room.activity`, `room.changed`). */
  activity: ActivityFeed;
  /** The rooms' durable logs as hubs and streams read them. */
  roomEvents: RoomEventSource;
  hubs: RoomHubs;
  keyring: Keyring;
  users: UserService;
  access: AccessService;
  rooms: RoomServices;
  messages: MessageServices;
  streams: StreamService;
  inbox: InboxService;
  receipts: ReceiptService;
  typing: TypingService;
  presence: PresenceService;
  retention: RetentionService;
  limits: RateLimits;
  sessions: SessionService;
  /** Access tokens: the one verifier, revocation, dev login, refresh. */
  auth: AuthService;
  meetings: MeetingServices;
  signals: SignalService;
  /** Outgoing webhooks: the tenant's endpoints (`webhook.*`) and this node's delivery worker. */
  webhooks: WebhookService;
  webhookWorker: WebhookWorker;
  /** Uploaded files (`file.*`, attachments) and this node's file worker (previews, removals). */
  files: FileService;
  fileWorker: FileWorker;
  /** Web push devices (`device.*`). */
  devices: DeviceService;
  /** Notification preferences (`notify.*`). */
  preferences: PreferenceService;
  /** This node's sender of queued pushes and e-mail digests. */
  notifyWorker: NotifyWorker;
  /** Exports, erasure and the audit trail (`admin.*`). */
  compliance: ComplianceService;
  /** Where the replica-capable reads go: a read replica that has what the caller has seen, or the primary. */
  reads: ReadRouting;
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

export async function createServices(base: BaseDeps, stores: ServiceStores): Promise<Services> {
  const limits = new RateLimits(
    base.config,
    base.counters,
    stores.limits,
    (kind, key, retryAfterMs) => base.log.warn({ audit: 'rate_limited', kind, key, retryAfterMs }, 'rate limit hit'),
    () => base.bus.alone,
  );
  const deps: Deps = { ...base, limits };
  const keyring = new Keyring(deps.config.messageKeys);
  const mapper = new MessageMapper(keyring, (err) => deps.log.warn({ err }, 'cannot decrypt a message body'));
  const publisher = new EventPublisher(deps.bus, deps.counters);
  let webhookWorker: WebhookWorker | undefined;
  let notifyWorker: NotifyWorker | undefined;
  const notifyQueue = queueSettings(deps.config.notify);
  const store = new Store(
    deps.orm,
    {
      publisher,
      toMessage: (row) => mapper.fromRow(row),
      onJobError: (err) => deps.log.warn({ err }, 'publish after commit failed'),
      onOutbox: () => webhookWorker?.wake(),
      notifyQueue: () => notifyQueue,
      onNotify: () => notifyWorker?.wake(),
      onRetry: (err, attempt) => {
        deps.counters.txRetries++;
        deps.log.warn({ err, attempt }, 'transaction deadlocked or failed to serialize: run again');
      },
    },
    // Embedded PostgreSQL (no DATABASE_URL) serves every connection from one backend: names would collide.
    {
      preparedStatements: deps.config.dbPreparedStatements && deps.config.databaseUrl !== undefined,
      // The pipe holds one connection of the pool for good: never the only one.
      pipe: deps.config.dbSendPipeline && deps.config.dbPoolMax > 1 ? deps.sendPipe : null,
    },
  );
  const reads = new ReadRouting(store, deps.replicas ?? [], { maxLagMs: deps.config.databaseReplicaMaxLagMs }, deps.counters, deps.log);
  const roomEvents = new RoomEventSource(store, mapper, reads);
  const hubs = new RoomHubs(
    deps.bus,
    roomEvents,
    (err) => deps.log.warn({ err }, 'room hub error'),
    (e, subscribers) => deps.observers.fanout(e, subscribers),
  );
  const inbox = new InboxService(deps.bus, deps.log, store);
  const secrets = new SecretBox(keyring);
  webhookWorker = new WebhookWorker(store, roomEvents, deps.config.webhooks, deps.log, deps.counters, secrets);
  const webhooks = new WebhookService(store, { allowPrivateUrls: deps.config.webhooks.allowPrivateUrls }, secrets);
  const users = new UserService(store);
  const access = new AccessService(store);
  const smtp = deps.config.notify.smtp;
  notifyWorker = new NotifyWorker(
    store,
    stores.presence,
    deps.config.notify,
    smtp ? new Mailer(smtp.url, smtp.from, deps.config.notify.pushTimeoutMs) : null,
    deps.log,
    deps.counters,
  );
  const devices = new DeviceService(store, deps.config.notify);
  const preferences = new PreferenceService(store, access);
  const activity = new ActivityFeed(store, deps.bus, publisher, mapper, deps.log, deps.counters, {
    enabled: deps.config.activityFeed,
    coalesceMs: deps.config.activityCoalesceMs,
  });
  if (deps.config.activityFeed) publisher.watch((e) => activity.observe(e));
  const storage = await createStorage(deps.config.files);
  const fileWorker = new FileWorker(store, storage, deps.config.files, deps.log);
  const wakeFiles = () => fileWorker.wake();
  const files = new FileService(store, access, storage, deps.config.files, limits, wakeFiles);
  const meetings = createMeetingServices(
    { log: deps.log, limits, tokenTtlSeconds: deps.config.video.tokenTtlSeconds, counters: deps.counters, removals: deps.config.video.removals },
    store,
    access,
    await createVideoProvider(deps.config.video),
  );
  const rooms = createRoomServices(
    { log: deps.log, limits, publisher, activity, wakeFiles, reads, meetings: meetings.lifecycle, removals: meetings.removals },
    access,
    store,
    mapper,
    keyring,
  );
  const messages = createMessageServices({ store, access, inbox, mapper, keyring, limits, counters: deps.counters, observers: deps.observers, files, wakeFiles, reads });
  const streams = new StreamService(access, roomEvents, hubs);
  const receipts = new ReceiptService(limits, store, publisher, access);
  const typing = new TypingService(access, publisher, limits, {
    ttlMs: deps.config.typingTtlMs,
    throttleMs: deps.config.typingThrottleMs,
  });
  const presence = new PresenceService(deps.log, limits, stores.presence, publisher, store, presenceTtl(deps.config), deps.config.presenceRoomMaxMembers);
  const sessions = new SessionService(
    deps.bus,
    deps.log,
    deps.counters,
    { redisPrefix: deps.config.redisPrefix, subscriptionsPerConnection: deps.config.limits.subscriptionsPerConnection },
    stores.sessions,
    store,
  );
  const { auth: authConfig, devLogin, devLoginRoles, accessTokenTtlSeconds } = deps.config;
  const auth = new AuthService(
    new TokenVerifier(authConfig),
    authConfig.jwtSecret === null ? null : new TokenSigner(authConfig.jwtSecret, authConfig),
    sessions,
    users,
    deps.counters,
    { devLogin, devLoginRoles, accessTokenTtlSeconds, keySetPerTenant: authConfig.jwks?.perTenant === true },
  );
  const compliance = new ComplianceService(store, mapper, inbox, deps.log, wakeFiles);
  const signals = new SignalService(limits, store, access, publisher, deps.config.rtc);
  const retention = new RetentionService(store, deps.log, {
    intervalMs: deps.config.retentionIntervalMs,
    batch: deps.config.retentionBatch,
    days: deps.config.retentionDays ?? null,
  }, wakeFiles);
  return {
    deps,
    access,
    store,
    publisher,
    roomEvents,
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
    auth,
    meetings,
    signals,
    webhooks,
    webhookWorker,
    devices,
    preferences,
    notifyWorker,
    activity,
    files,
    fileWorker,
    compliance,
    reads,
    async start() {
      await reads.start();
      await sessions.start();
      auth.start(
        () => tenantsWithUsers(store.db(), MAX_KNOWN_TENANTS),
        (err) => deps.log.warn({ err }, 'could not read the tenants with users (their key sets wait for the new-tenant budget)'),
      );
      retention.start();
      webhookWorker.start();
      fileWorker.start();
      notifyWorker.start();
      meetings.removals.start();
    },
    async close() {
      reads.stop();
      await sessions.close();
      // Before anything the run uses closes (the file worker it wakes, then the database).
      await retention.stop();
      await webhookWorker.stop();
      await fileWorker.stop();
      storage.close();
      await notifyWorker.stop();
      await meetings.removals.stop();
      await typing.close();
      await activity.close();
      await presence.close();
      await Promise.all([hubs.close(), inbox.close(), limits.close()]);
    },
  };
}

/** How long a presence entry lives without a heartbeat. */
export function presenceTtl(config: BaseDeps['config']): number {
  return config.presenceTtlMs ?? PRESENCE_TTL_MS;
}
