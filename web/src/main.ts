/**
 * The browser chat page: plain TypeScript and the DOM, everything through the typed client
 * (no hand-written fetch). Built by Vite into web/dist and served by the server at `/`.
 *
 * This file: session, room list, the room view. Beside it: threads.ts (the thread panel),
 * search.ts, meetings.ts (meeting cards), call.ts (1:1 WebRTC calls), dom.ts (DOM helpers).
 */
import {
  allMembers,
  allRooms,
  createChatClient,
  errorCode,
  historyAround,
  newClientId,
  RoomTimeline,
  type ChatClient,
  type ConnectionState,
  type InboxEventOf,
  type Message,
  type MessagePreview,
  type RoomEvent,
  type RouterOutputs,
  unreadLabel,
} from '../../client/index.js';
import { CallManager } from './call.js';
import { $, avatar, cardEl, dateTimeFmt, debounce, errorText, formatSize, h, isHttps, MAX_FILES, report, timeFmt, toast } from './dom.js';
import { meetingIdOf, RoomMeetings } from './meetings.js';
import { setUpSearch } from './search.js';
import { ThreadPanel } from './threads.js';

/**
 * A room of the list: what `room.list` answers, its newest message kept as a preview (as `room.activity`
 * brings it); `version` is that of the counts shown, from the list or an event (see `applyCounts`).
 */
type RoomItem = Omit<RouterOutputs['room']['list'][number], 'lastMessage'> & { lastMessage: MessagePreview | null };
type Member = RouterOutputs['room']['members'][number];
type FileInfo = RouterOutputs['file']['get'];
interface Session {
  token: string;
  userId: string;
  name: string;
  username: string;
  expiresAt: number;
}
interface Sub {
  unsubscribe(): void;
}

const PAGE = 30;
const QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '😮'];
const TYPING_REFRESH_MS = 2500;
const TYPING_IDLE_MS = 4000;
const SESSION_KEY = 'chat.session';

// ---------------------------------------------------------------------------------------------
// Session and client
// ---------------------------------------------------------------------------------------------

let session: Session | null = loadSession();
let chat: ChatClient | null = null;
let rooms: RoomItem[] = [];
let inboxSub: Sub | null = null;
let view: RoomView | null = null;
let calls: CallManager | null = null;
/** A search hit to show once its room is open. */
let pendingJump: { roomId: string; messageId: string; seq: number; replyToId: string | null } | null = null;

function loadSession(): Session | null {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? 'null') as Session | null;
    return s?.token && s.expiresAt > Date.now() ? s : null;
  } catch {
    return null;
  }
}

/** Dev login through a short-lived anonymous client (devLogin is a public procedure). */
async function devLogin(username: string, name?: string): Promise<Session> {
  // Lazy: the WebSocket is never opened, the one call goes over HTTP.
  const anon = createChatClient({ url: location.origin, lazy: true });
  try {
    const r = await anon.trpc.auth.devLogin.mutate(name ? { username, name } : { username });
    return { token: r.token, userId: r.user.id, name: r.user.name, username, expiresAt: r.expiresAt.getTime() };
  } finally {
    void anon.close();
  }
}

/** Called on every (re)connect and request: a dev token close to expiry is renewed first. */
async function currentToken(): Promise<string> {
  if (!session) throw new Error('not logged in');
  if (session.expiresAt - Date.now() < 60_000) {
    session = { ...(await devLogin(session.username, session.name)) };
    localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }
  return session.token;
}

const me = () => session?.userId ?? '';

function setConn(s: ConnectionState) {
  const el = $('conn');
  el.dataset.state = s.state;
  el.textContent = s.state === 'open' ? 'connected' : s.state === 'closed' ? 'offline' : s.error ? 'reconnecting…' : 'connecting…';
}

async function start() {
  if (!session) return showLogin();
  chat = createChatClient({ url: location.origin, getToken: currentToken });
  chat.onStateChange(setConn);
  // 4003: an admin revoked the user's sessions. The client would reconnect with the same token,
  // which the server now refuses on every call: a page that could neither send nor receive.
  chat.onStateChange((s) => {
    if (s.closeCode === REVOKED) sessionEnded('Your session was ended by an administrator: log in again.');
  });
  try {
    const who = await chat.trpc.auth.me.query();
    session = { ...session, name: who.name };
  } catch (err) {
    if (errorCode(err) === 'UNAUTHORIZED') return logout();
    report(err);
  }
  $('login').hidden = true;
  $('app').hidden = false;
  $('me').textContent = session.name;
  $('me').dataset.userId = session.userId;
  $('me-avatar').replaceWith(Object.assign(avatar(session.userId, session.name), { id: 'me-avatar' }));
  document.title = `Chat — ${session.name}`;

  // One subscription keeps the whole room list live (room.activity, unread.changed, room.changed,
  // new rooms); subscribeInbox/subscribeRoom resume after reconnects and server restarts. The live
  // feed is not replayed: after a reconnect the list is read again.
  let lastState: ConnectionState['state'] | null = null;
  chat.onStateChange((s) => {
    if (s.state === 'open' && lastState !== null && lastState !== 'open') refreshRooms();
    lastState = s.state;
  });
  calls = new CallManager(chat, (userId) => view?.nameOfUser(userId) ?? userId);
  inboxSub = chat.subscribeInbox({
    onEvent: (data) => {
      switch (data.type) {
        case 'room.activity':
          return applyActivity(data);
        case 'unread.changed':
          return applyCounts(data.roomId, data.version, { unreadCount: data.unread, lastReadSeq: data.lastReadSeq });
        case 'room.changed':
          // joined (here or on another device), renamed, archived, unarchived: read the list again.
          return data.change === 'left' || data.change === 'deleted' ? dropRoom(data.roomId) : refreshRooms();
        case 'signal':
          calls?.onSignal(data);
          return;
        case 'meeting.invite':
          toast(`${data.from} started a video meeting${data.title ? ` "${data.title}"` : ''} in ${roomName(data.roomId)}.`);
          return;
        case 'mention':
          toast(`${data.from} mentioned you: ${data.excerpt}`);
          return;
        case 'room.added':
        case 'direct.created':
          return refreshRooms();
        case 'reset':
          // The inbox could not continue from its last item (a restored database): reread what it shows.
          return forgetShown();
        default:
          return;
      }
    },
    onError: (err) => {
      // A final error: a refused token (revoked, say, while the socket was down) is the end of the session.
      if (errorCode(err) === 'UNAUTHORIZED') sessionEnded(`Your session has ended (${errorText(err)}): log in again.`);
      else report(err);
    },
  });
  await loadRooms();
  openFromHash();
  void setUpPush();
}

// ---------------------------------------------------------------------------------------------
// Web push: "Enable notifications" (service worker + PushManager, then device.register)
// ---------------------------------------------------------------------------------------------

/** The VAPID public key (base64url) as the bytes PushManager wants. */
function keyBytes(base64url: string): Uint8Array<ArrayBuffer> {
  const b64 = base64url.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(base64url.length / 4) * 4, '=');
  const raw = atob(b64);
  const out = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** Shows the button when this browser and the server can do web push; a subscription already made is registered again. */
