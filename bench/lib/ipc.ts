/** Messages between the coordinator (bench/run.ts) and the load workers (bench/load/worker.ts). */

export type System = 'ours' | 'socketio' | 'ws';

/** One client connection of a worker: who it is, which rooms it subscribes to and sends to. */
export interface ConnSpec {
  user: string;
  /** HS256 access token (ours and Socket.IO check it; the raw ws server has no auth). */
  token: string;
  subs: string[];
  sends: string[];
  /** ours: also holds `inbox.events` open (the room list's feed), counting its `room.activity`. */
  inbox?: boolean;
}

export interface OpenArgs {
  system: System;
  /** http://127.0.0.1:PORT of the server this batch connects to. */
  url: string;
  conns: ConnSpec[];
  /** Connection attempts in flight at once. */
  parallel: number;
  timeoutMs: number;
  /** Reconnect (and, for ours, resume with lastEventId) when the server closes a socket. */
  reconnect: boolean;
}

export interface OpenResult {
  conns: number;
  open: number;
  subs: number;
  ready: number;
  errors: string[];
  elapsedMs: number;
}

export interface PhaseArgs {
  /** Report the lowest per-subscriber count of distinct messages (window mode flow control). */
  watermark: boolean;
}

export interface ProgressResult {
  deliveries: number;
  distinct: number;
  /** hrtime µs of the last delivery (0: none yet). */
  lastDeliveryUs: number;
  subs: number;
  ready: number;
  conns: number;
  open: number;
  reconnects: number;
  subErrors: number;
}

export interface CollectResult {
  deliveries: number;
  /** hdr histogram of delivery latency in µs, compressed base64. */
  hist: string;
  reconnects: number;
  subErrors: number;
  /** `room.activity` events received on inbox subscriptions during the phase. */
  inboxActivity: number;
}

/** Per room: the keys that were acknowledged, as sorted inclusive ranges [from, to]. */
export type KeyRanges = Record<string, [number, number][]>;

export interface ExpectResult {
  subs: number;
  lost: number;
  duplicated: number;
  /** Deliveries whose key was never acknowledged to a sender (e.g. a send that timed out). */
  unexpected: number;
  /** ours: events whose seq was not above the last one (order violations). */
  outOfOrder: number;
  subsWithLoss: number;
}

export type SendMode =
  /** Open loop: `rate` messages per second in total, round-robin over the send targets. */
  | { mode: 'rate'; rate: number }
  /** Closed loop on delivery: at most `window` messages not yet delivered to every subscriber. */
  | { mode: 'window'; window: number; sources: number }
  /** Closed loop on acks: each send target keeps one message in flight. */
  | { mode: 'closed' };

export type SendArgs = SendMode & { durationMs: number; drainMs: number };

export interface SendResult {
  issued: number;
  acked: number;
  errors: number;
  retries: number;
  /** First send to last ack, µs. */
  elapsedUs: number;
  /** Ack latency in µs (first attempt to ack), compressed base64. */
  ackHist: string;
  ackedKeys: KeyRanges;
  errorSamples: string[];
}

export type Command =
  | { cmd: 'open'; args: OpenArgs }
  | { cmd: 'phase'; args: PhaseArgs }
  | { cmd: 'progress' }
  | { cmd: 'collect' }
  | { cmd: 'expect'; rooms: KeyRanges }
  | { cmd: 'behind'; counts: Record<string, number> }
  | { cmd: 'send'; args: SendArgs }
  | { cmd: 'stopSend' }
  | { cmd: 'ackedCounts' }
  | { cmd: 'wm'; from: number; value: number }
  | { cmd: 'close' };

export type Request = Command & { id: number };
export type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };
export type WorkerEvent = { event: 'wm'; value: number } | { event: 'hello' };
