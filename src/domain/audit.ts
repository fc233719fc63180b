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
