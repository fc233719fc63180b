/**
 * Time and message bodies shared by senders and subscribers in different processes.
 *
 * Timestamps are CLOCK_MONOTONIC microseconds (`process.hrtime`), one clock for every process of
 * the machine, so a send time written by one process and a receive time read by another subtract.
 */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

const FILLER = ' lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore';

/**
 * A chat message body of about 100 characters that carries its send time and its per-room index:
 * `b<sendUs>:<n>: lorem ipsum...`. The same body goes to every system.
 */
export function makeBody(sendUs: number, n: number): string {
  const head = `b${sendUs}:${n}:`;
  return head + FILLER.slice(0, Math.max(0, 100 - head.length));
}

/** Parses the unsigned integer that starts at `from` in `s` (-1 when there is none). */
export function intAt(s: string, from: number): number {
  let v = 0;
  let i = from;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) break;
    v = v * 10 + c;
  }
  return i === from ? -1 : v;
}

/** The send time (µs) of a body found in a frame: the digits after `"body":"b`. */
export function bodySendUs(frame: string, from = 0): number {
  const i = frame.indexOf('"body":"b', from);
  return i < 0 ? -1 : intAt(frame, i + 9);
}
