/**
 * A 1:1 audio/video call between the two members of a direct room: plain WebRTC in the browsers,
 * signaled through the server (`signal.send` out, `signal` events of `inbox.events` in), with the
 * ICE servers the server hands out (`signal.config`).
 *
 * Caller: media, an RTCPeerConnection with a data channel, an `offer`, then ringing until an
 * `answer` (or a `hangup`: declined, busy; or 30 s without an answer). Callee: the offer rings;
 * accept answers it, decline hangs up. ICE candidates trickle both ways (a queue holds those that
 * come before the remote description). Either side hangs up with `hangup`; a page that goes away
 * sends one on `pagehide`, and its data channel closing ends the call on the other side even when
 * that signal is lost. One call at a time: an offer during a call is answered `busy`.
 */
import { type ChatClient, type InboxEventOf, newClientId, type RouterOutputs } from '../../client/index.js';
import { $, errorText, report, toast } from './dom.js';

type Signal = InboxEventOf<'signal'>;
type RtcConfig = RouterOutputs['signal']['config'];
type Phase = 'idle' | 'calling' | 'ringing' | 'connecting' | 'connected';

/** An unanswered call gives up after this long (both sides). */
const RING_MS = 30_000;
/** A connection that stays `disconnected` this long is over. */
const DISCONNECTED_MS = 8000;
/** The ICE servers are asked for again this long before their TURN credential expires (`expiresAt`). */
const ICE_RENEW_MS = 60_000;

interface Call {
  id: string;
  roomId: string;
  peer: string;
  role: 'caller' | 'callee';
  phase: Phase;
  pc: RTCPeerConnection | null;
  /** The data channel between the two pages (open once connected). */
  channel: RTCDataChannel | null;
  local: MediaStream | null;
  /** The callee's offer, kept until accept. */
  offer: string | null;
  /** Remote candidates that came before the remote description. */
  queued: RTCIceCandidateInit[];
  timer: ReturnType<typeof setTimeout> | undefined;
}

const payloadOf = (s: Signal) => (s.payload && typeof s.payload === 'object' ? (s.payload as Record<string, unknown>) : {});

export class CallManager {
  private call: Call | null = null;
  private rtcConfig: Promise<RtcConfig> | null = null;
  private readonly el = $('call');
  private readonly status = $('call-status');
  private readonly remote = $<HTMLVideoElement>('call-remote');
  private readonly local = $<HTMLVideoElement>('call-local');

  constructor(
    private readonly chat: ChatClient,
    private readonly nameOf: (userId: string) => string,
  ) {
    $('call-accept').onclick = () => void this.accept();
    $('call-decline').onclick = () => this.hangup('declined');
    $('call-hangup').onclick = () => this.hangup('hangup');
    window.addEventListener('pagehide', this.onPageHide);
  }

  get busy(): boolean {
    return this.call !== null;
  }

  dispose() {
    window.removeEventListener('pagehide', this.onPageHide);
    if (this.call) this.hangup('hangup');
  }

  /** Calls the other member of a direct room. */
  async start(roomId: string, peer: string) {
    if (this.call) return toast('You are already in a call.');
    const call: Call = { id: `c-${newClientId()}`, roomId, peer, role: 'caller', phase: 'calling', pc: null, channel: null, local: null, offer: null, queued: [], timer: undefined };
    this.call = call;
    this.show(`Calling ${this.nameOf(peer)}…`);
    try {
      const pc = await this.connect(call);
      if (this.call !== call) return;
      this.watchChannel(call, pc.createDataChannel('call'));
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      if (this.call !== call) return;
      await this.signal(call, 'offer', { sdp: offer.sdp ?? '' });
      call.timer = setTimeout(() => {
        if (this.call === call && call.phase === 'calling') this.hangup('timeout', `${this.nameOf(peer)} did not answer.`);
      }, RING_MS);
    } catch (err) {
      if (this.call === call) this.end(`Call failed: ${errorText(err)}`, true);
    }
  }

