import { keyOf } from '../../domain/ids.js';
import { createHash, randomUUID } from 'node:crypto';
import type { FilesConfig } from '../../config.js';
import type { Actor } from '../../domain/actor.js';
import { AppError, badRequest, forbidden, notFound } from '../../domain/errors.js';
import type { AttachmentDto, FileAttachmentDto, LinkAttachmentDto } from '../../domain/events.js';
import type { FileDto, UploadTicket } from '../../domain/files.js';
import { can } from '../../domain/permissions.js';
import { type FileFields, fileById, insertUpload, lockFiles, markAttached } from '../../store/files.js';
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import type { AccessService } from '../access.js';
import type { RateLimits } from '../limits.js';
import { canonicalMime, checkContent, hasPreview, isInline, SNIFF_BYTES } from './content.js';
import { type FileStorage, THUMB_SUFFIX, UPLOAD_SUFFIX } from './storage.js';
import { releaseUnusedUploads } from './unused.js';

export interface CreateUploadInput {
  roomId: string;
  name: string;
  size: number;
  mime: string;
}

/** What a send gives as an attachment: an uploaded file by id, or an https link. */
export type AttachmentInput = { fileId: string } | LinkAttachmentDto;

/** A file of a send after its bytes were checked (in the send's transaction). */
export interface CheckedFile {
  id: string;
  size: number;
  mime: string;
  preview: boolean;
}

/** A send's attachments as stored, and the files to attach in its transaction. */
export interface PreparedAttachments {
  attachments: AttachmentDto[];
  files: CheckedFile[];
}

/** Expired tickets of a tenant looked at, at most, when its quota refuses an upload. */
const RELEASE_MAX = 1000;

const fileTooLarge = (message: string) => new AppError('PAYLOAD_TOO_LARGE', message);

/** `<tenant hash>/<file id>`: storage keys never contain a name or a tenant as given. */
const storageKey = (tenant: string, id: string) => `${createHash('sha256').update(tenant).digest('hex').slice(0, 16)}/${id}`;

