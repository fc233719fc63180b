/**
 * Typed client for the chat server. Imports only the AppRouter *type* from the server.
 *
 *   const chat = createChatClient({ url: 'http://127.0.0.1:3000', getToken });
 *   const room = await chat.trpc.room.create.mutate({ kind: 'group', name: 'ops' });
 *   chat.subscribeRoom(room.id, { onEvent: (event) => { switch (event.type) { ... } } });
 *   chat.onStateChange(({ state, error }) => ...);
 *
 * docs/CLIENT.md has the recipes (plain TypeScript and a React hook).
 */
import { createTRPCClient, createWSClient, httpBatchLink, splitLink, wsLink, type TRPCClient, type TRPCLink } from '@trpc/client';
import superjson from 'superjson';
import { isTransient, retryAfterMs } from './errors.js';
import { FileTransferError, putWithProgress, toBlob, type UploadBody, type UploadedFile, type UploadFileOptions } from './files.js';
import { RoomTimeline } from './room-timeline.js';
import {
  isDurableEvent,
  isInboxItem,
  type AppRouter,
  type DirectoryRoom,
  type FileInfo,
  type InboxEvent,
  type Member,
  type Message,
  type RoomEvent,
  type RoomListItem,
  type RouterOutputs,
} from './types.js';

export * from './types.js';
export { errorCode, isTransient, retryAfterMs, systemErrorCode, type ErrorCode } from './errors.js';
export { RoomTimeline, TYPING_TTL_MS, type RoomSnapshot } from './room-timeline.js';
export { FileTransferError, type UploadBody, type UploadedFile, type UploadFileOptions, type UploadProgress } from './files.js';

export interface ChatClientOptions {
  /** Server base URL, e.g. http://127.0.0.1:3000 (tRPC is served at /trpc, HTTP and WebSocket). */
  url: string;
  /** A fixed access token (replaced by `refresh(token)`)... */
  token?: string;
  /**
   * ...or a function called on every (re)connect and HTTP request to get a current one (cache it
   * and refresh it before it expires; a socket whose token expires is closed with 4001 and
   * reconnects with what this returns next; `refresh(token)` carries an open socket over instead).
   */
  getToken?: () => string | Promise<string>;
  /** Send queries and mutations over the WebSocket too (default: HTTP batching). */
  allOverWebSocket?: boolean;
  /**
   * Open the WebSocket only while a subscription (or, with `allOverWebSocket`, a call) needs it,
   * and close it when idle. Default false: connect right away and stay connected.
   */
  lazy?: boolean;
  /** WebSocket implementation (Node < 22 or custom); defaults to the global one. */
  WebSocket?: typeof WebSocket;
  /** Reconnect delay for attempt n (jittered exponential backoff with a floor by default). */
  retryDelayMs?: (attempt: number) => number;
  onOpen?: () => void;
  onClose?: (cause?: { code?: number }) => void;
  /**
   * Links run before the transport, for every call and every subscription event (logging,
   * tracing, rewriting results). They see deserialized values (Dates are Dates).
   */
  links?: TRPCLink<AppRouter>[];
  /**
   * What this client says about itself on its WebSocket (connection parameters, shown in the
   * server's /admin/stats): `clientType` (`web`, `cli`, ...: letters, digits, `._-`, at most 32),
   * `clientVersion` (at most 32) and a stable `deviceId` (at most 64). Values of another shape are ignored.
   */
  client?: { clientType?: string; clientVersion?: string; deviceId?: string };
}

/** Floor and cap of the default reconnect backoff. */
/** Calls the client puts in one HTTP batch (the server's default `MAX_BATCH_SIZE`). */
export const MAX_BATCH_ITEMS = 50;

export const BACKOFF_FLOOR_MS = 250;
export const BACKOFF_CAP_MS = 10_000;

/** Jittered exponential backoff: 250 ms floor, 10 s cap, never a tight loop. */
export function backoff(attempt: number): number {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_FLOOR_MS * 2 ** Math.min(Math.max(0, attempt), 6));
  return Math.max(BACKOFF_FLOOR_MS, Math.round(base / 2 + Math.random() * (base / 2)));
}