async function setUpPush() {
  const button = $<HTMLButtonElement>('enable-push');
  // `data-push` says what was found: `unsupported` (this browser), `off` (the server sends no pushes) or `ready`.
  if (!chat || !('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) {
    button.dataset.push = 'unsupported';
    return;
  }
  const { publicKey } = await chat.trpc.device.vapidKey.query().catch(() => ({ publicKey: null }));
  if (!publicKey) {
    button.dataset.push = 'off';
    return;
  }
  button.dataset.push = 'ready';
  button.hidden = false;
  const on = () => {
    button.textContent = 'Notifications on';
    button.disabled = true;
  };
  const enable = async () => {
    if ((await Notification.requestPermission()) !== 'granted') {
      toast('Notifications are blocked for this page in the browser settings.');
      return;
    }
    const reg = await navigator.serviceWorker.register('/sw.js');
    await navigator.serviceWorker.ready;
    const sub = (await reg.pushManager.getSubscription()) ?? (await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(publicKey) }));
    const j = sub.toJSON() as { endpoint?: string; keys?: { p256dh?: string; auth?: string } };
    if (!j.endpoint || !j.keys?.p256dh || !j.keys.auth) throw new Error('the browser gave an incomplete push subscription');
    await chat!.trpc.device.register.mutate({ kind: 'webpush', endpoint: j.endpoint, keys: { p256dh: j.keys.p256dh, auth: j.keys.auth }, label: navigator.userAgent.slice(0, 100) });
    on();
  };
  button.onclick = () => void enable().catch(report);
  // Granted before: keep the server's list current without a click.
  if (Notification.permission === 'granted') await enable().catch(report);
}

/**
 * Takes this browser's push registration off the server and unsubscribes it: pushes to a browser
 * logged out would show the user's messages to whoever uses it next. Best effort.
 */
async function forgetPush(client: ChatClient): Promise<void> {
  const reg = 'serviceWorker' in navigator ? await navigator.serviceWorker.getRegistration('/') : undefined;
  const sub = await reg?.pushManager.getSubscription();
  if (!sub) return;
  try {
    const mine = (await client.trpc.device.list.query()).find((d) => d.endpoint === sub.endpoint);
    if (mine) await client.trpc.device.remove.mutate({ id: mine.id });
  } finally {
    // Also when the server refuses the token (a revoked session): an endpoint unsubscribed here
    // answers the push service's 410 and the server drops the device on its next push.
    await sub.unsubscribe();
  }
}

/** The server's close code for revoked sessions (`auth.revoke`). */
const REVOKED = 4003;
let ending = false;

/** The server ended the session: back to the login form, saying why (once, however many signs of it come). */
function sessionEnded(why: string) {
  if (!session || ending) return;
  ending = true;
  void logout().finally(() => {
    ending = false;
    $('login-error').textContent = why;
  });
}

async function logout() {
  if (chat) await forgetPush(chat).catch(() => undefined);
  calls?.dispose();
  calls = null;
  view?.close();
  view = null;
  inboxSub?.unsubscribe();
  await chat?.close();
  chat = null;
  session = null;
  // The next user's first list read starts from nothing (a list read merges with what is shown).
  rooms = [];
  localStorage.removeItem(SESSION_KEY);
  history.replaceState(null, '', location.pathname);
  showLogin();
}

function showLogin() {
  $('app').hidden = true;
  $('login').hidden = false;
  $<HTMLInputElement>('login-username').focus();
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const username = $<HTMLInputElement>('login-username').value.trim();
  const name = $<HTMLInputElement>('login-name').value.trim();
  $('login-error').textContent = '';
  devLogin(username, name || undefined).then(
    (s) => {
      session = s;
      localStorage.setItem(SESSION_KEY, JSON.stringify(s));
      void start();
    },
    (err) => ($('login-error').textContent = errorText(err)),
  );
});
$('logout').addEventListener('click', () => void logout());
$<HTMLSelectElement>('my-status').addEventListener('change', (e) => {
  const status = (e.target as HTMLSelectElement).value as 'online' | 'away' | 'dnd';
  chat?.trpc.presence.set.mutate({ status }).catch(report);
});

// ---------------------------------------------------------------------------------------------
// Room list with unread badges
// ---------------------------------------------------------------------------------------------

function roomLabel(r: { kind: string; name: string }): string {
  // A direct room is named after its pair of user ids: show the other one.
  if (r.kind === 'direct') return r.name.split(', ').find((x) => x !== me()) ?? r.name;
  return r.name;
}

/** A full message as a room list preview (the shape `room.activity` carries). */
function previewOf(m: Message): MessagePreview {
  const deleted = m.deletedAt !== null;
  return {
    id: m.id,
    seq: m.seq,
    senderId: m.senderId,
    kind: m.kind,
    text: deleted ? null : m.body || m.card?.title || null,
    attachmentCount: m.attachments.length,
    createdAt: m.createdAt,
    deleted,
  };
}

/** Rooms dropped (left, removed, deleted) while a list read was on its way: that read may still hold them. */
let drops = 0;
const droppedAt = new Map<string, number>();

async function loadRooms() {
  if (!chat) return;
  const dropsBefore = drops;
  try {
    const listed = await allRooms(chat);
    // A room dropped after this read started stays dropped: the read may predate its deletion.
    const gone = (id: string) => (droppedAt.get(id) ?? 0) > dropsBefore;
    const shown = new Map(rooms.map((r) => [r.id, r]));
    rooms = listed
      .filter((r) => !gone(r.id))
      .map((r) => newest({ ...r, lastMessage: r.lastMessage && previewOf(r.lastMessage) }, shown.get(r.id)))
      .sort((a, b) => activeAt(b) - activeAt(a));
  } catch (err) {
    return report(err);
  }
  renderRooms();
}

/**
 * A room as a list read answers it, merged with what the list shows: events that came in while it
 * was read may be newer (a message after the read: a higher `lastSeq`; a read on another device
 * after it: counts of a higher version), and events counted before it that come in later lose to it
 * the same way (`applyActivity`, `applyCounts`).
 */
function newest(listed: RoomItem, shown: RoomItem | undefined): RoomItem {
  if (!shown) return listed;
  const preview = shown.lastSeq > listed.lastSeq ? { lastSeq: shown.lastSeq, lastMessage: shown.lastMessage } : {};
  const counts = shown.version > listed.version ? { unreadCount: shown.unreadCount, lastReadSeq: shown.lastReadSeq, version: shown.version } : {};
  return { ...listed, ...preview, ...counts };
}
const refreshRooms = debounce(() => void loadRooms(), 200);

/**
 * After a `reset` (of the inbox: every room; of a room's stream: that room), the server's seqs and
 * counts' versions may start again below those the list shows (a database restored from an older
 * backup). What the list shows of those rooms is forgotten (its preview's seq, its counts' version)
 * and the list read again: the read and the events that follow are taken as they come, instead of
 * losing to values of the old database (`newest`, `applyActivity`, `applyCounts`).
 */
