/**
 * Events a hub fans out to more than one local subscriber. The output transformer and the WebSocket
 * encoder recognise them (by identity) and serialize each one once per process instead of once per
 * subscriber: the hot path of fan-out (ARCHITECTURE section 3).
 */
export const sharedEvents = new WeakSet<object>();