/**
 * The WebSocket's state: `connecting` (first connect or reconnecting after a loss, with the
 * error that caused it), `open`, or `closed` (not connected: closed by you, or lazy and idle).
 */
export interface ConnectionState {
  state: 'connecting' | 'open' | 'closed';
  /** Why the last connection was lost or the last attempt failed (null once open). */
  error: Error | null;
  /** The close code of the last socket that closed (e.g. 4001 token expired, 1001 server restart). */
  closeCode: number | null;
}

export interface SubscriptionHandlers<E> {
  /** Every event, in order, each durable one once (re-deliveries after a resume are dropped). */
  onEvent(event: E, id: string | undefined): void;
  /** A final error: the subscription is over (UNAUTHORIZED, NOT_FOUND, FORBIDDEN, BAD_REQUEST...). */
  onError?(error: Error): void;
  /** A transient failure: the subscription is retried from its last event after a backoff. */
  onRetry?(error: Error | null, delayMs: number): void;
}

export interface ResumableSubscription {
  /** The id of the last event delivered (resume point). */
  readonly lastEventId: string | null;
  unsubscribe(): void;
}

export interface OpenRoomOptions {
  /** Messages of scrollback to load before going live (default 50, at most 100). */
  historyLimit?: number;
  /** Called after every change of the timeline with the event (or null after history pages). */
  onChange?(event: RoomEvent | null, fresh: boolean): void;
  onError?(error: Error): void;
}

export interface OpenRoom {
  readonly roomId: string;
  readonly timeline: RoomTimeline;
  /** Resolves once the scrollback is loaded and the live subscription is started. */
  readonly loaded: Promise<void>;
  /**
   * Loads the previous page of history; resolves to false when there is none. A call while the same
   * page is on its way answers with that page (one request).
   */
  loadOlder(limit?: number): Promise<boolean>;
  close(): void;
}

export interface ChatClient {
  trpc: TRPCClient<AppRouter>;
  ws: ReturnType<typeof createWSClient>;
  /** The WebSocket's current state. */
  readonly state: ConnectionState;
  /** Calls `listener` with the current state now and with every change. Returns the unsubscribe function. */
  onStateChange(listener: (state: ConnectionState) => void): () => void;
  /**
   * `chat.events` that survives everything: wsLink resumes it with the last event id after a
   * reconnect; this also resumes it after a transient server error or an unexpected end, drops
   * durable events it has already delivered, and ends only on a final error or `unsubscribe()`.
   */
  subscribeRoom(roomId: string, handlers: SubscriptionHandlers<RoomEvent>, opts?: { lastEventId?: string | null }): ResumableSubscription;
  /** `inbox.events`, resumed the same way. */
  subscribeInbox(handlers: SubscriptionHandlers<InboxEvent>, opts?: { lastEventId?: string | null }): ResumableSubscription;
  /**
   * A room view: loads the newest page of history, then subscribes from its last seq (no gap, no
   * duplicate) and keeps a `RoomTimeline` current.
   */
  openRoom(roomId: string, opts?: OpenRoomOptions): OpenRoom;
  /**
   * Uploads a file into a room (`file.createUpload`, then one HTTP PUT with progress) and answers
   * its descriptor, to pass in `chat.send({ attachments: [file] })`, which checks and attaches it.
   */
  uploadFile(roomId: string, data: UploadBody, opts?: UploadFileOptions): Promise<UploadedFile>;
  /**
   * A file's metadata (`file.get`, members of its room only) and the download's response (its
   * body not read yet: stream it, or `await response.arrayBuffer()`).
   */
  downloadFile(fileId: string, opts?: { signal?: AbortSignal; range?: string }): Promise<{ file: FileInfo; response: Response }>;
  /** An absolute URL for a file URL of the server (the local driver's are relative to it). */
  resolveUrl(url: string): string;
  /**
   * Hands the client a renewed access token (same user and tenant) before the current one expires.
   * With a socket open (or opening), `auth.refresh` goes over it: the socket takes the new token and
   * is not closed with 4001 at the old one's expiry, its subscriptions go on (`connection: true`).
   * With none, the server only checks the token (`connection: false`). Later connects and HTTP
   * calls use it in place of `token`; with `getToken`, that function stays the source, so have it
   * answer the new token too. A refused token fails as `auth.refresh` does (`UNAUTHORIZED`,
   * `FORBIDDEN` for another user's) and is not kept.
   */
  refresh(token: string): Promise<RouterOutputs['auth']['refresh']>;
  close(): Promise<void>;
}

