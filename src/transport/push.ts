/**
 * The push protocol: a subscription can hand the transport a value that writes its values
 * straight to a sink instead of being pulled as an async iterator (see `Pushable`). Nothing here
 * imports anything: a stream engine implements it without depending on tRPC or on the transport.
 */

/** Marks a stream that can write its values straight to a sink (see `Pushable`). */
export const PUSH: unique symbol = Symbol.for('trpc-ws-transport.push') as never;

/**
 * One value delivered to many subscribers, given with the value to every sink. The transport that
 * encodes it first keeps the bytes here with the event id they were built for (`id`, `bytes`);
 * the others reuse them, so a fanned-out event is serialized once per process, not per subscriber.
 */
export interface SharedFrame {
  readonly event: unknown;
  id: string | null;
  bytes: Buffer | null;
}

/**
 * Where a pushed stream writes: each value, then one end (with the error that ended it, if any).
 * A value fanned out to several subscribers comes with its `shared` encoding.
 */
export interface PushSink<T> {
  data(value: T, shared?: SharedFrame): void;
  end(error?: unknown): void;
}

/**
 * A stream that can be consumed two ways: pulled as an async iterator (`createCaller`, any tRPC
 * adapter) or pushed into a sink (this transport), where a value goes from the producer's fan-out
 * loop to the socket synchronously, with no per-subscriber promise or generator step.
 */
export interface Pushable<T> extends AsyncIterable<T> {
  [PUSH](sink: PushSink<T>): void;
}

export function isPushable<T>(value: unknown): value is Pushable<T> {
  return !!value && typeof value === 'object' && PUSH in value;
}
