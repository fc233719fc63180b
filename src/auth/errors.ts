import type { Actor } from '../domain/actor.js';
import { AppError } from '../domain/errors.js';

/**
 * A token that is refused (UNAUTHORIZED), or that cannot be checked right now because the identity
 * provider's keys cannot be loaded (SERVICE_UNAVAILABLE: retryable, the token may well be valid).
 * The message is meant for the client.
 */
export class AuthError extends AppError {
  /** The token's identity, when it was valid but revoked (for the audit log). */
  readonly actor: Actor | undefined;

  constructor(message: string, opts: { unavailable?: boolean; actor?: Actor; cause?: unknown } = {}) {
    super(opts.unavailable ? 'SERVICE_UNAVAILABLE' : 'UNAUTHORIZED', message);
    this.name = 'AuthError';
    this.actor = opts.actor;
    if (opts.cause !== undefined) this.cause = opts.cause;
  }

  get unavailable(): boolean {
    return this.code === 'SERVICE_UNAVAILABLE';
  }
}