function forgetShown(roomId?: string) {
  rooms = rooms.map((r) => (roomId === undefined || r.id === roomId ? { ...r, lastSeq: 0, version: 0 } : r));
  refreshRooms();
}

const activeAt = (r: RoomItem) => (r.lastMessage?.createdAt ?? r.createdAt).getTime();

function patchRoom(roomId: string, patch: Partial<RoomItem>) {
  const i = rooms.findIndex((r) => r.id === roomId);
  if (i < 0) return refreshRooms();
  rooms[i] = { ...rooms[i]!, ...patch };
  rooms.sort((a, b) => activeAt(b) - activeAt(a));
  renderRooms();
}

/** A message landed, was edited or deleted in a room of mine: its preview and counts, no query. */
function applyActivity(a: InboxEventOf<'room.activity'>) {
  const r = rooms.find((x) => x.id === a.roomId);
  if (!r) return refreshRooms();
  // Several nodes may each send one: an older view of the room never replaces a newer one.
  if (a.seq < r.lastSeq) return;
  // Counts taken before a read on another device may come after its unread.changed, or after a list
  // read that followed it: keep the newer.
  const counts = a.version < r.version ? {} : { unreadCount: a.unreadCount, lastReadSeq: a.lastReadSeq, version: a.version };
  patchRoom(a.roomId, { lastSeq: a.seq, lastMessage: a.lastMessage, ...counts });
}

/** A room's counts from `unread.changed`, unless those shown (from the list or an event) are newer: a higher version. */
function applyCounts(roomId: string, version: number, counts: Pick<RoomItem, 'unreadCount' | 'lastReadSeq'>) {
  const r = rooms.find((x) => x.id === roomId);
  if (r && version < r.version) return;
  patchRoom(roomId, { ...counts, version });
}

/** A room that is no longer mine (left, removed, deleted) leaves the list. */
function dropRoom(roomId: string) {
  droppedAt.set(roomId, ++drops);
  rooms = rooms.filter((r) => r.id !== roomId);
  renderRooms();
}

function renderRooms() {
  const list = $('room-list');
  if (!rooms.length) {
    list.replaceChildren(h('li', { class: 'hint' }, 'No rooms yet: create a group or message someone.'));
    return;
  }
  // One tab stop for the list (the open room, else the first); arrow keys move within it.
  const hasActive = rooms.some((r) => r.id === view?.roomId);
  // A re-render (live activity) must not take the keyboard focus away from the room it is on.
  const focused = (document.activeElement as HTMLElement | null)?.closest<HTMLElement>('#room-list .room-item')?.dataset.roomId;
  list.replaceChildren(
    ...rooms.map((r) => {
      const active = view?.roomId === r.id;
      const unread = active ? 0 : r.unreadCount;
      const last = r.lastMessage;
      const preview = last ? (last.deleted ? 'message deleted' : `${last.kind === 'system' ? '' : `${last.senderId}: `}${last.text ?? (last.attachmentCount ? 'attachment' : '')}`) : r.topic ?? '';
      const li = h(
        'li',
        { class: `room-item${active ? ' active' : ''}${unread ? ' unread' : ''}`, 'data-room-id': r.id, 'data-room-name': roomLabel(r), tabindex: active || (!hasActive && r === rooms[0]) ? 0 : -1, role: 'link', 'aria-current': active ? 'page' : undefined, 'aria-label': `${r.kind === 'direct' ? 'Direct message with' : 'Room'} ${roomLabel(r)}${unread ? `, ${unreadLabel(unread)} unread` : ''}` },
        h('span', { class: 'room-icon' }, r.kind === 'direct' ? '@' : '#'),
        h('span', { class: 'room-main' }, h('span', { class: 'room-name' }, roomLabel(r)), h('span', { class: 'room-last' }, preview)),
        unread ? h('span', { class: 'badge', title: `${unreadLabel(unread)} unread` }, unread > 99 ? '99+' : String(unread)) : null,
      );
      const open = () => navigate(r.id);
      li.addEventListener('click', open);
      li.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          open();
        } else moveFocus(e, '#room-list .room-item');
      });
      return li;
    }),
  );
  if (focused) {
    const again = list.querySelector<HTMLElement>(`.room-item[data-room-id="${focused}"]`);
    if (again) {
      for (const x of list.querySelectorAll<HTMLElement>('.room-item')) x.tabIndex = x === again ? 0 : -1;
      again.focus({ preventScroll: true });
    }
  }
}

function navigate(roomId: string) {
  if (location.hash !== `#/room/${roomId}`) location.hash = `#/room/${roomId}`;
  else openFromHash();
}
/** A room's name as the list shows it. */
function roomName(roomId: string): string {
  const r = rooms.find((x) => x.id === roomId);
  return r ? roomLabel(r) : 'a room';
}

/**
 * Arrow keys (and Home/End) move the focus between the items of a list that is one tab stop
 * (roving tabindex): the room list and the messages.
 */
function moveFocus(e: KeyboardEvent, selector: string) {
  const items = [...document.querySelectorAll<HTMLElement>(selector)];
  const i = items.indexOf(e.target as HTMLElement);
  let next = -1;
  if (e.key === 'ArrowDown') next = Math.min(items.length - 1, i + 1);
  else if (e.key === 'ArrowUp') next = i < 0 ? items.length - 1 : Math.max(0, i - 1);
  else if (e.key === 'Home') next = 0;
  else if (e.key === 'End') next = items.length - 1;
  else return;
  e.preventDefault();
  const el = items[next];
  if (!el) return;
  for (const x of items) x.tabIndex = x === el ? 0 : -1;
  el.focus();
  el.scrollIntoView({ block: 'nearest' });
}

/** Opens a search hit: its room, then the message (history around it is loaded when needed). */
function jumpTo(hit: { roomId: string; messageId: string; seq: number; replyToId: string | null }) {
  if (view?.roomId === hit.roomId) return void view.jumpTo(hit);
  pendingJump = hit;
  navigate(hit.roomId);
}

function openFromHash() {
  const m = /^#\/room\/([0-9a-f-]{36})$/i.exec(location.hash);
  const id = m?.[1];
  if (!id || !chat) return;
  if (view?.roomId === id) return;
  view?.close();
  view = new RoomView(chat, id);
  document.body.classList.add('in-room');
  renderRooms();
  const jump = pendingJump?.roomId === id ? pendingJump : null;
  pendingJump = null;
  void view.open(jump);
}
window.addEventListener('hashchange', openFromHash);

$('new-group-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!chat) return;
  const name = $<HTMLInputElement>('new-group-name').value.trim();
  const memberIds = $<HTMLInputElement>('new-group-members')
    .value.split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
  chat.trpc.room.create.mutate({ kind: 'group', name, memberIds }).then(
    (room) => {
      $<HTMLFormElement>('new-group-form').reset();
      void loadRooms().then(() => navigate(room.id));
    },
    report,
  );
});
$('direct-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!chat) return;
  const userId = $<HTMLInputElement>('direct-user').value.trim();
  chat.trpc.room.openDirect.mutate({ userId }).then(
    (room) => {
      $<HTMLFormElement>('direct-form').reset();
      void loadRooms().then(() => navigate(room.id));
    },
    report,
  );
});