  /** A `signal` event of the inbox. */
  onSignal(s: Signal) {
    const p = payloadOf(s);
    const callId = typeof p.callId === 'string' ? p.callId : null;
    const call = this.call;
    if (s.signal === 'offer') {
      if (!callId || typeof p.sdp !== 'string') return;
      if (call) {
        if (call.id === callId) return;
        // One call at a time: the caller hears "busy".
        void this.chat.trpc.signal.send.mutate({ roomId: s.roomId, toUserId: s.from, type: 'hangup', payload: { reason: 'busy', callId } }).catch(() => undefined);
        toast(`Missed call from ${this.nameOf(s.from)} (you were in a call).`);
        return;
      }
      const incoming: Call = { id: callId, roomId: s.roomId, peer: s.from, role: 'callee', phase: 'ringing', pc: null, channel: null, local: null, offer: p.sdp, queued: [], timer: undefined };
      this.call = incoming;
      incoming.timer = setTimeout(() => {
        if (this.call === incoming && incoming.phase === 'ringing') this.end(`Missed call from ${this.nameOf(s.from)}.`, false);
      }, RING_MS);
      this.show(`${this.nameOf(s.from)} is calling…`);
      $('call-accept').focus();
      return;
    }
    // Everything else belongs to the current call, from its peer.
    if (!call || call.id !== callId || call.peer !== s.from) return;
    switch (s.signal) {
      case 'answer':
        if (call.role === 'caller' && call.pc && typeof p.sdp === 'string') void this.answered(call, p.sdp);
        return;
      case 'ice':
        if (typeof p.candidate === 'string') void this.addIce(call, p as unknown as RTCIceCandidateInit);
        return;
      case 'hangup': {
        const who = this.nameOf(call.peer);
        const reason = p.reason;
        this.end(
          reason === 'left'
            ? `${who} left the call.`
            : reason === 'busy'
            ? `${who} is busy in another call.`
            : reason === 'declined'
              ? `${who} declined the call.`
              : call.phase === 'ringing'
                ? `Missed call from ${who}.`
                : `${who} hung up.`,
          false,
        );
        return;
      }
    }
  }

  /** Ends the call and tells the other side (`reason`: hangup, declined, timeout). */
  hangup(reason: 'hangup' | 'declined' | 'timeout', text = 'Call ended.') {
    const call = this.call;
    if (!call) return;
    this.sendHangup(call, reason);
    this.end(text, false);
  }

  private onPageHide = () => {
    // Best effort: the other side also sees the data channel close.
    const call = this.call;
    if (call) this.sendHangup(call, 'left');
  };

  /**
   * The hangup goes over the data channel when it is open (it arrives before the channel closes,
   * so the other side learns why) and through the server in any case (before the channel opens).
   */
  private sendHangup(call: Call, reason: string) {
    if (call.channel?.readyState === 'open') {
      try {
        call.channel.send(JSON.stringify({ type: 'hangup', reason }));
      } catch {
        // closing already: the signal below still goes
      }
    }
    void this.signal(call, 'hangup', { reason }).catch(() => undefined);
  }

  private async accept() {
    const call = this.call;
    if (call?.role !== 'callee' || call.phase !== 'ringing' || !call.offer) return;
    clearTimeout(call.timer);
    call.phase = 'connecting';
    this.show(`Connecting to ${this.nameOf(call.peer)}…`);
    try {
      const pc = await this.connect(call);
      if (this.call !== call) return;
      pc.ondatachannel = (e) => this.watchChannel(call, e.channel);
      await pc.setRemoteDescription({ type: 'offer', sdp: call.offer });
      await this.flushIce(call);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      if (this.call !== call) return;
      await this.signal(call, 'answer', { sdp: answer.sdp ?? '' });
    } catch (err) {
      if (this.call === call) this.hangup('hangup', `Call failed: ${errorText(err)}`);
    }
  }

  private async answered(call: Call, sdp: string) {
    clearTimeout(call.timer);
    call.phase = 'connecting';
    this.show(`Connecting to ${this.nameOf(call.peer)}…`);
    try {
      await call.pc!.setRemoteDescription({ type: 'answer', sdp });
      await this.flushIce(call);
    } catch (err) {
      if (this.call === call) this.hangup('hangup', `Call failed: ${errorText(err)}`);
    }
  }

  /** `signal.config`, kept until shortly before its TURN credential expires (or it fails). */
  private async iceConfig(): Promise<RtcConfig> {
    const cached = this.rtcConfig && (await this.rtcConfig.catch(() => null));
    if (cached && (!cached.expiresAt || cached.expiresAt.getTime() - Date.now() > ICE_RENEW_MS)) return cached;
    const fetching = this.chat.trpc.signal.config.query();
    this.rtcConfig = fetching;
    fetching.catch(() => {
      if (this.rtcConfig === fetching) this.rtcConfig = null;
    });
    return fetching;
  }

