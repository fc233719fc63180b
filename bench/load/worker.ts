/**
 * A load worker: its own process (spawned by bench/run.ts with an IPC channel), never the server's.
 * It holds lean raw `ws` clients that speak each system's wire protocol directly:
 *
 * - ours: tRPC's WebSocket protocol (`?connectionParams=1`, a connectionParams message, `chat.events`
 *   subscriptions with `lastEventId` on resume, `chat.send` mutations, superjson `{json, meta}`),
 * - socketio: Engine.IO 4 / Socket.IO 5 packets over the websocket transport (`0` open, `40` connect
 *   with auth, `42` events, `43` acks, `2`/`3` ping/pong),
 * - ws: the raw broadcast server's JSON frames (bench/peers/ws-server.ts).
 *
 * Frames are not JSON-parsed: the few fields a benchmark needs (request id, event id/seq, message
 * index, send time in the body) are read with indexOf, so the generator stays cheap next to the server.
 *
 * Subscribers record per message: the latency (receive time minus the send time carried in the
 * body) in an hdr histogram, and the message's key (ours: its seq; peers: the sender's per-room
 * counter) in a per-subscriber table, from which lost and duplicated deliveries are counted
 * against the keys the senders saw acknowledged.
 */
import { randomUUID } from 'node:crypto';
import hdr from 'hdr-histogram-js';
import WebSocket from 'ws';
import { bodySendUs, intAt, makeBody, nowUs } from '../lib/clock.js';
import type {
  CollectResult,
  Command,
  ConnSpec,
  ExpectResult,
  KeyRanges,
  OpenArgs,
  OpenResult,
  ProgressResult,
  Reply,
  Request,
  SendArgs,
  SendResult,
  System,
  WorkerEvent,
} from '../lib/ipc.js';

/** ours: subscription request ids are 1..k per connection, mutation ids start here. */
const MUT_BASE = 1_000_000;
/** The request id of a connection's `inbox.events` subscription (below the mutations, above any room subscription). */
const INBOX_REQ = MUT_BASE - 1;
const RETRYABLE = new Set(['TOO_MANY_REQUESTS', 'SERVICE_UNAVAILABLE', 'INTERNAL_SERVER_ERROR', 'TIMEOUT', 'CLIENT_CLOSED_REQUEST']);

