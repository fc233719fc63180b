/**
 * Recipe: React hooks over the typed client. Type-checked by `npm run typecheck` against
 * `@types/react` (a devDependency; React itself is your app's dependency). Shown in docs/CLIENT.md.
 *
 *   const chat = useMemo(() => createChatClient({ url, getToken }), [url]);
 *   const room = useRoomEvents(chat, roomId, { onEvent: (e) => e.type === 'message.new' && ping() });
 *   room.messages.map(...); room.typing; room.connection.state;
 */
import { createElement, useEffect, useRef, useState, useSyncExternalStore, type ReactElement } from 'react';
import type { ChatClient, ConnectionState, OpenRoom, RoomEvent, RoomSnapshot } from '../index.js';

const EMPTY: RoomSnapshot = {
  messages: [],
  lastSeq: -1,
  typing: [],
  presence: new Map(),
  readUpTo: new Map(),
  name: null,
  topic: null,
};

/** The WebSocket's state, for a "reconnecting…" banner. */
export function useConnectionState(chat: ChatClient): ConnectionState {
  return useSyncExternalStore(
    (onChange) => chat.onStateChange(onChange),
    () => stableState(chat),
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
  chat: ChatClient,
  roomId: string | null,
  opts: { historyLimit?: number; onEvent?: (event: RoomEvent) => void } = {},
): UseRoomEvents {
  const [room, setRoom] = useState<OpenRoom | null>(null);
  const [ready, setReady] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  const onEvent = useRef(opts.onEvent);
  onEvent.current = opts.onEvent;

  useEffect(() => {
    if (!roomId) return;
    setReady(false);
    setError(null);
    const r = chat.openRoom(roomId, {
      historyLimit: opts.historyLimit ?? 50,
      onChange: (event, fresh) => {
        if (event && fresh) onEvent.current?.(event);
      },
      onError: setError,
    });
    setRoom(r);
    r.loaded.then(() => setReady(true), setError);
    return () => r.close();
  }, [chat, roomId, opts.historyLimit]);

  const snapshot = useSyncExternalStore(
    (onChange) => room?.timeline.subscribe(onChange) ?? (() => undefined),
    () => room?.timeline.getSnapshot() ?? EMPTY,
  );
  const connection = useConnectionState(chat);
  return { ...snapshot, ready, error, connection, loadOlder: () => room?.loadOlder() ?? Promise.resolve(false) };
}

/** A component using the hook (createElement instead of JSX so that this file stays plain .ts). */
export function RoomPane(props: { chat: ChatClient; roomId: string; me: string }): ReactElement {
  const room = useRoomEvents(props.chat, props.roomId, {
    onEvent: (event) => {
      switch (event.type) {
        case 'message.new':
          if (event.message.mentions.includes(props.me)) document_title(`${event.message.senderId} mentioned you`);
          break;
        case 'member.left':
          if (event.userId === props.me) document_title(`you were ${event.reason === 'left' ? 'removed' : event.reason}`);
          break;
        default:
          break;
      }
    },
  });
  const h = createElement;
  return h(
    'section',
    null,
    room.connection.state !== 'open' && h('p', { className: 'banner' }, room.connection.state === 'connecting' ? 'Reconnecting…' : 'Offline'),
    room.error && h('p', { className: 'error' }, room.error.message),
    h('button', { onClick: () => void room.loadOlder() }, 'Load older'),
    h(
      'ol',
      null,
      room.messages.map((m) =>
        h(
          'li',
          { key: m.id, className: m.kind },
          h('b', null, m.senderId),
          ' ',
          m.body ?? h('i', null, 'deleted'),
          m.reactions.map((r) => h('span', { key: r.emoji, className: r.me ? 'mine' : undefined }, ` ${r.emoji} ${r.count}`)),
        ),
      ),
    ),
    room.typing.length > 0 && h('p', { className: 'typing' }, `${room.typing.join(', ')} typing…`),
  );
}

/** Stands in for `document.title = ...` (this repo type-checks without the DOM lib). */
function document_title(text: string): void {
  void text;
}
