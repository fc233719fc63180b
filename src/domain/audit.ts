/**
 * The actions of the durable audit trail (`audit_event`, `admin.audit`; docs/SECURITY.md,
 * "Compliance"). Each is written in the transaction of the action it records.
 */
export const AUDIT_ACTIONS = [
  'member.add',
  'member.remove',
  'member.set_role',
  'member.mute',
  'member.unmute',
  'member.ban',
  'member.unban',
  'room.archive',
  'room.unarchive',
  'room.set_retention',
  'room.set_visibility',
  'room.delete',
  'session.revoke',
  'user.export',
  'room.export',
  'user.erase',
  'webhook.create',
  'webhook.update',
  'webhook.delete',
  'webhook.rotate_secret',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/**
 * An `admin.audit` cursor (its `nextCursor`): the time of the page's last event in milliseconds and
 * that event's id, a UUID (in PostgreSQL's form: lowercase, with hyphens).
 */
export const AUDIT_CURSOR = /^(\d{1,15})_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

/** One entry of the audit trail as `admin.audit` answers it. */
export interface AuditEventDto {
  id: string;
  at: Date;
  actorId: string;
  action: AuditAction;
  roomId: string | null;
  targetId: string | null;
  data: Record<string, unknown>;
}
