/**
 * Recipe: a plain TypeScript frontend (no framework). Type-checked by `npm run typecheck`; shown
 * in docs/CLIENT.md. The page implements `RoomView` with whatever it renders to (DOM, canvas,
 * terminal); everything else is here.
 */
import {
  backoff,
  createChatClient,
  isTransient,
  newClientId,
  type ChatClient,
  type ConnectionState,
  type InboxEvent,
  type Message,
  type RoomEvent,
  type RoomSnapshot,
} from '../index.js';

/** What the page draws. */
export interface RoomView {
  render(snapshot: RoomSnapshot): void;
  connection(state: ConnectionState): void;
  notify(text: string): void;
}

/** Tokens come from your identity provider; here, the dev login of a development server. */
export function tokenSource(url: string, username: string): () => Promise<string> {
  const anon = createChatClient({ url, lazy: true });
  let token: { value: string; expiresAt: Date } | null = null;
  // Called on every (re)connect and HTTP request: cache, and renew a minute before expiry.
  return async () => {
    if (!token || token.expiresAt.getTime() - Date.now() < 60_000) {
      const res = await anon.trpc.auth.devLogin.mutate({ username });
      token = { value: res.token, expiresAt: res.expiresAt };
    }
    return token.value;
  };
}

export function connect(url: string, username: string): ChatClient {
  return createChatClient({ url, getToken: tokenSource(url, username) });
}

/** Opens a room in a view: scrollback, then live; returns the actions the page wires to its UI. */
export function mountRoom(chat: ChatClient, roomId: string, view: RoomView) {
  const offState = chat.onStateChange((s) => view.connection(s));
  const room = chat.openRoom(roomId, {
    historyLimit: 50,
    onChange: (event) => {
      view.render(room.timeline.getSnapshot());
      if (event) describe(event, view);
    },
    onError: (err) => view.notify(`room closed: ${err.message}`),
  });
  let typingSentAt = 0;

  return {
    loaded: room.loaded,
    /** Idempotent send: retried with the same clientId until the server has it. */
    async send(body: string): Promise<Message> {
      const clientId = newClientId();
      for (let attempt = 0; ; attempt++) {
        try {
          return await chat.trpc.chat.send.mutate({ roomId, clientId, body });
        } catch (err) {
          if (!isTransient(err) || attempt >= 5) throw err;
          await new Promise((r) => setTimeout(r, backoff(attempt)));
        }
      }
    },
    /** Call on input events; sends at most one `typing` every 3 s. */
    typing(): void {
      if (Date.now() - typingSentAt < 3_000) return;
      typingSentAt = Date.now();
      void chat.trpc.chat.typing.mutate({ roomId, typing: true }).catch(() => undefined);
    },
    react: (messageId: string, emoji: string) => chat.trpc.chat.react.mutate({ messageId, emoji }),
    markRead: () => chat.trpc.receipt.markRead.mutate({ roomId, seq: room.timeline.lastSeq }),
    loadOlder: () => room.loadOlder(50),
    close(): void {
      offState();
      room.close();
    },
  };
}

/** Full narrowing on `event.type`: each branch sees exactly its own fields. */
function describe(event: RoomEvent, view: RoomView): void {
  switch (event.type) {
    case 'message.new':
      if (event.message.mentions.length > 0) view.notify(`${event.message.senderId} mentioned someone in #${event.seq}`);
      break;
    case 'member.left':
      view.notify(`${event.userId} ${event.reason === 'left' ? 'left' : `was ${event.reason}`}`);
      break;
    case 'room.updated':
      view.notify(`room renamed to ${event.name}`);
      break;
    case 'presence':
      if (event.status === 'offline' && event.lastSeenAt) view.notify(`${event.userId} went offline at ${event.lastSeenAt.toISOString()}`);
      break;
    default:
      break; // messages, reactions, typing and receipts are in the snapshot already
  }
}

/** The user's inbox: mentions, invitations, meeting invites, across rooms. */
export function watchInbox(chat: ChatClient, notify: (text: string) => void) {
  return chat.subscribeInbox({
    onEvent: (event: InboxEvent) => {
      switch (event.type) {
        case 'mention':
          return notify(`${event.from}: ${event.excerpt}`);
        case 'room.added':
          return notify(`${event.by} added you to ${event.roomName}`);
        case 'direct.created':
          return notify(`${event.userId} opened a conversation`);
        case 'meeting.invite':
          return notify(`${event.from} started a meeting${event.title ? `: ${event.title}` : ''}`);
        case 'notification':
          return notify(event.title);
        case 'ready':
        case 'signal':
          return;
      }
    },
    onError: (err) => notify(`inbox closed: ${err.message}`),
  });
}
