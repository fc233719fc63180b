/**
 * Video meetings in a room: "Start meeting" creates one on the server's provider (`video.create`)
 * and posts it as a message whose `metadata.meetingId` names it; every member's page renders such
 * a message as a meeting card (status and who is in it, from `video.get`) with "Join", which mints
 * a token (`video.joinToken`) and opens the provider's meeting UI in a new tab. Cards follow the
 * meeting: its `Meeting … started/ended` system messages refresh them at once, and while one is
 * not ended it is read again every few seconds (the provider's webhooks change who is in it
 * without a room event).
 */
import { type ChatClient, errorCode, type Message, newClientId, type RouterOutputs } from '../../client/index.js';
import { $, errorText, h, report, toast } from './dom.js';

type Meeting = RouterOutputs['video']['get'];
type JoinToken = RouterOutputs['video']['joinToken'];

/** How often a card of a meeting that has not ended is read again. */
const REFRESH_MS = 4000;

/** The id of the meeting a message announces (`metadata.meetingId`), or null. */
export function meetingIdOf(m: Message): string | null {
  const id = m.metadata?.meetingId;
  return typeof id === 'string' && /^[0-9a-f-]{36}$/i.test(id) ? id : null;
}

/**
 * Where the provider's meeting UI is: LiveKit's hosted Meet app with the server URL and token
 * (https://meet.livekit.io, "custom" connection), or the Daily room URL with the token as `t`.
 */
export function meetingUiUrl(join: Pick<JoinToken, 'provider' | 'url' | 'token'>): string {
  if (join.provider === 'livekit') {
    const u = new URL('https://meet.livekit.io/custom');
    u.searchParams.set('liveKitUrl', join.url);
    u.searchParams.set('token', join.token);
    return u.toString();
  }
  const u = new URL(join.url);
  u.searchParams.set('t', join.token);
  return u.toString();
}

export interface MeetingHost {
  readonly roomId: string;
  nameOf(userId: string): string;
  me(): string;
}

export class RoomMeetings {
  private readonly known = new Map<string, Meeting | Omit<Meeting, 'online'>>();
  private readonly loading = new Set<string>();
  /** Why meetings cannot be started here (no provider on the server), or null. */
  private unavailable: string | null = null;
  private readonly timer: ReturnType<typeof setInterval>;
  private closed = false;
  private readonly button = $<HTMLButtonElement>('start-meeting');

  constructor(
    private readonly chat: ChatClient,
    private readonly host: MeetingHost,
  ) {
    this.button.onclick = () => void this.start();
    this.setButton(false);
    this.timer = setInterval(() => this.refreshOpen(), REFRESH_MS);
  }

  /** Reads the room's meetings; without a video provider the button says why it is unavailable. */
  async init(): Promise<void> {
    try {
      const { provider, unavailableReason } = await this.chat.trpc.video.config.query();
      if (this.closed) return;
      if (!provider) {
        this.unavailable = `Meetings are unavailable: ${unavailableReason ?? 'video is not configured on this server'}`;
        return this.setButton(true);
      }
      const list = await this.chat.trpc.video.list.query({ roomId: this.host.roomId });
      if (this.closed) return;
      for (const m of list) this.known.set(m.id, m);
      this.unavailable = null;
      for (const m of list) this.update(m.id);
    } catch (err) {
      if (this.closed) return;
      this.unavailable =
        errorCode(err) === 'PRECONDITION_FAILED' ? `Meetings are unavailable: ${errorText(err)}` : `Meetings are unavailable right now: ${errorText(err)}`;
    }
    this.setButton(true);
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
  }

  /** A meeting card for a message that announces one (filled now if known, else once read). */
  cardEl(meetingId: string): HTMLElement {
    const card = h('div', { class: 'meeting-card', 'data-meeting-id': meetingId, role: 'group', 'aria-label': 'Meeting' });
    this.fill(card, meetingId);
    if (!this.known.has(meetingId)) void this.refresh(meetingId);
    return card;
  }

  /** A message of the room: the meeting system messages refresh the cards of the meetings not ended. */
  onMessage(m: Message) {
    if (m.kind === 'system' && /^Meeting\b/.test(m.body ?? '')) {
      for (const [id, meeting] of this.known) if (meeting.status !== 'ended') void this.refresh(id);
    }
  }

  private setButton(ready: boolean) {
    const b = this.button;
    b.disabled = !ready;
    b.setAttribute('aria-disabled', String(!ready || this.unavailable !== null));
    b.classList.toggle('unavailable', this.unavailable !== null);
    b.title = this.unavailable ?? 'Start a video meeting in this room';
    b.dataset.unavailable = this.unavailable ? 'true' : 'false';
  }