const ttlText = (s: number) => (s % 3600 === 0 ? `${s / 3600} h` : s % 60 === 0 ? `${s / 60} min` : `${s} s`);

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(n % (1024 * 1024) === 0 ? 0 : 1)} MiB`;

/**
 * Uploaded files: upload tickets, the checks of a send that attaches them, downloads for the
 * members of their room. The bytes never pass through here (except for the local driver's
 * endpoint, src/http/files.ts); removals and previews are the file worker's (worker.ts).
 */
export class FileService {
  constructor(
    private readonly store: Store,
    private readonly access: AccessService,
    readonly storage: FileStorage,
    private readonly cfg: FilesConfig,
    private readonly limits: RateLimits,
    /** Called after a commit that left work for the file worker. */
    private readonly wake: () => void,
  ) {}

  /** Refuses every file call when the local driver has no key to sign its URLs with. */
  private requireConfigured(): void {
    if (this.cfg.storage === 'local' && this.cfg.urlSecret === null) {
      throw new AppError('PRECONDITION_FAILED', 'file uploads are not configured on this server: set FILE_URL_SECRET (or JWT_SECRET), or FILE_STORAGE=s3');
    }
  }

  /** A place to PUT a file's bytes, for members who may post in the room. */
  async createUpload(actor: Actor, input: CreateUploadInput): Promise<UploadTicket> {
    this.requireConfigured();
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    if (input.size > this.cfg.maxBytes) {
      throw fileTooLarge(`the file is ${input.size} bytes; files are at most ${this.cfg.maxBytes} bytes (${mib(this.cfg.maxBytes)})`);
    }
    const quota = this.cfg.tenantQuotaBytes;
    if (quota !== null && input.size > quota) throw fileTooLarge(`the file is ${input.size} bytes, more than the tenant's whole storage quota of ${quota} bytes`);
    const id = randomUUID();
    const key = storageKey(actor.tenant, id);
    const mime = canonicalMime(input.mime);
    const insert = () =>
      this.store.transact(async (tx) => {
        const room = await this.access.requireAccess(actor, input.roomId, 'send', tx.em);
        if (!can(room.role, 'send', room.room.kind)) throw forbidden(`only admins and the owner may post in a ${room.room.kind} room`);
        return insertUpload(tx, { id, tenant: actor.tenant, roomId: input.roomId, uploaderId: actor.id, name: input.name, mime, size: input.size, storageKey: key }, quota);
      });
    let r = await insert();
    // Tickets whose URL expired unused hold no bytes and never will: released, they free the quota
    // they held (the file worker releases them too, on its own schedule).
    if (!r.ok && (await this.releaseUnused(actor.tenant)) > 0) r = await insert();
    if (!r.ok) {
      throw forbidden(`the tenant's file storage quota is used up: ${r.used} of ${quota} bytes in use, this file needs ${input.size} more (delete files or raise FILE_TENANT_QUOTA_BYTES)`);
    }
    const expiresAt = new Date(Date.now() + this.cfg.uploadTtlSeconds * 1000);
    const signed = await this.storage.uploadUrl(`${key}${UPLOAD_SUFFIX}`, { size: input.size, mime, expiresAt });
    return { fileId: id, uploadUrl: signed.url, method: 'PUT', headers: signed.headers, expiresAt };
  }

  /**
   * Whether a file row still owns the bytes of a signed upload key (`<storageKey>.upload`): one that
   * is not being removed (a removal takes every key of the file, this one included). Checked by the
   * local driver's endpoint once it has stored a PUT's bytes: a PUT that outlasted its URL may find
   * its ticket released meanwhile (no row will own the bytes any more), and then removes them itself.
   */
  async uploadOwned(uploadKey: string): Promise<boolean> {
    if (!uploadKey.endsWith(UPLOAD_SUFFIX)) return false;
    const key = uploadKey.slice(0, -UPLOAD_SUFFIX.length);
    const id = key.slice(key.indexOf('/') + 1);
    const f = await fileById(this.store.db(), id);
    return f !== undefined && f.storage_key === key && f.state !== 'deleting';
  }

  /** Releases a tenant's upload tickets that expired unused (`releaseUnusedUploads`); wakes the worker to remove them. */
  private async releaseUnused(tenant: string): Promise<number> {
    const n = await releaseUnusedUploads(this.store.db(), this.storage, { tenant, uploadUrlSeconds: this.cfg.uploadTtlSeconds, batch: 100, max: RELEASE_MAX });
    if (n > 0) this.wake();
    return n;
  }

  /** The file with short-lived URLs: members of its room only (NOT_FOUND for anyone else, as for rooms). */
  async get(actor: Actor, fileId: string): Promise<FileDto> {
    this.requireConfigured();
    const f = await fileById(this.store.db(), fileId);
    if (!f || f.tenant !== actor.tenant || f.state === 'deleting') throw notFound('file');
    // Before it is sent, a file is its uploader's alone.
    if (f.state === 'uploading' && f.uploader_id !== actor.id) throw notFound('file');
    try {
      await this.access.requireAccess(actor, f.room_id, 'read');
    } catch (err) {
      if (err instanceof AppError && (err.code === 'NOT_FOUND' || err.code === 'FORBIDDEN')) throw notFound('file');
      throw err;
    }
    const expiresAt = new Date(Date.now() + this.cfg.urlTtlSeconds * 1000);
    const attached = f.state === 'attached';
    // Before the send, the bytes are under the upload key (or already moved by a refused send).
    const upload = `${f.storage_key}${UPLOAD_SUFFIX}`;
    const key = attached || !(await this.storage.stat(upload)) ? f.storage_key : upload;
    const url = await this.storage.downloadUrl(key, {
      name: f.name,
      // Before the check, the declared type is only a claim: served as bytes to download.
      mime: attached ? f.mime : 'application/octet-stream',
      inline: attached && isInline(f.mime),
      expiresAt,
    });
    const thumbnailUrl =
      f.preview === 'ready'
        ? await this.storage.downloadUrl(`${f.storage_key}${THUMB_SUFFIX}`, { name: `${f.name}.webp`, mime: 'image/webp', inline: true, expiresAt })
        : null;
    return { id: f.id, roomId: f.room_id, messageId: f.message_id, name: f.name, size: f.size, mime: f.mime, url, thumbnailUrl, width: f.width, height: f.height, expiresAt };
  }

  /**
   * The checks of a send's files, in its transaction, with the file rows locked (before the room's
   * seq: lock order): each is the sender's own upload in this room (NOT_FOUND otherwise, also for
   * another tenant's), not attached yet, its bytes are there with the declared size and a type that
   * matches them. The object is moved from its upload key first, and the row stays locked until
   * the message is written: a concurrent send of the same file waits and then finds it attached,
   * and bytes sent to the upload URL meanwhile can never replace what was checked.
   */
  async prepare(tx: Tx, actor: Actor, roomId: string, input: AttachmentInput[]): Promise<PreparedAttachments> {
    this.requireConfigured();
    const ids = input.flatMap((a) => ('fileId' in a ? [a.fileId] : []));
    if (new Set(ids).size !== ids.length) throw badRequest('the same file is attached twice');
    const rows = new Map((await lockFiles(tx, ids, this.cfg.unattachedTtlSeconds)).map((r) => [r.id, r]));
    for (const id of ids) {
      const row = rows.get(id);
      if (!row || row.tenant !== actor.tenant || row.room_id !== roomId || row.uploader_id !== actor.id || row.state === 'deleting') {
        throw notFound(`file ${id}`);
      }
      if (row.state !== 'uploading') throw badRequest(`file "${row.name}" is already attached to a message (a file is attached once)`);
      // The sweep removes unsent uploads after FILE_UNATTACHED_TTL_SECONDS: one it may be removing
      // is never attached (its bytes could vanish under the message).
      if (row.expired || row.claimed) {
        throw badRequest(`file "${row.name}" was uploaded more than ${ttlText(this.cfg.unattachedTtlSeconds)} ago and never sent: it is removed; upload it again`);
      }
    }
    const files = await Promise.all(ids.map((id) => this.check(rows.get(id)!)));
    const byId = new Map(files.map((f) => [f.checked.id, f]));
    const attachments = input.map((a): AttachmentDto => {
      if (!('fileId' in a)) return a;
      const f = byId.get(a.fileId)!;
      const dto: FileAttachmentDto = { fileId: f.checked.id, name: f.row.name, size: f.checked.size, mime: f.checked.mime, width: null, height: null, thumbnail: false };
      return dto;
    });
    return { attachments, files: files.map((f) => f.checked) };
  }

  private async check(row: FileFields): Promise<{ row: FileFields; checked: CheckedFile }> {
    const key = row.storage_key;
    // Moved if there is a new upload; already moved by an earlier, refused send otherwise.
    await this.storage.promote(`${key}${UPLOAD_SUFFIX}`, key);
    const stat = await this.storage.stat(key);
    if (!stat) throw badRequest(`file "${row.name}" has not been uploaded: PUT its bytes to the uploadUrl of file.createUpload first`);
    if (stat.size !== row.size) throw badRequest(`file "${row.name}" has ${stat.size} bytes, but ${row.size} were declared`);
    const content = await checkContent(await this.storage.readHead(key, SNIFF_BYTES), row.mime);
    if (!content.ok) throw badRequest(`file "${row.name}" was declared ${row.mime}, but ${content.reason}`);
    return { row, checked: { id: row.id, size: stat.size, mime: content.mime, preview: hasPreview(content.mime) } };
  }

  /** Marks the checked files attached to the new message (their rows are locked since `prepare`). */
  async attach(tx: Tx, messageId: string, files: CheckedFile[]): Promise<void> {
    for (const f of files) await markAttached(tx, f.id, messageId, f.mime, f.size, f.preview);
    if (files.some((f) => f.preview)) tx.afterCommit(async () => this.wake());
  }
}
