import { defineEntity, p } from '@mikro-orm/core';

/**
 * An uploaded file (listed in `entities`, src/store/entities.ts). Its bytes live in the storage
 * (local folder or S3) under `storageKey` (`<tenant hash>/<id>`, never the name); the thumbnail
 * under `<storageKey>.thumb`.
 *
 * `state`: `uploading` (createUpload; removed after FILE_UNATTACHED_TTL_SECONDS if never sent) ->
 * `attached` (checked and attached to one message, once) -> `deleting` (its message, room or
 * retention removed it; the file worker deletes the objects, then the row). No foreign keys: a
 * row outlives its message and room until its objects are gone.
 * `preview`: null (not an image), `pending` (a thumbnail to make), `ready`, `failed`.
 * `leaseUntil`: claimed by a node's file worker until then (FOR UPDATE SKIP LOCKED).
 */
export const StoredFile = defineEntity({
  name: 'StoredFile',
  tableName: 'file',
  properties: {
    id: p.uuid().primary(),
    tenant: p.string().length(64),
    roomId: p.uuid(),
    uploaderId: p.string().length(128),
    name: p.string().length(255),
    /** The type declared at createUpload; replaced by the sniffed one at attach. */
    mime: p.string().length(127),
    size: p.bigint('number'),
    storageKey: p.string().length(200),
    state: p.string().length(16).default('uploading'),
    messageId: p.uuid().nullable(),
    width: p.integer().nullable(),
    height: p.integer().nullable(),
    preview: p.string().length(16).nullable(),
    attempts: p.integer().default(0),
    leaseUntil: p.datetime().nullable(),
    lastError: p.string().length(500).nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    attachedAt: p.datetime().nullable(),
  },
  indexes: [
    /** The worker's scans: old uploads, removals. */
    { name: 'file_state_created_at_idx', properties: ['state', 'createdAt'] },
    /** The tenant's quota (sum of sizes). */
    { name: 'file_tenant_idx', properties: ['tenant'] },
    { name: 'file_message_idx', properties: ['messageId'] },
    { name: 'file_room_idx', properties: ['roomId'] },
    /** Thumbnails to make. */
    { name: 'file_preview_idx', properties: ['preview'] },
  ],
  checks: [
    { name: 'file_state_check', expression: `"state" in ('uploading', 'attached', 'deleting')` },
    { name: 'file_preview_check', expression: `"preview" in ('pending', 'ready', 'failed')` },
  ],
});