  /** Media and a peer connection with the server's ICE servers, its events wired to this call. */
  private async connect(call: Call): Promise<RTCPeerConnection> {
    const [{ iceServers }, local] = await Promise.all([this.iceConfig(), this.media()]);
    if (this.call !== call) {
      for (const t of local.getTracks()) t.stop();
      throw new Error('the call ended');
    }
    call.local = local;
    this.local.srcObject = local;
    const pc = new RTCPeerConnection({ iceServers });
    call.pc = pc;
    for (const track of local.getTracks()) pc.addTrack(track, local);
    pc.onicecandidate = (e) => {
      const c = e.candidate;
      // null: gathering is complete (sent as the empty end-of-candidates candidate).
      const payload = c
        ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment }
        : { candidate: '' };
      void this.signal(call, 'ice', payload).catch(() => undefined);
    };
    pc.ontrack = (e) => {
      if (this.call !== call) return;
      this.remote.srcObject = e.streams[0] ?? new MediaStream([e.track]);
      if (e.track.kind === 'video') this.el.dataset.remoteVideo = 'true';
    };
    pc.onconnectionstatechange = () => {
      if (this.call !== call) return;
      const state = pc.connectionState;
      this.el.dataset.pc = state;
      if (state === 'connected') {
        clearTimeout(call.timer);
        call.phase = 'connected';
        this.show(`In a call with ${this.nameOf(call.peer)}`);
      } else if (state === 'failed') this.hangup('hangup', 'The call lost its connection.');
      else if (state === 'disconnected') {
        clearTimeout(call.timer);
        call.timer = setTimeout(() => {
          if (this.call === call && pc.connectionState === 'disconnected') this.hangup('hangup', 'The call lost its connection.');
        }, DISCONNECTED_MS);
      }
    };
    return pc;
  }

  /** Camera and microphone; microphone only when there is no camera. */
  private async media(): Promise<MediaStream> {
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    } catch {
      return navigator.mediaDevices.getUserMedia({ audio: true });
    }
  }

  /** The data channel closes when the other page goes away: the call is over. */
  private watchChannel(call: Call, channel: RTCDataChannel) {
    call.channel = channel;
    channel.onmessage = (e) => {
      if (this.call !== call || typeof e.data !== 'string') return;
      try {
        const msg = JSON.parse(e.data) as { type?: unknown; reason?: unknown };
        if (msg.type === 'hangup') this.onSignal({ type: 'signal', roomId: call.roomId, from: call.peer, signal: 'hangup', payload: { reason: msg.reason, callId: call.id } });
      } catch {
        // not ours
      }
    };
    channel.onclose = () => {
      if (this.call === call) this.end(`${this.nameOf(call.peer)} left the call.`, false);
    };
  }

  private async addIce(call: Call, c: RTCIceCandidateInit) {
    if (!call.pc?.remoteDescription) {
      call.queued.push(c);
      return;
    }
    await call.pc.addIceCandidate(c.candidate === '' ? null : c).catch(() => undefined);
  }

  private async flushIce(call: Call) {
    const queued = call.queued.splice(0);
    for (const c of queued) await this.addIce(call, c);
  }

  private signal(call: Call, type: 'offer' | 'answer', payload: { sdp: string }): Promise<unknown>;
  private signal(call: Call, type: 'ice', payload: { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null; usernameFragment?: string | null }): Promise<unknown>;
  private signal(call: Call, type: 'hangup', payload: { reason: string }): Promise<unknown>;
  private signal(call: Call, type: 'offer' | 'answer' | 'ice' | 'hangup', payload: Record<string, unknown>): Promise<unknown> {
    const base = { roomId: call.roomId, toUserId: call.peer };
    const p = { ...payload, callId: call.id };
    switch (type) {
      case 'offer':
      case 'answer':
        return this.chat.trpc.signal.send.mutate({ ...base, type, payload: p as { sdp: string; callId: string } });
      case 'ice':
        return this.chat.trpc.signal.send.mutate({ ...base, type, payload: p as { candidate: string; callId: string } });
      case 'hangup':
        return this.chat.trpc.signal.send.mutate({ ...base, type, payload: p as { reason: string; callId: string } });
    }
  }

  /** Shows the call bar in the current phase. */
  private show(text: string) {
    const call = this.call;
    this.el.hidden = false;
    this.el.dataset.state = call?.phase ?? 'idle';
    this.el.dataset.role = call?.role ?? '';
    this.el.dataset.peer = call?.peer ?? '';
    this.status.textContent = text;
    const ringing = call?.role === 'callee' && call.phase === 'ringing';
    $('call-accept').hidden = !ringing;
    $('call-decline').hidden = !ringing;
    $('call-hangup').hidden = !call || ringing;
  }

  /** Tears the call down (media, connection, bar) and says why. */
  private end(text: string, error: boolean) {
    const call = this.call;
    if (!call) return;
    this.call = null;
    clearTimeout(call.timer);
    call.pc?.close();
    for (const t of call.local?.getTracks() ?? []) t.stop();
    this.remote.srcObject = null;
    this.local.srcObject = null;
    this.el.hidden = true;
    this.el.dataset.state = 'idle';
    delete this.el.dataset.pc;
    delete this.el.dataset.remoteVideo;
    this.status.textContent = '';
    if (error) report(new Error(text));
    else toast(text);
  }
}
