import { type Selectable, sql } from 'kysely';
import type { AttachmentDto } from '../domain/events.js';
import { clip } from '../domain/text.js';
import type { Db, Tables } from './database.js';
import { jsonb, now, type Tx } from './tx.js';

/** A row of `file` (src/store/file-entities.ts). */
export type FileRow = Selectable<Tables['file']>;

const FILE_FIELDS = [
  'id',
  'tenant',
  'room_id',
  'uploader_id',
  'name',
  'mime',
  'size',
  'storage_key',
  'state',
  'message_id',
  'width',
  'height',
  'preview',
  'attempts',
  'created_at',
] as const;
export type FileFields = Pick<FileRow, (typeof FILE_FIELDS)[number]>;

export interface NewFile {
  id: string;
  tenant: string;
  roomId: string;
  uploaderId: string;
  name: string;
  mime: string;
  size: number;
  storageKey: string;
}

/**
 * Writes a new upload unless it would take the tenant past `quota` bytes (null: no quota). Tenant
 * quotas are serialized by a transaction-scoped advisory lock, so two uploads cannot both fit in
 * the last free bytes. Returns the bytes the tenant used before, or `{ over }` when refused.
 */
export async function insertUpload(tx: Tx, f: NewFile, quota: number | null): Promise<{ ok: true } | { ok: false; used: number }> {
  if (quota !== null) {
    await tx.advisoryLock('file-quota', f.tenant);
    const used = await tenantBytes(tx.db, f.tenant);
    if (used + f.size > quota) return { ok: false, used };
  }
  await tx.db
    .insertInto('file')
    .values({
      id: f.id,
      tenant: f.tenant,
      room_id: f.roomId,
      uploader_id: f.uploaderId,
      name: f.name,
      mime: f.mime,
      size: f.size,
      storage_key: f.storageKey,
      state: 'uploading',
      created_at: now(),
    })
    .execute();
  return { ok: true };
}

/** Bytes of a tenant's files that are not being removed (uploads count with their declared size). */
export async function tenantBytes(db: Db, tenant: string): Promise<number> {
  const row = await db
    .selectFrom('file')
    .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('size'), sql<number>`0`).as('n'))
    .where('tenant', '=', tenant)
    .where('state', '!=', 'deleting')
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

/** Seconds past an upload URL's expiry before no PUT through it can still be arriving (the nodes' and the bucket's clocks). */
export const UPLOAD_URL_MARGIN_SECONDS = 60;

/**
 * Unsent uploads whose upload URL has expired (plus the clocks' margin), by id after `after`, at
 * most `limit`, of one tenant or of all: no bytes can come for them any more, so one with no object is
 * a ticket that was never used (`releaseUploads`). Rows claimed by a worker are left to it.
 */
export function expiredUploads(
  db: Db,
  tenant: string | null,
  uploadUrlSeconds: number,
  after: string | null,
  limit: number,
): Promise<{ id: string; storage_key: string }[]> {
  return db
    .selectFrom('file')
    .select(['id', 'storage_key'])
    .where('state', '=', 'uploading')
    .$if(tenant !== null, (q) => q.where('tenant', '=', tenant!))
    .$if(after !== null, (q) => q.where('id', '>', after!))
    .where('created_at', '<', sql<Date>`now() - ${uploadUrlSeconds + UPLOAD_URL_MARGIN_SECONDS} * interval '1 second'`)
    .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now())]))
    .orderBy('id')
    .limit(limit)
    .execute();
}

/**
 * Hands unsent uploads whose URL expired without bytes to the file worker for removal: they stop
 * counting toward the tenant's quota now. Only rows still `uploading`, unclaimed and past their
 * URL (a send that attached one meanwhile keeps it). Returns how many.
 */
export async function releaseUploads(db: Db, ids: string[], uploadUrlSeconds: number): Promise<number> {
  if (ids.length === 0) return 0;
  const r = await db
    .updateTable('file')
    .set({ state: 'deleting', name: '', lease_until: null })
    .where('id', 'in', ids)
    .where('state', '=', 'uploading')
    .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now())]))
    .where('created_at', '<', sql<Date>`now() - ${uploadUrlSeconds + UPLOAD_URL_MARGIN_SECONDS} * interval '1 second'`)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

export function fileById(db: Db, id: string): Promise<FileFields | undefined> {
  return db.selectFrom('file').select(FILE_FIELDS).where('id', '=', id).executeTakeFirst();
}

/** A file row locked by a send, with what decides whether the sweep may be removing it. */
export type LockedFile = FileFields & {
  /** Claimed by a file worker (a removal of an unsent upload is then under way, or was tried). */
  claimed: boolean;
  /** Older than `unattachedTtlSeconds` (by the database's clock, as the sweep judges it). */
  expired: boolean;
};

/**
 * The files of a send, locked (step 1 of the lock order: before the room's seq). The sweep claims
 * unsent uploads with FOR UPDATE SKIP LOCKED in a statement of its own, so a row this lock holds
 * is never claimed meanwhile, and a row claimed before shows `claimed`.
 */
export async function lockFiles(tx: Tx, ids: string[], unattachedTtlSeconds: number): Promise<LockedFile[]> {
  tx.lockForUpdate('file');
  if (ids.length === 0) return [];
  return tx.db
    .selectFrom('file')
    .select(FILE_FIELDS)
    .select([
      sql<boolean>`lease_until is not null`.as('claimed'),
      sql<boolean>`created_at < clock_timestamp() - ${unattachedTtlSeconds} * interval '1 second'`.as('expired'),
    ])
    .where('id', 'in', ids)
    .orderBy('id')
    .forUpdate()
    .execute();
}

