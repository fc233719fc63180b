/**
 * WebSocket close codes the server uses (documented in docs/SECURITY.md). Clients reconnect after
 * all of them except 4003 (and 4001, unless they have a fresh token).
 */
export const CloseCode = {
  /** The access token expired on the open connection: reconnect with a fresh token. */
  TokenExpired: 4001,
  /** The user's sessions were revoked by an admin. */
  Revoked: 4003,
  /**
   * `auth.refresh` swapped in a token with fewer roles: the connection's subscriptions were opened
   * with the old ones. Reconnect (with the new token): every subscription is checked again.
   */
  RolesChanged: 4010,
  /** Too much data queued for a slow reader: reconnect and resume (nothing durable is lost). */
  SlowConsumer: 4008,
  /** Too many concurrent connections for this user or address. */
  TooManyConnections: 4029,
  /** The server is shutting down (clients were told to reconnect elsewhere first). */
  GoingAway: 1001,
} as const;
