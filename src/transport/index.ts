/**
 * A WebSocket transport for any tRPC v11 router: a drop-in for `applyWSSHandler` of
 * `@trpc/server/adapters/ws` with a fan-out fast path (README.md in this folder).
 * Nothing in this folder imports from the application around it.
 */
export { applyWSSHandler, getWSConnectionHandler, type WsTransport } from './transport.js';
export { callProcedure, chainOf, type CallOptions } from './call.js';
export { frameHead, trackedTail, writeTextFrame, type FrameWriteCounters, type Serialize } from './frames.js';
export { isPushable, PUSH, type Pushable, type PushSink, type SharedFrame } from './push.js';
export type { TransportErrorInfo, TransportExtraOptions, TransportOptions } from './protocol.js';