// ---------------------------------------------------------------------------------------------
// Room view: history on scroll, live events, typing, presence, receipts, reactions
// ---------------------------------------------------------------------------------------------

/**
 * One open room. Its state (messages in seq order, edits, deletions, reactions, typing, presence,
 * read positions) is the client library's `RoomTimeline`, fed with history pages, the answers of
 * `chat.send` and the room's events; this class only renders it and sends what the user does.
 */
class RoomView {
  private readonly timeline = new RoomTimeline(me());
  /** Rendered messages by id, with the message object each was rendered from (the timeline replaces it on change). */
  private readonly els = new Map<string, { message: Message; el: HTMLElement }>();
  private readonly pending = new Map<string, { body: string; el: HTMLElement }>();
  /** Signed URLs of files (`file.get`), kept a little less long than they live. */
  private readonly fileUrls = new Map<string, { at: number; info: Promise<FileInfo> }>();
  private members = new Map<string, Member>();
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  private hasMore = false;
  private loadingOlder = false;
  private markedSeq = 0;
  private sub: Sub | null = null;
  private closed = false;
  private typingOn = false;
  private typingSentAt = 0;
  private typingIdle: ReturnType<typeof setTimeout> | undefined;
  private readonly box = $('messages');
  private readonly input = $<HTMLInputElement>('composer-input');
  private readonly cleanup: (() => void)[] = [];
  /**
   * Messages between these seqs are not loaded (after a jump to an older message): a "Load newer
   * messages" marker stands between `after` and `before`.
   */
  private gap: { after: number; before: number } | null = null;
  private kind: string | null = null;
  private readonly thread: ThreadPanel;
  private readonly meetings: RoomMeetings;

  constructor(
    private readonly chat: ChatClient,
    readonly roomId: string,
  ) {
    this.thread = new ThreadPanel(chat, {
      roomId,
      nameOf: (u) => this.nameOf(u),
      rootOf: (id) => this.timeline.byMessageId(id),
      sent: (m) => {
        if (this.closed) return;
        this.timeline.insert(m);
        this.render();
      },
    }, me);
    this.meetings = new RoomMeetings(chat, { roomId, nameOf: (u) => this.nameOf(u), me });
  }

  nameOfUser(userId: string): string {
    return this.nameOf(userId);
  }

  async open(jump: { messageId: string; seq: number; replyToId: string | null } | null = null) {
    const item = rooms.find((r) => r.id === this.roomId);
    $('empty').hidden = true;
    $('room-header').hidden = false;
    this.box.hidden = false;
    $('composer').hidden = false;
    $('room-title').textContent = item ? roomLabel(item) : '…';
    void this.loadNotifyLevel();
    $('room-topic').textContent = item?.topic ?? '';
    $('members').replaceChildren();
    $('call-button').hidden = true;
    $('typing').textContent = '';
    this.box.replaceChildren(h('div', { class: 'loading' }, 'Loading…'));

    const onScroll = () => {
      if (this.box.scrollTop < 120) void this.loadOlder();
    };
    this.box.addEventListener('scroll', onScroll, { passive: true });
    const onVisible = () => document.visibilityState === 'visible' && this.markRead();
    document.addEventListener('visibilitychange', onVisible);
    const onInput = () => this.onTyping();
    this.input.addEventListener('input', onInput);
    const onSubmit = (e: Event) => {
      e.preventDefault();
      this.send();
    };
    $('composer').addEventListener('submit', onSubmit);
    // Files: the attach button, dropped on the room, or pasted into the composer.
    const fileInput = $<HTMLInputElement>('composer-file');
    const onPick = () => {
      const files = [...(fileInput.files ?? [])];
      fileInput.value = '';
      if (files.length) void this.sendFiles(files);
    };
    fileInput.addEventListener('change', onPick);
    const room = this.box.parentElement!;
    const hasFiles = (e: DragEvent) => !!e.dataTransfer && [...e.dataTransfer.types].includes('Files');
    const onDragOver = (e: DragEvent) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      room.classList.add('dragging');
    };
    const onDragLeave = (e: DragEvent) => {
      if (e.target === room || !room.contains(e.relatedTarget as Node | null)) room.classList.remove('dragging');
    };
    const onDrop = (e: DragEvent) => {
      room.classList.remove('dragging');
      const files = [...(e.dataTransfer?.files ?? [])];
      if (!files.length) return;
      e.preventDefault();
      void this.sendFiles(files);
    };
    const onPaste = (e: ClipboardEvent) => {
      const files = [...(e.clipboardData?.files ?? [])];
      if (!files.length) return;
      e.preventDefault();
      void this.sendFiles(files);
    };
    room.addEventListener('dragover', onDragOver);
    room.addEventListener('dragleave', onDragLeave);
    room.addEventListener('drop', onDrop);
    this.input.addEventListener('paste', onPaste);
    this.cleanup.push(
      () => fileInput.removeEventListener('change', onPick),
      () => room.removeEventListener('dragover', onDragOver),
      () => room.removeEventListener('dragleave', onDragLeave),
      () => room.removeEventListener('drop', onDrop),
      () => this.input.removeEventListener('paste', onPaste),
      () => $('uploads').replaceChildren(),
    );
    // Keyboard: arrows move between messages, Enter or "t" opens a message's thread, Escape closes it.
    const onKey = (e: KeyboardEvent) => {
      const msg = (e.target as HTMLElement).closest<HTMLElement>('#messages .msg[data-id]');
      if (e.target === this.box && (e.key === 'ArrowUp' || e.key === 'End')) {
        const all = this.box.querySelectorAll<HTMLElement>('.msg[data-id]');
        const last = all[all.length - 1];
        if (last) {
          e.preventDefault();
          for (const x of all) x.tabIndex = x === last ? 0 : -1;
          last.focus();
        }
        return;
      }
      if (!msg || msg !== e.target) return;
      if ((e.key === 'Enter' || e.key === 't') && msg.dataset.thread === 'true') {
        e.preventDefault();
        void this.thread.open(msg.dataset.id!);
      } else if (e.key === 'Escape') this.thread.close();
      else moveFocus(e, '#messages .msg[data-id]');
    };
    this.box.addEventListener('keydown', onKey);
    $('back-to-rooms').onclick = () => leaveView();
    this.cleanup.push(
      () => this.box.removeEventListener('keydown', onKey),
      () => this.box.removeEventListener('scroll', onScroll),
      () => document.removeEventListener('visibilitychange', onVisible),
      () => this.input.removeEventListener('input', onInput),
      () => $('composer').removeEventListener('submit', onSubmit),
    );

