/** Who is calling: resolved from the access token's claims. */
export interface Actor {
  id: string;
  name: string;
  tenant: string;
  roles: string[];
  /** The token's e-mail address (AUTH_EMAIL_CLAIM), when it carries a valid one: e-mail digests go there. */
  email?: string;
  /** Token expiry, seconds since the epoch. */
  exp?: number;
  /** Token issue time, seconds since the epoch (revocation compares against it). */
  iat?: number;
}

export const isAdmin = (a: Actor) => a.roles.includes('admin');
export const isService = (a: Actor) => a.roles.includes('service');
/** The deployment's operator (node-wide statistics): a role of the identity provider, above tenants. */
export const isOperator = (a: Actor) => a.roles.includes('operator');
/** The tenant's integration: its admins and service tokens (webhooks, notifications to others). */
export const isIntegration = (a: Actor) => isAdmin(a) || isService(a);

/** True once the token's exp has passed (an actor without exp never expires). */
export const isExpired = (a: Actor, nowMs = Date.now()) => a.exp !== undefined && a.exp * 1000 <= nowMs;