function newHist() {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

// ---------------------------------------------------------------------------------------------
// State of this worker

let system: System = 'ours';
let reconnectEnabled = false;
let clients: Client[] = [];
let subs: Sub[] = [];
let recording = false;
let hist = newHist();
let deliveries = 0;
let lastDeliveryUs = 0;
let reconnects = 0;
let subErrors = 0;
let inboxActivity = 0;
const errorSamples: string[] = [];
function noteError(e: string) {
  if (errorSamples.length < 20) errorSamples.push(e.slice(0, 300));
}

// Watermark: the lowest count of distinct messages over this worker's subscribers.
let wmOn = false;
let wm = 0;
let reached = new Int32Array(1024);
let wmScheduled = false;
function bumpWm(count: number) {
  if (count >= reached.length) {
    const next = new Int32Array(Math.max(count + 1, reached.length * 2));
    next.set(reached);
    reached = next;
  }
  reached[count]!++;
  const n = subs.length;
  let moved = false;
  while (wm + 1 < reached.length && reached[wm + 1] === n) {
    wm++;
    moved = true;
  }
  if (moved && !wmScheduled) {
    wmScheduled = true;
    setImmediate(() => {
      wmScheduled = false;
      emit({ event: 'wm', value: wm });
    });
  }
}

function emit(e: WorkerEvent) {
  try {
    process.send?.(e);
  } catch {
    /* coordinator gone */
  }
}

// ---------------------------------------------------------------------------------------------
// Subscribers

class Sub {
  ready = false;
  /** Subscribed at least once (ours: later subscriptions resume with lastEventId). */
  subscribed = false;
  reqId = 0;
  /** ours: the last tracked event id seen (the resume point). */
  lastId = -1;
  base = -1;
  seen = new Uint8Array(64);
  distinct = 0;
  lastKey = -1;
  outOfOrder = 0;
  stale = 0;
  errors = 0;

  constructor(
    readonly client: Client,
    readonly room: string,
  ) {}

  /** Starts a phase: keys above `base` are this phase's messages. */
  reset() {
    this.base = system === 'ours' ? this.lastId : -1;
    this.seen = new Uint8Array(64);
    this.distinct = 0;
    this.lastKey = this.base;
    this.outOfOrder = 0;
    this.stale = 0;
  }

  deliver(key: number, sendUs: number) {
    if (recording) {
      const now = nowUs();
      deliveries++;
      lastDeliveryUs = now;
      if (sendUs > 0) hist.recordValue(Math.max(1, now - sendUs));
    }
    const i = key - this.base - 1;
    if (i < 0) {
      this.stale++;
      return;
    }
    if (i >= this.seen.length) {
      const next = new Uint8Array(Math.max(i + 1, this.seen.length * 2));
      next.set(this.seen);
      this.seen = next;
    }
    if (this.seen[i] === 0) {
      this.distinct++;
      if (wmOn) bumpWm(this.distinct);
    }
    if (this.seen[i]! < 255) this.seen[i]!++;
    if (key <= this.lastKey) this.outOfOrder++;
    else this.lastKey = key;
  }
}

// ---------------------------------------------------------------------------------------------
// Senders

interface Target {
  client: Client;
  room: string;
}

interface Pending {
  target: Target;
  n: number;
  clientId: string;
  body: string;
  t0: number;
  attempts: number;
  run: SendRun;
}

const roomCounters = new Map<string, number>();

class SendRun {
  readonly targets: Target[] = [];
  rr = 0;
  issued = 0;
  acked = 0;
  errors = 0;
  retries = 0;
  inflight = 0;
  running = true;
  readonly ackHist = newHist();
  readonly ackedKeys = new Map<string, number[]>();
  readonly errorSamples: string[] = [];
  startUs = nowUs();
  lastAckUs = 0;
  readonly wms = new Map<number, number>();
  /** Ends the sending before its duration (stopSend). */
  stopEarly: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private drained: (() => void) | null = null;

  constructor(readonly args: SendArgs) {
    for (const c of clients) for (const room of c.spec.sends) this.targets.push({ client: c, room });
  }

  start() {
    const a = this.args;
    if (this.targets.length === 0) {
      this.running = false;
      return;
    }
    if (a.mode === 'rate') {
      this.timer = setInterval(() => {
        if (!this.running) return;
        const due = Math.floor((a.rate * (nowUs() - this.startUs)) / 1e6) - this.issued;
        for (let k = 0; k < Math.min(due, 2000); k++) this.issue(this.targets[this.rr++ % this.targets.length]!);
      }, 2);
    } else if (a.mode === 'window') {
      this.pump();
    } else {
      for (const t of this.targets) this.issue(t);
    }
  }

  pump() {
    const a = this.args;
    if (a.mode !== 'window' || !this.running) return;
    let min = Infinity;
    for (let i = 0; i < a.sources; i++) min = Math.min(min, this.wms.get(i) ?? 0);
    // Several sender connections (scaleout: one per node) take turns, one message each.
    let guard = 0;
    while (this.running && this.issued - min < a.window && guard++ < 10_000) this.issue(this.targets[this.rr++ % this.targets.length]!);
  }

  issue(target: Target) {
    const n = roomCounters.get(target.room) ?? 0;
    roomCounters.set(target.room, n + 1);
    const t0 = nowUs();
    const p: Pending = { target, n, clientId: randomUUID(), body: makeBody(t0, n), t0, attempts: 0, run: this };
    this.issued++;
    this.inflight++;
    target.client.issue(p);
  }

  onAck(p: Pending, key: number) {
    const now = nowUs();
    this.acked++;
    this.inflight--;
    this.lastAckUs = now;
    this.ackHist.recordValue(Math.max(1, now - p.t0));
    let keys = this.ackedKeys.get(p.target.room);
    if (!keys) {
      keys = [];
      this.ackedKeys.set(p.target.room, keys);
    }
    keys.push(key);
    this.after(p);
  }

  onError(p: Pending, why: string) {
    this.errors++;
    this.inflight--;
    if (this.errorSamples.length < 10) this.errorSamples.push(why.slice(0, 300));
    this.after(p);
  }

  private after(p: Pending) {
    if (this.running && this.args.mode === 'closed') this.issue(p.target);
    if (!this.running && this.inflight === 0) this.drained?.();
  }

  async stopAndDrain(): Promise<SendResult> {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    if (this.inflight > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.args.drainMs);
        this.drained = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const ranges: KeyRanges = {};
    for (const [room, keys] of this.ackedKeys) ranges[room] = toRanges(keys);
    if (this.inflight > 0) this.errorSamples.push(`${this.inflight} sends still unacknowledged after ${this.args.drainMs} ms`);
    return {
      issued: this.issued,
      acked: this.acked,
      errors: this.errors + this.inflight,
      retries: this.retries,
      elapsedUs: Math.max(1, (this.lastAckUs || nowUs()) - this.startUs),
      ackHist: hdr.encodeIntoCompressedBase64(this.ackHist),
      ackedKeys: ranges,
      errorSamples: this.errorSamples,
    };
  }
}

let run: SendRun | null = null;

function toRanges(keys: number[]): [number, number][] {
  const sorted = [...keys].sort((a, b) => a - b);
  const out: [number, number][] = [];
  for (const k of sorted) {
    const last = out[out.length - 1];
    if (last && k <= last[1] + 1) last[1] = Math.max(last[1], k);
    else out.push([k, k]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Connections

class Client {
  ws: WebSocket | null = null;
  open = false;
  closing = false;
  attempts = 0;
  readonly subs: Sub[] = [];
  private readonly subByReq = new Map<number, Sub>();
  private readonly subByRoom = new Map<string, Sub>();
  private nextReq = 1;
  private nextMut = MUT_BASE;
  private readonly pending = new Map<number, Pending>();
  private queue: Pending[] = [];
  private readyResolve: ((ok: boolean) => void) | null = null;
  readonly readyPromise: Promise<boolean>;

  constructor(
    readonly spec: ConnSpec,
    private readonly url: string,
  ) {
    this.readyPromise = new Promise((r) => (this.readyResolve = r));
    for (const room of spec.subs) {
      const s = new Sub(this, room);
      this.subs.push(s);
      this.subByRoom.set(room, s);
    }
  }

  connect() {
    const base = this.url.replace(/^http/, 'ws');
    const u =
      system === 'ours'
        ? `${base}/trpc?connectionParams=1`
        : system === 'socketio'
          ? `${base}/socket.io/?EIO=4&transport=websocket`
          : `${base}/`;
    const ws = new WebSocket(u, { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: 15_000 });
    this.ws = ws;
    ws.on('open', () => {
      if (system === 'ours') {
        ws.send(JSON.stringify({ method: 'connectionParams', data: { token: this.spec.token } }));
        this.handshakeDone();
      } else if (system === 'ws') {
        this.handshakeDone();
      }
      // socketio: wait for the Engine.IO open packet.
    });
    ws.on('message', (data: Buffer) => this.onFrame(data.toString()));
    ws.on('error', (err) => noteError(`socket error: ${err.message}`));
    ws.on('close', () => this.onClose(ws));
  }

  private send(frame: string) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  private handshakeDone() {
    this.open = true;
    this.attempts = 0;
    if (system === 'ours' && this.spec.inbox) {
      this.send(`{"id":${INBOX_REQ},"method":"subscription","params":{"path":"inbox.events","input":{"json":{}}}}`);
    }
    for (const s of this.subs) this.subscribe(s);
    const q = this.queue;
    this.queue = [];
    for (const p of q) this.issue(p);
    this.checkReady();
  }

  private subscribe(s: Sub) {
    const id = this.nextReq++;
    s.reqId = id;
    this.subByReq.set(id, s);
    if (system === 'ours') {
      const resume = s.subscribed && s.lastId >= 0 ? `,"lastEventId":"${s.lastId}"` : '';
      this.send(`{"id":${id},"method":"subscription","params":{"path":"chat.events","input":{"json":{"roomId":"${s.room}"}}${resume}}}`);
    } else if (system === 'socketio') {
      this.send(`42${id}["join",${JSON.stringify(s.room)}]`);
    } else {
      this.send(`{"t":"join","room":${JSON.stringify(s.room)},"id":${id}}`);
    }
  }

  private resubscribeLater(s: Sub, ms: number) {
    setTimeout(() => {
      if (this.open && !this.closing && !s.ready) this.subscribe(s);
    }, ms).unref();
  }

  private checkReady() {
    if (this.readyResolve && this.open && this.subs.every((s) => s.ready)) {
      this.readyResolve(true);
      this.readyResolve = null;
    }
  }

  private markReady(s: Sub) {
    if (!s.ready) {
      s.ready = true;
      s.subscribed = true;
      this.checkReady();
    }
  }

  issue(p: Pending) {
    if (!this.open) {
      this.queue.push(p);
      return;
    }
    p.attempts++;
    const room = p.target.room;
    const body = JSON.stringify(p.body);
    if (system === 'ours') {
      const id = this.nextMut++;
      this.pending.set(id, p);
      this.send(
        `{"id":${id},"method":"mutation","params":{"path":"chat.send","input":{"json":{"roomId":"${room}","clientId":"${p.clientId}","body":${body}}}}}`,
      );
    } else if (system === 'socketio') {
      const id = this.nextReq++;
      this.pending.set(id, p);
      this.send(`42${id}["send",{"room":${JSON.stringify(room)},"n":${p.n},"body":${body}}]`);
    } else {
      const id = this.nextReq++;
      this.pending.set(id, p);
      this.send(`{"t":"send","room":${JSON.stringify(room)},"n":${p.n},"body":${body},"id":${id}}`);
    }
  }

  private acked(id: number, ok: boolean, key: number, why: string, retryable: boolean) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (ok) p.run.onAck(p, key);
    else if (retryable && p.attempts < 50) {
      p.run.retries++;
      setTimeout(() => this.issue(p), 100 * Math.min(p.attempts, 10)).unref();
    } else p.run.onError(p, why);
  }

  private onFrame(s: string) {
    if (system === 'ours') this.onOurs(s);
    else if (system === 'socketio') this.onSocketIO(s);
    else this.onWs(s);
  }

  private onOurs(s: string) {
    if (s.charCodeAt(0) !== 123 /* { */) {
      if (s === 'PING') this.send('PONG');
      return;
    }
    if (s.startsWith('{"id":null')) {
      if (s.includes('"reconnect"')) this.ws?.close(); // the server asks us to move: reconnect and resume
      else {
        subErrors++;
        noteError(`connection error: ${s}`);
      }
      return;
    }
    const id = intAt(s, 6);
    const k = s.indexOf(',', 6) + 1;
    if (id >= MUT_BASE) {
      if (s.startsWith('"result"', k)) {
        const q = s.indexOf('"seq":', k);
        this.acked(id, true, q < 0 ? -1 : intAt(s, q + 6), '', false);
      } else {
        const c = s.indexOf('"data":{"code":"', k);
        const code = c < 0 ? 'UNKNOWN' : s.slice(c + 16, s.indexOf('"', c + 16));
        this.acked(id, false, -1, s, RETRYABLE.has(code));
      }
      return;
    }
    if (id === INBOX_REQ) {
      if (recording && s.includes('"type":"room.activity"', k)) inboxActivity++;
      return;
    }
    const sub = this.subByReq.get(id);
    if (!sub) return;
    if (s.startsWith('"result":{"type":"data"', k)) {
      const j = s.indexOf('"json":{"id":"', k);
      if (j < 0) return;
      const eid = intAt(s, j + 14);
      if (s.indexOf('"type":"message.new"', j) > 0) {
        sub.deliver(eid, bodySendUs(s, j));
      } else if (s.indexOf('"type":"ready"', j) > 0) {
        this.markReady(sub);
      }
      if (eid > sub.lastId) sub.lastId = eid;
    } else if (s.startsWith('"result":{"type":"started"', k)) {
      // A resumed subscription sends no `ready`: it is live once started (replay follows).
      if (sub.subscribed) this.markReady(sub);
    } else if (s.startsWith('"result":{"type":"stopped"', k)) {
      sub.ready = false;
      this.subByReq.delete(id);
      this.resubscribeLater(sub, 200);
    } else if (s.startsWith('"error"', k)) {
      subErrors++;
      sub.errors++;
      noteError(`subscription error: ${s}`);
      this.subByReq.delete(id);
      if (sub.errors < 20) this.resubscribeLater(sub, 500);
    }
  }

  private onSocketIO(s: string) {
    const c0 = s.charCodeAt(0);
    if (c0 === 50 /* 2: ping */) {
      this.send('3');
      return;
    }
    if (c0 === 48 /* 0: open */) {
      this.send(`40${JSON.stringify({ token: this.spec.token })}`);
      return;
    }
    if (c0 === 49 /* 1: close */) {
      this.ws?.close();
      return;
    }
    if (c0 !== 52 /* 4: message */) return;
    const c1 = s.charCodeAt(1);
    if (c1 === 50 /* 2: event */) {
      if (s.startsWith('42["msg",')) this.onPeerMessage(s);
    } else if (c1 === 51 /* 3: ack */) {
      this.onPeerAck(intAt(s, 2), () => !s.includes('"error"'), s);
    } else if (c1 === 48 /* 0: connected */) {
      this.handshakeDone();
    } else if (c1 === 52 /* 4: connect error */) {
      subErrors++;
      noteError(`socket.io connect error: ${s}`);
      this.ws?.close();
    } else if (c1 === 49 /* 1: disconnect */) {
      this.ws?.close();
    }
  }

  /** A peer's ack: of a join (the subscription is ready) or of a send. */
  private onPeerAck(id: number, ok: () => boolean, raw: string) {
    const sub = this.subByReq.get(id);
    if (sub) {
      this.subByReq.delete(id);
      this.markReady(sub);
      return;
    }
    const p = this.pending.get(id);
    if (p) this.acked(id, ok(), p.n, raw, false);
  }

  private onWs(s: string) {
    if (s.startsWith('{"t":"msg"')) {
      this.onPeerMessage(s);
    } else if (s.startsWith('{"t":"ack"')) {
      this.onPeerAck(intAt(s, 16), () => true, '');
    }
  }

  private onPeerMessage(s: string) {
    const r = s.indexOf('"roomId":"');
    if (r < 0) return;
    const room = s.slice(r + 10, s.indexOf('"', r + 10));
    const sub = this.subByRoom.get(room);
    if (!sub) return;
    const n = s.indexOf('"n":', r);
    sub.deliver(intAt(s, n + 4), bodySendUs(s, r));
  }

  private onClose(ws: WebSocket) {
    if (ws !== this.ws) return;
    const wasOpen = this.open;
    this.open = false;
    for (const s of this.subs) s.ready = false;
    this.subByReq.clear();
    // Sends in flight are sent again after the reconnect (ours: same clientId, so never twice).
    const inflight = [...this.pending.values()];
    this.pending.clear();
    if (this.closing) return;
    if (!reconnectEnabled) {
      for (const p of inflight) p.run.onError(p, 'connection closed');
      for (const p of this.queue) p.run.onError(p, 'connection closed');
      this.queue = [];
      if (this.readyResolve) {
        this.readyResolve(false);
        this.readyResolve = null;
      }
      return;
    }
    this.queue.unshift(...inflight);
    if (wasOpen) reconnects++;
    this.attempts++;
    const delay = Math.min(1000, 50 * 2 ** Math.min(this.attempts, 6)) * (0.5 + Math.random() / 2);
    setTimeout(() => {
      if (!this.closing) this.connect();
    }, delay).unref();
  }

  close() {
    this.closing = true;
    this.open = false;
    try {
      this.ws?.terminate();
    } catch {
      /* already closed */
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

async function open(a: OpenArgs): Promise<OpenResult> {
  const t0 = Date.now();
  system = a.system;
  reconnectEnabled = a.reconnect;
  const batch = a.conns.map((spec) => new Client(spec, a.url));
  clients.push(...batch);
  for (const c of batch) subs.push(...c.subs);
  const deadline = t0 + a.timeoutMs;
  let next = 0;
  const lane = async () => {
    while (next < batch.length && Date.now() < deadline) {
      const c = batch[next++]!;
      c.connect();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([c.readyPromise, new Promise((r) => (timer = setTimeout(r, Math.max(1, Math.min(15_000, deadline - Date.now())))))]);
      clearTimeout(timer);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(a.parallel, batch.length)) }, lane));
  // With reconnects on, stragglers may still make it before the deadline.
  while (Date.now() < deadline && batch.some((c) => !c.open || c.subs.some((s) => !s.ready))) await sleep(50);
  return {
    conns: batch.length,
    open: batch.filter((c) => c.open).length,
    subs: batch.reduce((n, c) => n + c.subs.length, 0),
    ready: batch.reduce((n, c) => n + c.subs.filter((s) => s.ready).length, 0),
    errors: errorSamples.slice(0, 5),
    elapsedMs: Date.now() - t0,
  };
}

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

function progress(): ProgressResult {
  return {
    deliveries,
    distinct: subs.reduce((n, s) => n + s.distinct, 0),
    lastDeliveryUs,
    subs: subs.length,
    ready: subs.filter((s) => s.ready).length,
    conns: clients.length,
    open: clients.filter((c) => c.open).length,
    reconnects,
    subErrors,
  };
}

function expect(rooms: KeyRanges): ExpectResult {
  const r: ExpectResult = { subs: 0, lost: 0, duplicated: 0, unexpected: 0, outOfOrder: 0, subsWithLoss: 0 };
  for (const s of subs) {
    const ranges = rooms[s.room];
    if (!ranges) continue;
    r.subs++;
    let lost = 0;
    let expected = 0;
    const isExpected = new Uint8Array(s.seen.length);
    for (const [from, to] of ranges) {
      for (let k = Math.max(from, s.base + 1); k <= to; k++) {
        const i = k - s.base - 1;
        expected++;
        if (i >= s.seen.length || s.seen[i] === 0) lost++;
        if (i < isExpected.length) isExpected[i] = 1;
      }
    }
    for (let i = 0; i < s.seen.length; i++) {
      const c = s.seen[i]!;
      if (c > 1) r.duplicated += c - 1;
      if (c > 0 && !isExpected[i]) r.unexpected += c;
    }
    r.lost += lost;
    r.outOfOrder += s.outOfOrder;
    if (lost > 0) r.subsWithLoss++;
    void expected;
  }
  return r;
}

async function handle(c: Command): Promise<unknown> {
  switch (c.cmd) {
    case 'open':
      return open(c.args);
    case 'phase': {
      recording = true;
      hist = newHist();
      deliveries = 0;
      lastDeliveryUs = 0;
      reconnects = 0;
      subErrors = 0;
      inboxActivity = 0;
      for (const s of subs) s.reset();
      wm = 0;
      reached = new Int32Array(1024);
      reached[0] = subs.length;
      wmOn = c.args.watermark;
      roomCounters.clear();
      return { subs: subs.length };
    }
    case 'progress':
      return progress();
    case 'collect': {
      recording = false;
      const r: CollectResult = { deliveries, hist: hdr.encodeIntoCompressedBase64(hist), reconnects, subErrors, inboxActivity };
      return r;
    }
    case 'expect':
      return expect(c.rooms);
    case 'behind': {
      let behind = 0;
      for (const s of subs) {
        const want = c.counts[s.room];
        if (want !== undefined && s.distinct < want) behind++;
      }
      return { behind };
    }
    case 'send': {
      run = new SendRun(c.args);
      const r = run;
      r.start();
      await Promise.race([sleep(c.args.durationMs), new Promise<void>((res) => (r.stopEarly = res))]);
      const result = await r.stopAndDrain();
      run = null;
      return result;
    }
    case 'stopSend': {
      run?.stopEarly?.();
      return null;
    }
    case 'ackedCounts': {
      const out: Record<string, number> = {};
      if (run) for (const [room, keys] of run.ackedKeys) out[room] = keys.length;
      return out;
    }
    case 'wm': {
      if (run) {
        run.wms.set(c.from, c.value);
        run.pump();
      }
      return null;
    }
    case 'close': {
      for (const cl of clients) cl.close();
      clients = [];
      subs = [];
      recording = false;
      wmOn = false;
      return null;
    }
  }
}

process.on('message', (msg: Request) => {
  if (msg.cmd === 'wm') {
    // Flow control relayed from the subscriber workers: no reply.
    void handle(msg);
    return;
  }
  void handle(msg).then(
    (result) => reply({ id: msg.id, ok: true, result }),
    (err: unknown) => reply({ id: msg.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});

function reply(r: Reply) {
  try {
    process.send?.(r);
  } catch {
    /* coordinator gone */
  }
}

// The coordinator owns this process: when it goes, so do we.
process.on('disconnect', () => process.exit(0));
emit({ event: 'hello' });