type WsState = ReturnType<ReturnType<typeof createWSClient>['connectionState']['get']>;

function mapState(s: WsState, closeCode: number | null): ConnectionState {
  const state = s.state === 'pending' ? 'open' : s.state === 'connecting' ? 'connecting' : 'closed';
  return { state, error: s.error ?? null, closeCode: state === 'open' ? null : closeCode };
}

/** A connection that closed within this long after opening counts as a flap (see `flaps`). */
const FLAP_WINDOW_MS = 5_000;

export function createChatClient(opts: ChatClientOptions): ChatClient {
  const base = opts.url.replace(/\/+$/, '');
  let token = opts.token;
  const tokenOf = async () => (opts.getToken ? await opts.getToken() : token);
  const delay = opts.retryDelayMs ?? backoff;
  // The wsClient restarts its attempt counter whenever a socket opens; a server that accepts and
  // then closes right away (too many connections, draining) would be retried at the floor
  // forever. Consecutive short-lived connections push the backoff further instead.
  let flaps = 0;
  let openedAt = 0;
  let closeCode: number | null = null;
  const ws = createWSClient({
    url: `${base.replace(/^http/, 'ws')}/trpc`,
    connectionParams: async () => {
      const token = await tokenOf();
      const info: Record<string, string> = {};
      for (const [k, v] of Object.entries(opts.client ?? {})) if (typeof v === 'string') info[k] = v;
      return token ? { ...info, token } : info;
    },
    retryDelayMs: (attempt) => delay(attempt + flaps),
    ...(opts.WebSocket ? { WebSocket: opts.WebSocket } : {}),
    ...(opts.lazy ? { lazy: { enabled: true, closeMs: 1_000 } } : {}),
    onOpen: () => {
      openedAt = Date.now();
      opts.onOpen?.();
    },
    onClose: (cause) => {
      closeCode = cause?.code ?? null;
      if (openedAt && Date.now() - openedAt < FLAP_WINDOW_MS) flaps = Math.min(flaps + 1, 6);
      else flaps = 0;
      openedAt = 0;
      opts.onClose?.(cause);
    },
  });
  const wsl = wsLink<AppRouter>({ client: ws, transformer: superjson });
  const trpc = createTRPCClient<AppRouter>({
    links: [
      ...(opts.links ?? []),
      opts.allOverWebSocket
        ? wsl
        : splitLink({
            // auth.refresh swaps the token of the connection that carries it: over HTTP it would
            // only check the token, and the socket would still be closed at the old expiry.
            condition: (op) => op.type === 'subscription' || (op.path === 'auth.refresh' && ws.connectionState.get().state !== 'idle'),
            true: wsl,
            false: httpBatchLink({
              url: `${base}/trpc`,
              transformer: superjson,
              // The server's MAX_BATCH_SIZE default: a longer batch would be refused whole.
              maxItems: MAX_BATCH_ITEMS,
              headers: async () => {
                const token = await tokenOf();
                return token ? { authorization: `Bearer ${token}` } : {};
              },
            }),
          }),
    ],
  });

  /** Resumable subscriptions still running; `close()` ends them first so none resubscribes. */
  const live = new Set<ResumableSubscription>();
  let closed = false;
  const resumable = <E extends { type: string }>(
    start: (lastEventId: string | null, cb: { onData: (d: { id?: string; data: E } | E) => void; onError: (e: Error) => void; onComplete: () => void }) => {
      unsubscribe(): void;
    },
    handlers: SubscriptionHandlers<E>,
    initial: string | null,
    /** Whether an event carries the stream's seq (room events but typing, presence, receipts; inbox items). */
    isDurable: (event: E) => boolean,
  ): ResumableSubscription => {
    if (closed) throw new Error('this chat client is closed');
    let lastEventId = initial;
    let lastSeq = initial !== null && /^\d+$/.test(initial) ? Number(initial) : -1;
    let current: { unsubscribe(): void } | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let stopped = false;
    let failures = 0;
    const retry = (err: Error | null) => {
      current?.unsubscribe();
      current = null;
      if (stopped) return;
      const wait = Math.max(delay(failures++), (err && retryAfterMs(err)) ?? 0);
      handlers.onRetry?.(err, wait);
      timer = setTimeout(() => {
        timer = null;
        run();
      }, wait);
    };
    const run = () => {
      if (stopped) return;
      current = start(lastEventId, {
        onData: (item) => {
          const envelope = item as { id?: string; data: E };
          const event = (envelope && typeof envelope === 'object' && 'data' in envelope ? envelope.data : item) as E;
          const id = envelope.id;
          failures = 0;
          const seq = (event as { seq?: unknown }).seq;
          // Durable events carry the stream's seq (room or inbox); one already delivered is dropped.
          if (typeof seq === 'number' && event.type !== 'ready' && isDurable(event)) {
            if (seq <= lastSeq) return;
            lastSeq = seq;
          } else if (event.type === 'ready' && typeof seq === 'number') {
            lastSeq = Math.max(lastSeq, seq);
          } else if (event.type === 'reset' && typeof seq === 'number') {
            // The stream starts over at the server's position, which may be below ours.
            lastSeq = seq;
          }
          if (id !== undefined) lastEventId = id;
          handlers.onEvent(event, id);
        },
        onError: (err) => {
          if (stopped) return;
          if (isTransient(err)) retry(err);
          else {
            // Over: the client lets go of it (and of the handlers) without an unsubscribe().
            stopped = true;
            current = null;
            live.delete(handle);
            handlers.onError?.(err);
          }
        },
        // The server ended the stream (e.g. it is shutting down, or we lost access): resubscribe
        // from the last event; a lost access comes back as a final error.
        onComplete: () => {
          if (!stopped) retry(null);
        },
      });
    };
    const handle: ResumableSubscription = {
      get lastEventId() {
        return lastEventId;
      },
      unsubscribe() {
        stopped = true;
        live.delete(handle);
        if (timer) clearTimeout(timer);
        current?.unsubscribe();
        current = null;
      },
    };
    live.add(handle);
    run();
    return handle;
  };

  const client: ChatClient = {
    trpc,
    ws,
    get state() {
      return mapState(ws.connectionState.get(), closeCode);
    },
    onStateChange(listener) {
      let last: ConnectionState | null = null;
      const sub = ws.connectionState.subscribe({
        next: (s) => {
          const next = mapState(s, closeCode);
          if (last && last.state === next.state && last.error === next.error) return;
          last = next;
          listener(next);
        },
      });
      return () => sub.unsubscribe();
    },
    subscribeRoom(roomId, handlers, o = {}) {
      return resumable<RoomEvent>(
        (lastEventId, cb) => trpc.chat.events.subscribe({ roomId, lastEventId }, cb),
        handlers,
        o.lastEventId ?? null,
        isDurableEvent,
      );
    },
    subscribeInbox(handlers, o = {}) {
      return resumable<InboxEvent>(
        (lastEventId, cb) => trpc.inbox.events.subscribe({ lastEventId }, cb),
        handlers,
        o.lastEventId ?? null,
        isInboxItem,
      );
    },
    openRoom(roomId, o = {}) {
      const timeline = new RoomTimeline(null);
      let sub: ResumableSubscription | null = null;
      let viewClosed = false;
      /**
       * Counts the `reset`s: a page asked for before the latest one (an older page, a reload) is
       * stale (the timeline was emptied and reloaded since) and is dropped when it comes.
       */
      let generation = 0;
      const current = (asked: number) => !viewClosed && asked === generation;
      let hasMore = true;
      /** The older page on its way: asked for below `before` in `generation`. */
      let older: { before: number; generation: number; page: Promise<boolean> } | null = null;
      let reloadTimer: ReturnType<typeof setTimeout> | null = null;
      /** The newest page after a `reset` (which emptied the timeline): retried like a subscription until it comes or fails for good. */
      const reload = (attempt: number) => {
        if (reloadTimer) clearTimeout(reloadTimer);
        reloadTimer = null;
        const asked = generation;
        trpc.chat.history.query({ roomId, limit: Math.min(100, o.historyLimit ?? 50) }).then(
          (page) => {
            if (!current(asked)) return;
            timeline.load(page.messages);
            hasMore = page.hasMore;
            o.onChange?.(null, true);
          },
          (err: unknown) => {
            if (!current(asked)) return;
            const error = err instanceof Error ? err : new Error(String(err));
            if (!isTransient(error)) return o.onError?.(error);
            reloadTimer = setTimeout(() => reload(attempt + 1), Math.max(delay(attempt), retryAfterMs(error) ?? 0));
          },
        );
      };
      const loaded = (async () => {
        // Nothing is asked of the server for a view of a closed client.
        if (closed) throw new Error('this chat client is closed');
        // The room's seq is read before the history: every event up to it is reflected in the
        // history (edits, reactions, deletions are part of the messages), so the subscription
        // starts there and nothing is shown twice.
        const [me, room] = await Promise.all([trpc.auth.me.query(), trpc.room.get.query({ roomId })]);
        const page = await trpc.chat.history.query({ roomId, limit: Math.min(100, o.historyLimit ?? 50) });
        // A view closed meanwhile shows nothing more.
        if (viewClosed) return;
        timeline.selfId = me.id;
        timeline.load(page.messages);
        // The starting point is set here (a page never moves it): the page's newest message may be
        // newer than the room's seq read before it (sent meanwhile), and every event up to that
        // message committed before the page was read, so this page and any read later show it.
        timeline.lastSeq = Math.max(room.lastSeq, page.messages.at(-1)?.seq ?? -1);
        hasMore = page.hasMore;
        o.onChange?.(null, true);
        if (viewClosed) return;
        sub = client.subscribeRoom(
          roomId,
          {
            onEvent: (event) => {
              // The server could not continue exactly (retention, a restored database): pages asked
              // for until now are stale, and the newest page is loaded again.
              if (event.type === 'reset') generation++;
              o.onChange?.(event, timeline.apply(event));
              if (event.type === 'reset') reload(0);
            },
            onError: (err) => o.onError?.(err),
          },
          { lastEventId: String(timeline.lastSeq) },
        );
      })();
      loaded.catch((err: unknown) => o.onError?.(err instanceof Error ? err : new Error(String(err))));
      return {
        roomId,
        timeline,
        loaded,
        loadOlder(limit = 50) {
          const oldest = timeline.oldestSeq();
          if (closed || viewClosed || !hasMore || oldest === null) return Promise.resolve(false);
          // A scroll handler that fires again while the page is on its way gets the same page, not a second request.
          if (older?.before === oldest && older.generation === generation) return older.page;
          const asked = generation;
          const page = trpc.chat.history.query({ roomId, beforeSeq: oldest, limit: Math.min(100, limit) }).then((p) => {
            // Asked for before a `reset` (the timeline was emptied and reloaded since: this page
            // would leave a gap above it) or answered after close(): dropped.
            if (!current(asked)) return false;
            timeline.load(p.messages);
            hasMore = p.hasMore;
            o.onChange?.(null, p.messages.length > 0);
            return p.messages.length > 0;
          });
          const entry = { before: oldest, generation: asked, page };
          older = entry;
          const done = () => {
            if (older === entry) older = null;
          };
          page.then(done, done);
          return page;
        },
        close() {
          viewClosed = true;
          if (reloadTimer) clearTimeout(reloadTimer);
          sub?.unsubscribe();
        },
      };
    },
    async uploadFile(roomId, data, o = {}) {
      const named = typeof File !== 'undefined' && data instanceof File ? data.name : undefined;
      const blob = toBlob(data, o.mime ?? 'application/octet-stream');
      const name = o.name ?? named ?? 'file';
      const mime = o.mime ?? (blob.type || 'application/octet-stream');
      const ticket = await trpc.file.createUpload.mutate({ roomId, name, size: blob.size, mime });
      await putWithProgress(client.resolveUrl(ticket.uploadUrl), ticket.headers, blob, o);
      return { fileId: ticket.fileId, name, size: blob.size, mime };
    },
    async downloadFile(fileId, o = {}) {
      const file = await trpc.file.get.query({ fileId });
      const response = await fetch(client.resolveUrl(file.url), {
        ...(o.signal ? { signal: o.signal } : {}),
        ...(o.range ? { headers: { range: o.range } } : {}),
      });
      if (!response.ok) throw new FileTransferError(response.status, `download refused (HTTP ${response.status})`);
      return { file, response };
    },
    resolveUrl(url) {
      return new URL(url, `${base}/`).toString();
    },
    async refresh(next) {
      const before = token;
      // Set first: a socket that reconnects meanwhile, and an HTTP call made while no socket is
      // open, must already carry the new token (the old one may have expired).
      token = next;
      try {
        return await trpc.auth.refresh.mutate({ token: next });
      } catch (err) {
        if (!isTransient(err) && token === next) token = before;
        throw err;
      }
    },
    async close() {
      closed = true;
      for (const sub of [...live]) sub.unsubscribe();
      await ws.close();
    },
  };
  return client;
}