    try {
      // The room's seq is read before its newest page: every event up to it is in the page.
      const [{ room, page }] = await Promise.all([
        this.chat.trpc.room.get
          .query({ roomId: this.roomId })
          .then(async (room) => ({ room, page: await this.chat.trpc.chat.history.query({ roomId: this.roomId, limit: PAGE }) })),
        this.loadMembers(),
      ]);
      if (this.closed) return;
      $('room-title').textContent = roomLabel(room);
      $('room-topic').textContent = room.topic ?? (room.kind === 'direct' ? 'Direct message' : `${room.memberCount} members`);
      this.setArchived(room.archivedAt !== null);
      this.kind = room.kind;
      this.timeline.load(page.messages);
      // The stream starts at the higher of the room's seq and the page's newest message (a page never
      // moves the timeline's lastSeq): nothing missed, nothing twice.
      this.timeline.lastSeq = Math.max(room.lastSeq, page.messages.at(-1)?.seq ?? -1);
      this.hasMore = page.hasMore;
      this.render();
      this.scrollToBottom();
      this.showCallButton();
      void this.meetings.init();
      this.sub = this.chat.subscribeRoom(
        this.roomId,
        { onEvent: (event) => this.apply(event), onError: (err) => this.onStreamError(err) },
        { lastEventId: String(Math.max(0, this.timeline.lastSeq)) },
      );
      this.markRead();
      if (jump) await this.jumpTo(jump);
      else {
        this.input.focus();
        void this.fillViewport();
      }
    } catch (err) {
      if (this.closed) return;
      this.box.replaceChildren(h('div', { class: 'loading' }, `Cannot open this room: ${errorText(err)}`));
    }
  }

  private async reloadHistory() {
    this.gap = null;
    try {
      const page = await this.chat.trpc.chat.history.query({ roomId: this.roomId, limit: PAGE });
      if (this.closed) return;
      this.timeline.load(page.messages);
      this.hasMore = page.hasMore;
      this.render();
      this.scrollToBottom();
      this.markRead();
    } catch (err) {
      report(err);
    }
  }

  /**
   * The room's notification level (`notify.preferences`), changed with the header's menu. A room muted
   * until a time (e.g. with the CLI's `--mute-until`) shows "Muted until ..."; picking a level unmutes it.
   */
  private async loadNotifyLevel() {
    const select = $<HTMLSelectElement>('room-notify');
    const dropMuted = () => select.querySelector('option[value="muted"]')?.remove();
    dropMuted();
    select.onchange = () => {
      const level = select.value as 'all' | 'mentions' | 'none';
      const wasMuted = select.querySelector('option[value="muted"]') !== null;
      this.chat.trpc.notify.setRoomPreference.mutate({ roomId: this.roomId, level, muteUntil: null }).then(() => {
        dropMuted();
        const what = level === 'none' ? 'No notifications from this room.' : level === 'all' ? 'Notified of every message here.' : 'Notified of mentions here.';
        toast(wasMuted ? `Unmuted. ${what}` : what);
      }, report);
    };
    try {
      const prefs = await this.chat.trpc.notify.preferences.query();
      if (this.closed) return;
      const mine = prefs.rooms.find((r) => r.roomId === this.roomId);
      select.value = mine?.level ?? 'mentions';
      if (mine?.muteUntil && mine.muteUntil.getTime() > Date.now()) {
        const muted = document.createElement('option');
        muted.value = 'muted';
        muted.disabled = true;
        const sameDay = mine.muteUntil.toDateString() === new Date().toDateString();
        muted.textContent = `🔕 Muted until ${(sameDay ? timeFmt : dateTimeFmt).format(mine.muteUntil)}`;
        select.prepend(muted);
        select.value = 'muted';
      }
    } catch (err) {
      report(err);
    }
  }

  /**
   * Shows a message (a search hit): the history around it is loaded when it is not (a marker then
   * stands for the messages between it and the newest page), it is scrolled to, highlighted and
   * focused; a reply also opens its thread.
   */
  async jumpTo(hit: { messageId: string; seq: number; replyToId: string | null }) {
    const shown = hit.replyToId ?? hit.messageId;
    if (!this.timeline.byMessageId(shown) || !this.timeline.byMessageId(hit.messageId)) {
      try {
        const target = hit.replyToId ? (this.timeline.byMessageId(hit.replyToId)?.seq ?? hit.seq) : hit.seq;
        if (this.gap) {
          // One gap at a time: keep only the newest, live part (from the gap on) and jump from there.
          const before = this.gap.before;
          const keep = this.timeline.messages().filter((m) => m.seq >= before);
          this.gap = null;
          this.timeline.clear();
          this.timeline.load(keep);
          this.hasMore = true;
        }
        const newestLoaded = this.timeline.oldestSeq();
        const around = await historyAround(this.chat, this.roomId, target, { older: 15, newer: 15 });
        if (this.closed) return;
        const top = around.messages.at(-1)?.seq ?? target;
        if (newestLoaded !== null && around.hasNewer && top < newestLoaded) this.gap = { after: top, before: newestLoaded };
        if (newestLoaded === null || (around.messages[0]?.seq ?? target) < newestLoaded) this.hasMore = around.hasOlder;
        this.timeline.load(around.messages);
        this.render();
      } catch (err) {
        return report(err);
      }
    }
    if (hit.replyToId && !this.timeline.byMessageId(hit.replyToId)) {
      // The root is older than the window: open the thread anyway.
      await this.thread.open(hit.replyToId, false);
      return;
    }
    const el = this.els.get(shown)?.el;
    if (!el) return;
    for (const x of this.box.querySelectorAll<HTMLElement>('.msg.highlight')) x.classList.remove('highlight');
    el.classList.add('highlight');
    el.scrollIntoView({ block: 'center' });
    for (const x of this.box.querySelectorAll<HTMLElement>('.msg[data-id]')) x.tabIndex = x === el ? 0 : -1;
    el.focus({ preventScroll: true });
    if (hit.replyToId) await this.thread.open(hit.replyToId, false);
  }

  /** Fills the gap left by a jump with the next page after it. */
  private async loadNewer() {
    const gap = this.gap;
    if (!gap) return;
    try {
      const page = await this.chat.trpc.chat.history.query({ roomId: this.roomId, afterSeq: gap.after, limit: 100 });
      if (this.closed || this.gap !== gap) return;
      const top = page.messages.at(-1)?.seq ?? gap.before;
      this.gap = page.hasMore && top < gap.before ? { after: top, before: gap.before } : null;
      this.timeline.load(page.messages);
      this.render();
    } catch (err) {
      report(err);
    }
  }

  /** "Call" in a direct room: the other member (a direct room has two). */
  private showCallButton() {
    const button = $<HTMLButtonElement>('call-button');
    const peer = [...this.members.keys()].find((u) => u !== me());
    button.hidden = this.kind !== 'direct' || !peer;
    if (!peer) return;
    button.setAttribute('aria-label', `Call ${this.nameOf(peer)} (audio and video)`);
    button.onclick = () => void calls?.start(this.roomId, peer);
  }

  close() {
    this.closed = true;
    this.thread.close();
    this.meetings.close();
    this.sub?.unsubscribe();
    this.stopTyping();
    clearTimeout(this.typingTimer);
    for (const f of this.cleanup) f();
  }

  /** An archived room is read-only: the composer is off and says why. */
  private setArchived(archived: boolean) {
    this.input.disabled = archived;
    this.input.placeholder = archived ? 'This room is archived: read-only' : 'Write a message…';
  }

  private onStreamError(err: unknown) {
    if (this.closed) return;
    toast(`Room stream ended: ${errorText(err)}`);
    if (errorCode(err) === 'NOT_FOUND' || errorCode(err) === 'FORBIDDEN') {
      leaveView();
      refreshRooms();
    }
  }

  private async loadMembers() {
    const list = await allMembers(this.chat, this.roomId);
    this.members = new Map(list.map((m) => [m.userId, m]));
    for (const m of list) this.timeline.setReadUpTo(m.userId, m.lastReadSeq);
    const ids = list.map((m) => m.userId).slice(0, 200);
    if (ids.length) {
      const states = await this.chat.trpc.presence.get.query({ userIds: ids });
      // Of this answer and a presence event that came in meanwhile, the newer version wins.
      for (const p of states) this.timeline.setPresence(p.userId, p.status, p.version);
    }
    if (!this.closed) {
      this.renderMembers();
      this.renderSeen();
      this.showCallButton();
    }
  }

  private nameOf(userId: string): string {
    return this.members.get(userId)?.name ?? userId;
  }

  // --- live events -----------------------------------------------------------------------------

  private apply(e: RoomEvent) {
    if (this.closed) return;
    const isMessage = e.type === 'message.new' || e.type === 'message.edited' || e.type === 'message.deleted';
    const stick = isMessage && this.nearBottom();
    const known = isMessage && this.timeline.byMessageId(e.message.id) !== undefined;
    // The timeline drops what it has already applied (a replay after a resume) and keeps `me` on reactions.
    if (!this.timeline.apply(e)) return;
    switch (e.type) {
      case 'ready':
        return;
      case 'reset':
        // The server could not continue from our last event (retention, a restored database):
        // the timeline was cleared, load the newest page again. The room's position may now be
        // below what was reported read (a restored backup): report reads again from it on.
        this.markedSeq = 0;
        void this.reloadHistory();
        // The room list's entry of the room too: its preview may be a message the restore removed.
        forgetShown(this.roomId);
        return;
      case 'message.new':
      case 'message.edited':
      case 'message.deleted':
        this.thread.onMessage(e.message);
        this.meetings.onMessage(e.message);
        if (e.type === 'message.new') {
          this.renderTyping();
          // Our own message can arrive on the stream before `send` answers: it replaces its placeholder.
          if (e.message.senderId === me() && !known) this.dropPending(e.message.body);
        }
        this.render();
        if (stick || e.message.senderId === me()) this.scrollToBottom();
        this.markRead();
        return;
      case 'reaction.added':
      case 'reaction.removed':
      case 'file.ready':
        this.render();
        return;
      case 'member.joined':
      case 'member.left':
      case 'member.updated':
        if (e.type === 'member.left' && e.userId === me()) {
          // The inbox's room.changed takes it off the list.
          toast('You are no longer a member of this room.');
          leaveView();
          return;
        }
        void this.loadMembers().catch(report);
        return;
      case 'room.updated':
        $('room-title').textContent = e.name;
        $('room-topic').textContent = e.topic ?? '';
        return;
      case 'room.archived':
      case 'room.unarchived':
        this.setArchived(e.type === 'room.archived');
        return;
      case 'room.deleted':
        toast('This room was deleted.');
        leaveView();
        return;
      case 'typing':
        this.renderTyping();
        return;
      case 'presence':
        this.renderMembers();
        return;
      case 'receipt.read':
        this.renderSeen();
        return;
    }
  }

  // --- rendering -------------------------------------------------------------------------------

  private render() {
    const nodes: Node[] = [];
    nodes.push(
      this.hasMore
        ? h('div', { class: 'history-edge', id: 'history-more' }, this.loadingOlder ? 'Loading older messages…' : 'Scroll up for older messages')
        : h('div', { class: 'history-edge', id: 'history-start' }, 'This is the beginning of the conversation.'),
    );
    let prev: Message | undefined;
    const gap = this.gap;
    for (const m of this.timeline.messages()) {
      // Replies live in their thread: the root shows how many there are.
      if (m.replyToId) continue;
      if (gap && prev && prev.seq <= gap.after && m.seq >= gap.before) {
        const more = h('button', { type: 'button', class: 'history-gap link', id: 'history-gap' }, 'Load newer messages');
        more.addEventListener('click', () => void this.loadNewer());
        nodes.push(h('div', { class: 'history-edge' }, more));
      }
      let el = this.els.get(m.id)?.message === m ? this.els.get(m.id)!.el : undefined;
      if (!el) {
        el = this.messageEl(m);
        this.els.set(m.id, { message: m, el });
      }
      const grouped =
        !!prev && prev.senderId === m.senderId && prev.kind !== 'system' && m.kind !== 'system' && m.createdAt.getTime() - prev.createdAt.getTime() < 5 * 60_000;
      el.classList.toggle('grouped', grouped);
      nodes.push(el);
      prev = m;
    }
    for (const p of this.pending.values()) nodes.push(p.el);
    // Moving the nodes would drop the keyboard focus from the message it is on: put it back.
    const focused = document.activeElement instanceof HTMLElement && this.box.contains(document.activeElement) ? document.activeElement : null;
    this.box.replaceChildren(...nodes);
    if (focused?.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
    this.renderSeen();
  }

  private messageEl(m: Message): HTMLElement {
    const mine = m.senderId === me();
    if (m.kind === 'system') {
      return h('div', { class: 'msg system', 'data-seq': m.seq, 'data-id': m.id, tabindex: -1 }, h('span', { class: 'body' }, m.body ?? ''));
    }
    const reactions = h(
      'div',
      { class: 'reactions' },
      ...m.reactions.map((r) => {
        const b = h('button', { type: 'button', class: `reaction${r.me ? ' me' : ''}`, 'data-emoji': r.emoji, title: r.me ? 'Remove your reaction' : 'React' }, `${r.emoji} `, h('span', { class: 'count' }, String(r.count)));
        b.addEventListener('click', () => this.toggleReaction(m.id, r.emoji, r.me));
        return b;
      }),
    );
    const bar = h('div', { class: 'react-bar', role: 'toolbar', 'aria-label': 'Message actions' });
    if (!m.deletedAt) {
      for (const emoji of QUICK_EMOJI) {
        const b = h('button', { type: 'button', 'data-emoji': emoji, title: `React with ${emoji}`, 'aria-label': `React with ${emoji}` }, emoji);
        b.addEventListener('click', () => this.toggleReaction(m.id, emoji, m.reactions.some((r) => r.emoji === emoji && r.me)));
        bar.append(b);
      }
      const reply = h('button', { type: 'button', class: 'reply-in-thread', title: 'Reply in thread', 'aria-label': 'Reply in thread' }, '💬');
      reply.addEventListener('click', () => void this.thread.open(m.id));
      bar.append(reply);
    }
    const meetingId = m.deletedAt ? null : meetingIdOf(m);
    const threadLink =
      m.replyCount > 0
        ? h(
            'button',
            { type: 'button', class: 'thread-link link', 'data-count': m.replyCount, 'aria-label': `${m.replyCount === 1 ? '1 reply' : `${m.replyCount} replies`}: open the thread` },
            m.replyCount === 1 ? '1 reply' : `${m.replyCount} replies`,
            m.lastReplyAt ? h('span', { class: 'muted' }, ` · last ${timeFmt.format(m.lastReplyAt)}`) : null,
          )
        : null;
    threadLink?.addEventListener('click', () => void this.thread.open(m.id));
    const time = h('time', { datetime: m.createdAt.toISOString(), title: dateTimeFmt.format(m.createdAt) }, timeFmt.format(m.createdAt));
    const body = m.deletedAt
      ? h('span', { class: 'body deleted' }, 'message deleted')
      : meetingId
        ? this.meetings.cardEl(meetingId)
        : m.kind === 'card' && m.card
          ? cardEl(m.card)
          : h('span', { class: 'body' }, m.body ?? '');
    const el = h(
      'div',
      {
        class: `msg${mine ? ' mine' : ''}`,
        'data-seq': m.seq,
        'data-id': m.id,
        'data-sender': m.senderId,
        'data-thread': m.deletedAt ? undefined : 'true',
        tabindex: -1,
        role: 'article',
        'aria-label': `${this.nameOf(m.senderId)}, ${timeFmt.format(m.createdAt)}${m.replyCount ? `, ${m.replyCount} ${m.replyCount === 1 ? 'reply' : 'replies'}` : ''}`,
      },
      avatar(m.senderId, this.nameOf(m.senderId), 'avatar small'),
      h(
        'div',
        { class: 'msg-main' },
        h('div', { class: 'meta' }, h('span', { class: 'sender' }, this.nameOf(m.senderId)), time),
        h('div', { class: 'bubble' }, body, m.editedAt && !m.deletedAt ? h('span', { class: 'edited' }, ' (edited)') : null),
        m.attachments.length && !m.deletedAt ? h('div', { class: 'files' }, ...m.attachments.map((a) => this.attachmentEl(a))) : null,
        reactions,
        threadLink,
      ),
      bar,
    );
    if (mine) {
      // Who has read this message, on demand (receipt.readers).
      time.classList.add('clickable');
      time.addEventListener('click', () => {
        this.chat.trpc.receipt.readers
          .query({ roomId: this.roomId, seq: m.seq })
          .then((rs) => {
            const others = rs.filter((r) => r.userId !== me());
            toast(others.length ? `Read by ${others.map((r) => this.nameOf(r.userId) + (r.readAt ? ` at ${timeFmt.format(r.readAt)}` : '')).join(', ')}` : 'Not read yet');
          })
          .catch(report);
      });
    }
    return el;
  }

  /**
   * An attachment: an uploaded file as a card (name, size; a preview once its thumbnail exists,
   * `file.ready`) whose name downloads it through a short-lived signed URL; a link as a link.
   */
  private attachmentEl(a: Message['attachments'][number]): HTMLElement {
    if (!('fileId' in a)) {
      // https only, as card links: this page trusts no data (older versions stored any scheme).
      if (!isHttps(a.url)) return h('span', { class: 'file-card link' }, a.name);
      return h('a', { class: 'file-card link', href: a.url, target: '_blank', rel: 'noopener noreferrer' }, a.name);
    }
    const name = h('button', { type: 'button', class: 'file-name', title: `Download ${a.name}` }, a.name);
    name.addEventListener('click', () => {
      this.fileInfo(a.fileId).then((f) => window.open(this.chat.resolveUrl(f.url), '_blank', 'noopener'), report);
    });
    const card = h('div', { class: 'file-card', 'data-file-id': a.fileId, 'data-mime': a.mime }, name, h('span', { class: 'file-size' }, `${formatSize(a.size)} · ${a.mime}`));
    if (a.thumbnail) {
      const img = h('img', { alt: a.name, loading: 'lazy', ...(a.width && a.height ? { width: Math.min(256, a.width), 'data-w': a.width, 'data-h': a.height } : {}) }) as HTMLImageElement;
      card.prepend(img);
      this.fileInfo(a.fileId).then((f) => {
        if (f.thumbnailUrl) img.src = this.chat.resolveUrl(f.thumbnailUrl);
      }, report);
    }
    return card;
  }

  /** `file.get`, cached while its URLs are fresh. */
  private fileInfo(fileId: string): Promise<FileInfo> {
    const hit = this.fileUrls.get(fileId);
    if (hit && Date.now() - hit.at < 120_000) return hit.info;
    const info = this.chat.trpc.file.get.query({ fileId });
    this.fileUrls.set(fileId, { at: Date.now(), info });
    info.catch(() => this.fileUrls.delete(fileId));
    return info;
  }

  /** Uploads files with progress, then sends them in one message (with the composer's text, if any). */
  private async sendFiles(files: File[]) {
    if (files.length > MAX_FILES) {
      toast(`At most ${MAX_FILES} files per message: sending the first ${MAX_FILES}.`);
      files = files.slice(0, MAX_FILES);
    }
    const list = $('uploads');
    const uploads = files.map(async (file) => {
      const bar = h('progress', { max: file.size || 1, value: 0 }) as HTMLProgressElement;
      const pct = h('span', { class: 'pct' }, '0%');
      const row = h('div', { class: 'upload', 'data-name': file.name }, h('span', { class: 'upload-name' }, file.name), bar, pct);
      list.append(row);
      try {
        const uploaded = await this.chat.uploadFile(this.roomId, file, {
          onProgress: ({ loaded, total }) => {
            bar.max = total || 1;
            bar.value = loaded;
            pct.textContent = `${Math.round((loaded / (total || 1)) * 100)}%`;
          },
        });
        row.remove();
        return uploaded;
      } catch (err) {
        row.classList.add('failed');
        pct.textContent = `failed: ${errorText(err)}`;
        return null;
      }
    });
    const done = (await Promise.all(uploads)).filter((u) => u !== null);
    if (!done.length || this.closed) return;
    this.send(newClientId(), this.input.value.trim(), done);
  }

  /** "Seen by …" under my latest message: members whose read position reached it. */
  private renderSeen() {
    this.box.querySelector('.seen')?.remove();
    const last = [...this.timeline.messages()].reverse().find((m) => m.senderId === me() && m.kind !== 'system' && !m.replyToId);
    if (!last) return;
    const el = this.els.get(last.id)?.el;
    if (!el) return;
    const readers = [...this.timeline.getSnapshot().readUpTo]
      .filter(([u, s]) => u !== me() && s >= last.seq && this.members.has(u))
      .map(([u]) => this.nameOf(u))
      .sort();
    const text = readers.length ? `Seen by ${readers.join(', ')}` : 'Sent';
    el.after(h('div', { class: `seen${readers.length ? ' read' : ''}`, 'data-seq': last.seq }, readers.length ? '✓✓ ' : '✓ ', text));
  }

  private renderMembers() {
    const order: Record<string, number> = { online: 0, away: 1, dnd: 2, offline: 3 };
    const statusOf = (userId: string) => this.timeline.presence(userId) ?? 'offline';
    const list = [...this.members.values()].sort((a, b) => order[statusOf(a.userId)]! - order[statusOf(b.userId)]! || a.userId.localeCompare(b.userId));
    $('members').replaceChildren(
      ...list.slice(0, 12).map((m) => {
        const status = statusOf(m.userId);
        const name = m.name ?? m.userId;
        return h(
          'li',
          { class: 'member', 'data-user-id': m.userId, 'data-status': status, title: `${name} (${m.role}): ${status}` },
          avatar(m.userId, name, 'avatar small'),
          h('span', { class: `dot ${status}` }),
          h('span', { class: 'member-name' }, m.userId === me() ? `${name} (you)` : name),
        );
      }),
      list.length > 12 ? h('li', { class: 'member more' }, `+${list.length - 12}`) : '',
    );
  }

  private renderTyping() {
    // An indicator whose stop was lost runs out on its own (the server's TTL): render again then.
    clearTimeout(this.typingTimer);
    const next = this.timeline.expireTyping();
    if (next !== null) this.typingTimer = setTimeout(() => this.renderTyping(), Math.max(0, next - Date.now()));
    const typing = this.timeline.typing();
    const names = typing.map((u) => this.nameOf(u)).sort();
    const el = $('typing');
    el.dataset.users = [...typing].sort().join(',');
    if (!names.length) el.textContent = '';
    else {
      const who = names.length === 1 ? `${names[0]} is` : names.length === 2 ? `${names[0]} and ${names[1]} are` : `${names.length} people are`;
      el.replaceChildren(h('span', { class: 'dots' }, h('i'), h('i'), h('i')), ` ${who} typing…`);
    }
  }

  // --- actions ---------------------------------------------------------------------------------

  private onTyping() {
    const empty = this.input.value.trim() === '';
    if (empty) return this.stopTyping();
    const now = Date.now();
    if (!this.typingOn || now - this.typingSentAt > TYPING_REFRESH_MS) {
      this.typingOn = true;
      this.typingSentAt = now;
      this.chat.trpc.chat.typing.mutate({ roomId: this.roomId, typing: true }).catch(() => undefined);
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }
  private stopTyping() {
    clearTimeout(this.typingIdle);
    if (!this.typingOn) return;
    this.typingOn = false;
    this.chat.trpc.chat.typing.mutate({ roomId: this.roomId, typing: false }).catch(() => undefined);
  }

  private send(clientId = newClientId(), text = this.input.value.trim(), attachments: { fileId: string; name: string }[] = []) {
    if (!text && !attachments.length) return;
    this.input.value = '';
    this.stopTyping();
    const shown = attachments.length ? `${text}${text ? ' ' : ''}📎 ${attachments.map((a) => a.name).join(', ')}` : text;
    const el = h('div', { class: 'msg mine pending', 'data-client-id': clientId }, h('div', { class: 'msg-main' }, h('div', { class: 'bubble' }, h('span', { class: 'body' }, shown)), h('div', { class: 'meta' }, 'sending…')));
    this.pending.set(clientId, { body: text, el });
    this.render();
    this.scrollToBottom();
    // Idempotent by clientId: a retry of the same message never makes a second one.
    const files = attachments.map((a) => ({ fileId: a.fileId }));
    this.chat.trpc.chat.send.mutate({ roomId: this.roomId, clientId, body: text, ...(files.length ? { attachments: files } : {}) }).then(
      (m) => {
        this.pending.delete(clientId);
        if (!this.closed) {
          // Shown now even if its event is still on the way (the event, or a newer one, wins).
          this.timeline.insert(m);
          this.render();
          this.scrollToBottom();
          this.markRead();
        }
      },
      (err) => {
        el.classList.add('failed');
        const retry = h('button', { type: 'button', class: 'link' }, 'retry');
        retry.addEventListener('click', () => {
          this.pending.delete(clientId);
          this.send(clientId, text, attachments);
        });
        el.querySelector('.meta')?.replaceChildren(`not sent: ${errorText(err)} `, retry);
      },
    );
  }

  private dropPending(body: string | null) {
    for (const [clientId, p] of this.pending) {
      if (p.body === body) {
        this.pending.delete(clientId);
        p.el.remove();
        return;
      }
    }
  }

  private toggleReaction(messageId: string, emoji: string, mine: boolean) {
    const call = mine ? this.chat.trpc.chat.unreact : this.chat.trpc.chat.react;
    // The room stream brings the result (reaction.added/removed, in seq order with everyone else's).
    call.mutate({ messageId, emoji }).catch(report);
  }

  /** Reports the last durable seq this view has applied (history or events) as read. */
  private markRead = debounce(() => {
    if (this.closed || document.visibilityState === 'hidden' || this.timeline.lastSeq <= this.markedSeq) return;
    const seq = this.timeline.lastSeq;
    this.markedSeq = seq;
    // The inbox's unread.changed brings the room's new counts to the list (and to my other devices).
    this.chat.trpc.receipt.markRead.mutate({ roomId: this.roomId, seq }).catch((err: unknown) => {
      this.markedSeq = 0;
      report(err);
    });
  }, 150);

  // --- history on scroll -----------------------------------------------------------------------

  private async loadOlder() {
    if (!this.hasMore || this.loadingOlder || this.closed) return;
    const oldest = this.timeline.oldestSeq();
    if (oldest === null) return;
    this.loadingOlder = true;
    const edge = document.getElementById('history-more');
    if (edge) edge.textContent = 'Loading older messages…';
    try {
      const page = await this.chat.trpc.chat.history.query({ roomId: this.roomId, beforeSeq: oldest, limit: PAGE });
      if (this.closed) return;
      const before = this.box.scrollHeight;
      const top = this.box.scrollTop;
      this.timeline.load(page.messages);
      this.hasMore = page.hasMore;
      this.loadingOlder = false;
      this.render();
      // Keep what the reader was looking at in place.
      this.box.scrollTop = top + (this.box.scrollHeight - before);
    } catch (err) {
      report(err);
    } finally {
      this.loadingOlder = false;
    }
    void this.fillViewport();
  }

  /** While the messages do not fill the view there is nothing to scroll: load more right away. */
  private async fillViewport() {
    if (this.hasMore && this.box.scrollHeight <= this.box.clientHeight + 120) await this.loadOlder();
  }

  private nearBottom(): boolean {
    return this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight < 80;
  }
  private scrollToBottom() {
    this.box.scrollTop = this.box.scrollHeight;
  }
}

function leaveView() {
  view?.close();
  view = null;
  document.body.classList.remove('in-room');
  history.replaceState(null, '', location.pathname);
  $('room-header').hidden = true;
  $('messages').hidden = true;
  $('composer').hidden = true;
  $('typing').textContent = '';
  $('empty').hidden = false;
  renderRooms();
}

setUpSearch({
  chat: () => chat,
  nameOf: (roomId, userId) => (view?.roomId === roomId ? view.nameOfUser(userId) : userId),
  jump: jumpTo,
});

void start();