/** Marks a checked file attached to its message (its found type and size, its preview to make). */
export async function markAttached(tx: Tx, id: string, messageId: string, mime: string, size: number, preview: boolean): Promise<void> {
  await tx.db
    .updateTable('file')
    .set({ state: 'attached', message_id: messageId, mime, size, preview: preview ? 'pending' : null, attached_at: now(), lease_until: null, attempts: 0 })
    .where('id', '=', id)
    .execute();
}

/** Hands the files of these messages to the file worker for removal. Returns how many. */
export async function removeFilesOfMessages(db: Db, messageIds: string[]): Promise<number> {
  if (messageIds.length === 0) return 0;
  const r = await db.updateTable('file').set({ state: 'deleting', lease_until: null }).where('message_id', 'in', messageIds).where('state', '!=', 'deleting').executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** Hands every file of a room (attached or not) to the file worker for removal. */
export async function removeFilesOfRoom(db: Db, roomId: string): Promise<number> {
  const r = await db.updateTable('file').set({ state: 'deleting', lease_until: null }).where('room_id', '=', roomId).where('state', '!=', 'deleting').executeTakeFirst();
  return Number(r.numUpdatedRows);
}

const lease = (ms: number) => sql<Date>`now() + ${ms} * interval '1 millisecond'`;

/**
 * Claims up to `limit` rows whose objects are to be removed: handed over (`deleting`) or uploads
 * never attached within `unattachedTtlSeconds`. FOR UPDATE SKIP LOCKED plus a lease: one worker
 * per row; a worker that dies leaves it to another once the lease ends.
 */
export function claimRemovals(db: Db, limit: number, leaseMs: number, unattachedTtlSeconds: number) {
  return db
    .updateTable('file')
    .set((eb) => ({ attempts: eb('attempts', '+', 1), lease_until: lease(leaseMs) }))
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('file')
        .select('id')
        .where((w) =>
          w.or([
            w('state', '=', 'deleting'),
            w.and([w('state', '=', 'uploading'), w('created_at', '<', sql<Date>`now() - ${unattachedTtlSeconds} * interval '1 second'`)]),
          ]),
        )
        .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now())]))
        .orderBy('created_at')
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    )
    .returning(['id', 'storage_key', 'state', 'attempts'])
    .execute();
}

/**
 * The objects of a removal are gone: the row goes too, unless the file's upload URL (signed for
 * `uploadUrlSeconds` from createUpload) may still be used. Bytes PUT after the removal would then
 * be kept by nobody; instead the row stays (`deleting`, invisible, its name cleared, no quota)
 * and is claimed again once the URL has expired (plus a minute for the nodes' clocks), and that
 * second removal takes whatever came meanwhile. Returns whether the row was kept for that.
 */
export async function finishRemoval(db: Db, id: string, uploadUrlSeconds: number): Promise<'deleted' | 'deferred'> {
  const until = sql<Date>`created_at + ${uploadUrlSeconds + 60} * interval '1 second'`;
  const deferred = await db
    .updateTable('file')
    .set({ state: 'deleting', name: '', lease_until: until })
    .where('id', '=', id)
    .where('state', 'in', ['deleting', 'uploading'])
    .where(until, '>', now())
    .returning('id')
    .executeTakeFirst();
  if (deferred) return 'deferred';
  await deleteFileRow(db, id);
  return 'deleted';
}

/** Claims up to `limit` attached images whose preview is still to be made (like claimRemovals). */
export function claimPreviews(db: Db, limit: number, leaseMs: number) {
  return db
    .updateTable('file')
    .set((eb) => ({ attempts: eb('attempts', '+', 1), lease_until: lease(leaseMs) }))
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('file')
        .select('id')
        .where('preview', '=', 'pending')
        .where('state', '=', 'attached')
        .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now())]))
        .orderBy('attached_at')
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    )
    .returning(['id', 'room_id', 'message_id', 'storage_key', 'mime', 'attempts'])
    .execute();
}

/** A removal is done: the row goes (unless it was given back to an upload meanwhile, which cannot happen). */
export async function deleteFileRow(db: Db, id: string): Promise<void> {
  await db.deleteFrom('file').where('id', '=', id).where((w) => w.or([w('state', '=', 'deleting'), w('state', '=', 'uploading')])).execute();
}

/** A claimed job failed: the lease runs out and another attempt comes later. */
export async function noteFileError(db: Db, id: string, error: string): Promise<void> {
  await db.updateTable('file').set({ last_error: clip(error, 500) }).where('id', '=', id).execute();
}

/**
 * The preview of an attached image is done: the file row, and the attachment inside its message's
 * row (so history shows it). Locks the message first (lock order). False when the file or its
 * message went meanwhile (nothing to announce).
 */
export async function finishPreview(tx: Tx, f: { id: string; messageId: string }, r: { width: number | null; height: number | null; ok: boolean }): Promise<boolean> {
  tx.lockForUpdate('message');
  const message = await tx.db.selectFrom('message').select(['attachments', 'deleted_at']).where('id', '=', f.messageId).forUpdate().executeTakeFirst();
  const file = await tx.db
    .updateTable('file')
    .set({ preview: r.ok ? 'ready' : 'failed', width: r.width, height: r.height, lease_until: null })
    .where('id', '=', f.id)
    .where('state', '=', 'attached')
    .where('preview', '=', 'pending')
    .returning('id')
    .executeTakeFirst();
  if (!file || !message || message.deleted_at) return false;
  const attachments = (message.attachments as AttachmentDto[]).map((a) =>
    'fileId' in a && a.fileId === f.id ? { ...a, width: r.width, height: r.height, thumbnail: r.ok } : a,
  );
  await tx.db.updateTable('message').set({ attachments: jsonb(attachments) }).where('id', '=', f.messageId).execute();
  return true;
}