/** A new message id for `chat.send` (idempotent sends: retry with the same one). */
export function newClientId(): string {
  const c = globalThis.crypto;
  // randomUUID exists only in secure contexts (https, localhost) in browsers: build a v4 UUID otherwise.
  if (typeof c.randomUUID === 'function') return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** What `historyAround` answers: the messages around a seq, ascending, and whether there are more on either side. */
export interface HistoryAround {
  messages: Message[];
  /** There are older messages than the first one answered. */
  hasOlder: boolean;
  /** There are newer messages than the last one answered. */
  hasNewer: boolean;
}

/**
 * The messages around `seq` (a search hit, a link to a message): the message at `seq` (when it is
 * a message), up to `older` messages before it and up to `newer` after it, ascending, from two
 * `chat.history` pages (`beforeSeq: seq + 1` and `afterSeq: seq`) read at once. Feed them to a
 * `RoomTimeline` with `load`; the page between them and the newest page is not loaded (page it with
 * `afterSeq`).
 */
export async function historyAround(
  chat: Pick<ChatClient, 'trpc'>,
  roomId: string,
  seq: number,
  opts: { older?: number; newer?: number } = {},
): Promise<HistoryAround> {
  const older = Math.min(99, Math.max(0, opts.older ?? 20));
  const newer = Math.min(100, Math.max(1, opts.newer ?? 20));
  const [before, after] = await Promise.all([
    chat.trpc.chat.history.query({ roomId, beforeSeq: seq + 1, limit: older + 1 }),
    chat.trpc.chat.history.query({ roomId, afterSeq: seq, limit: newer }),
  ]);
  return { messages: [...before.messages, ...after.messages], hasOlder: before.hasMore, hasNewer: after.hasMore };
}

/** The most members (and bans) one `room.members` (`room.bans`) page holds: the server's limit and default. */
export const MEMBERS_PAGE_SIZE = 1000;

/**
 * Every member of a room, by user id: `room.members` read a page at a time (`after`: the last user
 * id of the page before) until a page comes back shorter than `pageSize` (1-1000, default 1000:
 * a room of up to 1,000 members is one call). Members who join or leave while the pages are read
 * may or may not be in the answer; nobody is in it twice.
 */
export async function allMembers(chat: Pick<ChatClient, 'trpc'>, roomId: string, opts: { pageSize?: number } = {}): Promise<Member[]> {
  const limit = Math.min(MEMBERS_PAGE_SIZE, Math.max(1, Math.floor(opts.pageSize ?? MEMBERS_PAGE_SIZE)));
  const out: Member[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await chat.trpc.room.members.query({ roomId, after, limit });
    out.push(...page);
    if (page.length < limit) return out;
    after = page[page.length - 1]!.userId;
  }
}

/** The most rooms one `room.directory` page holds: the server's limit. */
export const DIRECTORY_PAGE_SIZE = 100;

/**
 * Every public room of the tenant's directory (matching `query`, when given), by name then id:
 * `room.directory` read a page at a time (`after`: the name and id of the last room of the page
 * before) until a page comes back shorter than `pageSize` (1-100, default 100). A room made
 * public, private or archived while the pages are read may or may not be in the answer; none is
 * in it twice.
 */
export async function allDirectory(chat: Pick<ChatClient, 'trpc'>, opts: { query?: string; pageSize?: number } = {}): Promise<DirectoryRoom[]> {
  const limit = Math.min(DIRECTORY_PAGE_SIZE, Math.max(1, Math.floor(opts.pageSize ?? DIRECTORY_PAGE_SIZE)));
  const out: DirectoryRoom[] = [];
  let after: { name: string; roomId: string } | undefined;
  for (;;) {
    const page = await chat.trpc.room.directory.query({ ...(opts.query !== undefined ? { query: opts.query } : {}), after, limit });
    out.push(...page);
    if (page.length < limit) return out;
    const last = page[page.length - 1]!;
    after = { name: last.name, roomId: last.id };
  }
}

/**
 * Where the server stops counting unread messages and mentions (`receipt.unread`, `room.list`'s
 * `unreadCount`, `unread.changed`, `room.activity`): a count of this many means this many or more.
 */
export const UNREAD_CAP = 1000;

/** An unread count for people: `"1000+"` at the cap, the number below it. */
export function unreadLabel(count: number): string {
  return count >= UNREAD_CAP ? `${UNREAD_CAP}+` : String(count);
}

/** The most rooms one `room.list` page holds: the server's limit and default. */
export const ROOMS_PAGE_SIZE = 500;

/** Where `room.list`'s next page starts (its `before`): after this room, by its activity (`lastMessage.createdAt ?? createdAt`) and id. */
export interface RoomListCursor {
  activityAt: Date;
  roomId: string;
}

/** The `before` of the page after the one that ends with `room` (a `room.list` item, or one kept with a message preview). */
export function roomListCursor(room: { id: string; createdAt: Date; lastMessage: { createdAt: Date } | null }): RoomListCursor {
  return { activityAt: room.lastMessage?.createdAt ?? room.createdAt, roomId: room.id };
}

/**
 * Every room of my list (with `archived: true` the archived ones only), most recently active
 * first: `room.list` read a page at a time (`before`: `roomListCursor` of the last room of the
 * page before) until a page comes back shorter than `pageSize` (1-500, default 500: up to 500
 * rooms are one call). A room that becomes active, or is created, while the pages are read sorts
 * before the pages still to come and is not in the answer unless it was on a page read already
 * (its `room.activity` and `room.changed` events bring it); no room is in it twice.
 */
export async function allRooms(chat: Pick<ChatClient, 'trpc'>, opts: { archived?: boolean; pageSize?: number } = {}): Promise<RoomListItem[]> {
  const limit = Math.min(ROOMS_PAGE_SIZE, Math.max(1, Math.floor(opts.pageSize ?? ROOMS_PAGE_SIZE)));
  const out: RoomListItem[] = [];
  const seen = new Set<string>();
  let before: RoomListCursor | undefined;
  for (;;) {
    const page = await chat.trpc.room.list.query({ ...(opts.archived !== undefined ? { archived: opts.archived } : {}), before, limit });
    for (const room of page) {
      if (!seen.has(room.id)) out.push(room);
      seen.add(room.id);
    }
    if (page.length < limit) return out;
    before = roomListCursor(page[page.length - 1]!);
  }
}
