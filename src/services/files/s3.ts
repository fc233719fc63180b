import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { S3Config } from '../../config.js';
import { contentDisposition } from './content.js';
import { type DownloadOptions, type FileStorage, type SignedUpload, STORAGE_KEY } from './storage.js';

const secondsUntil = (d: Date) => Math.max(1, Math.ceil((d.getTime() - Date.now()) / 1000));

const isMissing = (err: unknown) =>
  err instanceof S3ServiceException && (err.name === 'NotFound' || err.name === 'NoSuchKey' || err.$metadata.httpStatusCode === 404);

/**
 * FILE_STORAGE=s3: any S3-compatible store (AWS, MinIO, R2, ...). Bytes go straight between the
 * client and the store through presigned URLs; the PUT is signed with its Content-Length and
 * Content-Type, so the store refuses another size or type.
 */
export class S3Storage implements FileStorage {
  readonly kind = 's3';
  private readonly client: S3Client;
  /** Signs the URLs handed to clients (the public endpoint's host is part of the signature). */
  private readonly presigner: S3Client;
  private readonly bucket: string;

  constructor(cfg: S3Config) {
    this.bucket = cfg.bucket;
    const client = (endpoint: string | undefined) =>
      new S3Client({
        region: cfg.region,
        ...(endpoint ? { endpoint } : {}),
        forcePathStyle: cfg.forcePathStyle,
        ...(cfg.accessKeyId && cfg.secretAccessKey ? { credentials: { accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey } } : {}),
        // Presigned URLs must not carry checksums the uploading client does not know.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
    this.client = client(cfg.endpoint);
    this.presigner = cfg.publicEndpoint && cfg.publicEndpoint !== cfg.endpoint ? client(cfg.publicEndpoint) : this.client;
  }

  private key(key: string): string {
    if (!STORAGE_KEY.test(key)) throw new Error('invalid storage key');
    return key;
  }

  async uploadUrl(key: string, o: { size: number; mime: string; expiresAt: Date }): Promise<SignedUpload> {
    const cmd = new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key), ContentType: o.mime, ContentLength: o.size });
    const url = await getSignedUrl(this.presigner, cmd, {
      expiresIn: secondsUntil(o.expiresAt),
      signableHeaders: new Set(['content-type', 'content-length']),
    });
    return { url, headers: { 'content-type': o.mime } };
  }

  downloadUrl(key: string, o: DownloadOptions): Promise<string> {
    const cmd = new GetObjectCommand({
      Bucket: this.bucket,
      Key: this.key(key),
      ResponseContentType: o.mime,
      ResponseContentDisposition: contentDisposition(o.name, o.inline),
      ResponseCacheControl: 'private, max-age=60',
    });
    return getSignedUrl(this.presigner, cmd, { expiresIn: secondsUntil(o.expiresAt) });
  }

  async stat(key: string): Promise<{ size: number } | null> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
      return { size: r.ContentLength ?? 0 };
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async promote(from: string, to: string): Promise<boolean> {
    try {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: this.key(to), CopySource: `${this.bucket}/${this.key(from)}` }));
    } catch (err) {
      if (isMissing(err)) return false;
      throw err;
    }
    await this.remove(from);
    return true;
  }

  async readHead(key: string, bytes: number): Promise<Uint8Array> {
    const s = await this.stat(key);
    if (!s || s.size === 0) return new Uint8Array(0);
    const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key), Range: `bytes=0-${Math.min(bytes, s.size) - 1}` }));
    return r.Body ? await r.Body.transformToByteArray() : new Uint8Array(0);
  }

  /**
   * The object streamed into a temp file of its own (mode 0600, in a fresh folder of the OS temp
   * directory), removed with its folder once `fn` settles. Bytes past `maxBytes` end the copy,
   * whatever the store said the length was.
   */
  async withFile<T>(key: string, maxBytes: number, fn: (path: string) => Promise<T>): Promise<T> {
    const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
    const body = r.Body === undefined ? Readable.from([]) : r.Body instanceof Readable ? r.Body : Readable.fromWeb(r.Body.transformToWebStream() as NodeReadableStream);
    if ((r.ContentLength ?? 0) > maxBytes) {
      body.destroy();
      throw new Error(`object ${key} is larger than ${maxBytes} bytes`);
    }
    let dir: string | null = null;
    try {
      dir = await mkdtemp(join(tmpdir(), 'chat-file-'));
      const path = join(dir, 'object');
      let copied = 0;
      const bounded = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          copied += chunk.length;
          done(copied > maxBytes ? new Error(`object ${key} is larger than ${maxBytes} bytes`) : null, chunk);
        },
      });
      await pipeline(body, bounded, createWriteStream(path, { mode: 0o600 }));
      return await fn(path);
    } finally {
      // Also when the temp folder could not be made (TMPDIR missing or full): the body holds one of
      // the S3 client's sockets until it is destroyed.
      body.destroy();
      if (dir !== null) await rm(dir, { recursive: true, force: true });
    }
  }

  async write(key: string, data: Buffer, mime: string): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key), Body: data, ContentType: mime, ContentLength: data.length }));
  }

  async remove(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
  }

  close(): void {
    this.client.destroy();
    if (this.presigner !== this.client) this.presigner.destroy();
  }
}