  private async start() {
    // Unavailable: the button stays focusable and explains itself on a click too.
    if (this.unavailable) return toast(this.unavailable);
    this.button.disabled = true;
    try {
      const meeting = await this.chat.trpc.video.create.mutate({ roomId: this.host.roomId });
      this.known.set(meeting.id, meeting);
      // The card everyone in the room sees: a message naming the meeting (its text is the fallback of other clients).
      await this.chat.trpc.chat.send.mutate({
        roomId: this.host.roomId,
        clientId: newClientId(),
        body: '🎥 Started a video meeting: join it from the chat.',
        metadata: { meetingId: meeting.id },
      });
    } catch (err) {
      report(err);
    } finally {
      if (!this.closed) this.button.disabled = false;
    }
  }

  private async join(meetingId: string) {
    try {
      const token = await this.chat.trpc.video.joinToken.mutate({ meetingId });
      window.open(meetingUiUrl(token), '_blank', 'noopener');
      void this.refresh(meetingId);
    } catch (err) {
      report(err);
      void this.refresh(meetingId);
    }
  }

  private async end(meetingId: string) {
    try {
      this.known.set(meetingId, await this.chat.trpc.video.end.mutate({ meetingId }));
      this.update(meetingId);
    } catch (err) {
      report(err);
    }
  }

  private refreshOpen() {
    if (this.closed || document.visibilityState === 'hidden') return;
    for (const [id, meeting] of this.known) {
      if (meeting.status !== 'ended' && document.querySelector(`.meeting-card[data-meeting-id="${id}"]`)) void this.refresh(id);
    }
  }

  private async refresh(meetingId: string) {
    if (this.loading.has(meetingId)) return;
    this.loading.add(meetingId);
    try {
      const meeting = await this.chat.trpc.video.get.query({ meetingId });
      if (this.closed) return;
      this.known.set(meetingId, meeting);
      this.update(meetingId);
    } catch (err) {
      if (this.closed) return;
      for (const card of this.cards(meetingId)) {
        card.querySelector('.meeting-status')!.textContent = errorCode(err) === 'PRECONDITION_FAILED' ? errorText(err) : 'Cannot read this meeting';
      }
    } finally {
      this.loading.delete(meetingId);
    }
  }

  private cards(meetingId: string): HTMLElement[] {
    return [...document.querySelectorAll<HTMLElement>(`.meeting-card[data-meeting-id="${meetingId}"]`)];
  }

  private update(meetingId: string) {
    for (const card of this.cards(meetingId)) this.fill(card, meetingId);
  }

  private fill(card: HTMLElement, meetingId: string) {
    const m = this.known.get(meetingId);
    if (!m) {
      card.replaceChildren(h('div', { class: 'meeting-title' }, '🎥 Meeting'), h('div', { class: 'meeting-status' }, 'Loading…'));
      return;
    }
    const title = m.title ? `🎥 ${m.title}` : '🎥 Video meeting';
    const statusText = m.status === 'ended' ? 'Ended' : m.status === 'live' ? 'Live now' : 'Waiting for people to join';
    const inNow = [...new Set(m.participants.filter((p) => p.leftAt === null).map((p) => p.userId))];
    const people =
      m.status === 'ended'
        ? `${new Set(m.participants.map((p) => p.userId)).size} took part`
        : inNow.length
          ? `In the meeting: ${inNow.map((u) => this.host.nameOf(u)).join(', ')}`
          : 'Nobody has joined yet';
    card.dataset.status = m.status;
    card.setAttribute('aria-label', `${title.slice(3)}: ${statusText}`);
    const actions = h('div', { class: 'meeting-actions' });
    if (m.status !== 'ended') {
      const join = h('button', { type: 'button', class: 'meeting-join' }, 'Join');
      join.addEventListener('click', () => void this.join(m.id));
      actions.append(join);
      if (m.createdBy === this.host.me()) {
        const end = h('button', { type: 'button', class: 'meeting-end secondary' }, 'End');
        end.addEventListener('click', () => void this.end(m.id));
        actions.append(end);
      }
    }
    card.replaceChildren(
      h('div', { class: 'meeting-title' }, title),
      h('div', { class: 'meeting-status', 'data-status': m.status }, statusText),
      h('div', { class: 'meeting-people', 'data-users': inNow.join(',') }, people),
      actions,
    );
  }
}
