/**
 * The thread panel: a root message and its replies (`chat.thread`), kept live by the room's
 * message events (which the room view passes on), with a composer that replies in the thread
 * (`chat.send` with `replyToId`). The root's reply count lives in the room's `RoomTimeline`.
 */
import { type ChatClient, errorCode, type Message, newClientId } from '../../client/index.js';
import { $, avatar, dateTimeFmt, errorText, h, report, timeFmt } from './dom.js';

/** What the panel needs from the room view it belongs to. */
export interface ThreadHost {
  readonly roomId: string;
  nameOf(userId: string): string;
  /** The root as the room's timeline has it now (its live reply count), if loaded there. */
  rootOf(rootId: string): Message | undefined;
  /** A reply this page sent: the room view puts it into its timeline (which counts it). */
  sent(reply: Message): void;
}

/** At most this many pages of replies are read when a thread opens (100 each). */
const MAX_PAGES = 5;

export class ThreadPanel {
  private root: Message | null = null;
  private readonly replies = new Map<string, Message>();
  private readonly panel = $('thread-panel');
  private readonly list = $('thread-replies');
  private readonly input = $<HTMLInputElement>('thread-input');
  private readonly form = $<HTMLFormElement>('thread-composer');
  private opened = 0;

  constructor(
    private readonly chat: ChatClient,
    private readonly host: ThreadHost,
    private readonly me: () => string,
  ) {
    this.form.onsubmit = (e) => {
      e.preventDefault();
      this.send();
    };
    $('thread-close').onclick = () => this.close();
    this.panel.onkeydown = (e) => {
      if (e.key === 'Escape') this.close();
    };
  }

  get rootId(): string | null {
    return this.panel.hidden ? null : (this.root?.id ?? null);
  }

  /** Opens the thread of `rootId`: its root and every reply so far, then live. */
  async open(rootId: string, focus = true): Promise<void> {
    const ticket = ++this.opened;
    this.root = this.host.rootOf(rootId) ?? null;
    this.replies.clear();
    this.panel.hidden = false;
    document.body.classList.add('thread-open');
    this.list.replaceChildren(h('div', { class: 'loading' }, 'Loading…'));
    this.renderRoot();
    try {
      let afterSeq = 0;
      for (let i = 0; i < MAX_PAGES; i++) {
        const page = await this.chat.trpc.chat.thread.query({ messageId: rootId, afterSeq, limit: 100 });
        if (ticket !== this.opened) return;
        this.root = this.host.rootOf(rootId) ?? page.root;
        for (const r of page.replies) if (!this.replies.has(r.id)) this.replies.set(r.id, r);
        afterSeq = page.replies.at(-1)?.seq ?? afterSeq;
        if (!page.hasMore) break;
      }
    } catch (err) {
      if (ticket !== this.opened) return;
      this.list.replaceChildren(h('div', { class: 'loading' }, `Cannot open this thread: ${errorText(err)}`));
      if (errorCode(err) !== 'NOT_FOUND') report(err);
      return;
    }
    this.render();
    if (focus) this.input.focus();
  }

  close() {
    this.opened++;
    this.root = null;
    this.replies.clear();
    this.panel.hidden = true;
    document.body.classList.remove('thread-open');
  }

  /** A message event of the room (new, edited, deleted): a reply of this thread, or its root, changes the panel. */
  onMessage(m: Message) {
    if (!this.root || this.panel.hidden) return;
    if (m.id === this.root.id) {
      this.root = this.host.rootOf(m.id) ?? m;
      this.renderRoot();
      return;
    }
    if (m.replyToId !== this.root.id) return;
    this.replies.set(m.id, m);
    this.root = this.host.rootOf(this.root.id) ?? this.root;
    this.render();
  }

  private send() {
    const body = this.input.value.trim();
    const root = this.root;
    if (!body || !root) return;
    this.input.value = '';
    this.chat.trpc.chat.send.mutate({ roomId: this.host.roomId, clientId: newClientId(), body, replyToId: root.id }).then((m) => {
      this.host.sent(m);
      this.onMessage(m);
    }, (err: unknown) => {
      this.input.value = body;
      report(err);
    });
  }

  private renderRoot() {
    const root = this.root;
    $('thread-root').replaceChildren(root ? this.messageEl(root, 'thread-root-msg') : h('div', { class: 'loading' }, 'Loading…'));
    const n = root?.replyCount ?? 0;
    $('thread-count').textContent = n === 1 ? '1 reply' : `${n} replies`;
    $('thread-count').dataset.count = String(n);
  }

  private render() {
    this.renderRoot();
    const replies = [...this.replies.values()].sort((a, b) => a.seq - b.seq);
    this.list.replaceChildren(
      ...(replies.length ? replies.map((r) => this.messageEl(r, 'thread-reply')) : [h('div', { class: 'hint' }, 'No replies yet: start the thread.')]),
    );
    this.list.scrollTop = this.list.scrollHeight;
  }

  private messageEl(m: Message, cls: string): HTMLElement {
    const name = this.host.nameOf(m.senderId);
    return h(
      'article',
      { class: `${cls}${m.senderId === this.me() ? ' mine' : ''}`, 'data-id': m.id, 'data-seq': m.seq, 'aria-label': `${name} at ${timeFmt.format(m.createdAt)}` },
      avatar(m.senderId, name, 'avatar small'),
      h(
        'div',
        { class: 'msg-main' },
        h('div', { class: 'meta' }, h('span', { class: 'sender' }, name), h('time', { datetime: m.createdAt.toISOString(), title: dateTimeFmt.format(m.createdAt) }, timeFmt.format(m.createdAt))),
        m.deletedAt ? h('span', { class: 'body deleted' }, 'message deleted') : h('span', { class: 'body' }, m.body ?? ''),
      ),
    );
  }
}
