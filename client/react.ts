/**
 * React hooks over the typed client: the package's `/react` entry (React is a peer dependency of
 * your app; nothing else is added). docs/CLIENT.md shows them in a Vite + React frontend.
 *
 *   const chat = useChatClient({ url, getToken });   // null until created; closed on unmount
 *   const room = useRoomEvents(chat, roomId, { onEvent: (e) => e.type === 'message.new' && ping() });
 *   room.messages.map(...); room.typing; room.connection.state;
 */
import { useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { createChatClient, type ChatClient, type ChatClientOptions, type ConnectionState, type OpenRoom, type RoomEvent, type RoomSnapshot } from './index.js';

const EMPTY: RoomSnapshot = {
  messages: [],
  lastSeq: -1,
  typing: [],
  presence: new Map(),
  readUpTo: new Map(),
  name: null,
  topic: null,
};

const CLOSED: ConnectionState = { state: 'closed', error: null, closeCode: null };

/**
 * A client for the component's lifetime: created after mount, closed on unmount or when `url`
 * changes (safe under StrictMode's double effects). `null` on the first render. The options are
 * read when the client is created, but for the token: every connect and HTTP request calls the
 * `getToken` of the latest render, or takes its `token`. A socket already open keeps the token it
 * opened with until it expires (then it is closed with 4001 and reconnects with the latest one);
 * call `chat.refresh(token)` with the renewed token to carry it over instead.
 */
export function useChatClient(options: ChatClientOptions): ChatClient | null {
  const [chat, setChat] = useState<ChatClient | null>(null);
  const latest = useRef(options);
  latest.current = options;
  // biome-ignore lint/correctness/useExhaustiveDependencies: a new client per url only; other options are read at creation
  useEffect(() => {
    const client = createChatClient({
      ...latest.current,
      // A function over the latest render's options: the ones of the render that created the
      // client would reconnect with a token the app has long replaced. '' sends no token.
      getToken: () => {
        const o = latest.current;
        return o.getToken ? o.getToken() : (o.token ?? '');
      },
    });
    setChat(client);
    return () => {
      setChat(null);
      void client.close();
    };
  }, [options.url]);
  return chat;
}

/** The WebSocket's state, for a "reconnecting…" banner (`closed` while there is no client). */
export function useConnectionState(chat: ChatClient | null): ConnectionState {
  return useSyncExternalStore(
    (onChange) => chat?.onStateChange(onChange) ?? (() => undefined),
    () => (chat ? stableState(chat) : CLOSED),
  );
}

// useSyncExternalStore needs the same object until something changed.
const lastStates = new WeakMap<ChatClient, ConnectionState>();
function stableState(chat: ChatClient): ConnectionState {
  const next = chat.state;
  const prev = lastStates.get(chat);
  if (prev && prev.state === next.state && prev.error === next.error && prev.closeCode === next.closeCode) return prev;
  lastStates.set(chat, next);
  return next;
}

export interface UseRoomEvents extends RoomSnapshot {
  /** False until the scrollback is in. */
  ready: boolean;
  /** A final error (no access, room gone); transient ones are retried by the client. */
  error: Error | null;
  connection: ConnectionState;
  loadOlder(): Promise<boolean>;
}

/**
 * A room's messages (scrollback, then live; resumed across reconnects, each event applied once),
 * typing, presence and read receipts. `onEvent` sees every event, narrowed by `event.type`.
 */
export function useRoomEvents(
  chat: ChatClient | null,
  roomId: string | null,
  opts: { historyLimit?: number; onEvent?: (event: RoomEvent) => void } = {},
): UseRoomEvents {
  // The open room with its client: a render for another client or room id (before the effect
  // below has opened that one) shows nothing of it, neither messages nor ready nor error.
  const [view, setView] = useState<{ chat: ChatClient; room: OpenRoom; ready: boolean; error: Error | null } | null>(null);
  const shown = view && view.chat === chat && view.room.roomId === roomId ? view : null;
  const room = shown?.room ?? null;
  const onEvent = useRef(opts.onEvent);
  onEvent.current = opts.onEvent;

  useEffect(() => {
    if (!chat || !roomId) return;
    // A room the view has left may still answer (its load, an error): that is not the room shown now.
    let live = true;
    const update = (change: { ready: true } | { error: Error }) => {
      if (live) setView((v) => (v?.room === r ? { ...v, ...change } : v));
    };
    const fail = (error: Error) => update({ error });
    const r = chat.openRoom(roomId, {
      historyLimit: opts.historyLimit ?? 50,
      onChange: (event, fresh) => {
        if (live && event && fresh) onEvent.current?.(event);
      },
      onError: fail,
    });
    setView({ chat, room: r, ready: false, error: null });
    r.loaded.then(() => update({ ready: true }), fail);
    return () => {
      live = false;
      r.close();
      setView(null);
    };
  }, [chat, roomId, opts.historyLimit]);

  // A typing indicator whose stop is lost (the other client went away) runs out after its TTL:
  // drop it then, as the CLI and the web page do.
  useEffect(() => {
    if (!room) return;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let due: number | null = null;
    const step = () => {
      // expireTyping notifies subscribers when it drops one, which runs this again first: the
      // inner run arms the timer and this one finds it armed for the same time.
      const next = room.timeline.expireTyping();
      if (next === due) return;
      if (timer) clearTimeout(timer);
      due = next;
      timer =
        next === null
          ? null
          : setTimeout(() => {
              timer = null;
              due = null;
              step();
            }, Math.max(0, next - Date.now()));
    };
    const off = room.timeline.subscribe(step);
    step();
    return () => {
      off();
      if (timer) clearTimeout(timer);
    };
  }, [room]);

  const snapshot = useSyncExternalStore(
    (onChange) => room?.timeline.subscribe(onChange) ?? (() => undefined),
    () => room?.timeline.getSnapshot() ?? EMPTY,
  );
  const connection = useConnectionState(chat);
  // One function for the component's lifetime (safe in dependency lists), loading the room shown now.
  const shownRoom = useRef(room);
  shownRoom.current = room;
  const loadOlder = useRef(() => shownRoom.current?.loadOlder() ?? Promise.resolve(false)).current;
  return { ...snapshot, ready: shown?.ready ?? false, error: shown?.error ?? null, connection, loadOlder };
}
