import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, optionalBool, unsetIfEmpty } from './env.js';

/** The file storage variables (docs/OPERATIONS.md, "Files"). */
export const filesEnv = {
  FILE_STORAGE: z.enum(['local', 's3'], { error: 'FILE_STORAGE must be local or s3' }).default('local'),
  FILE_DIR: unsetIfEmpty(z.string().min(1).optional()),
  FILE_URL_SECRET: unsetIfEmpty(z.string().optional()),
  FILE_PUBLIC_URL: unsetIfEmpty(z.url({ protocol: /^https?$/, error: 'FILE_PUBLIC_URL must be an http(s) URL such as https://chat.example.com' }).optional()),
  FILE_URL_TTL_SECONDS: z.coerce.number().int().min(10).max(7 * 86_400).default(300),
  FILE_UPLOAD_TTL_SECONDS: z.coerce.number().int().min(10).max(7 * 86_400).default(900),
  FILE_MAX_BYTES: z.coerce.number().int().positive().max(5 * 1024 ** 3).default(25 * 1024 * 1024),
  FILE_TENANT_QUOTA_BYTES: unsetIfEmpty(z.coerce.number().int().positive().optional()),
  FILE_UNATTACHED_TTL_SECONDS: z.coerce.number().int().min(60).default(86_400),
  FILE_SWEEP_INTERVAL_MS: z.coerce.number().int().min(100).default(60_000),
  S3_ENDPOINT: unsetIfEmpty(z.url({ protocol: /^https?$/, error: 'S3_ENDPOINT must be an http(s) URL' }).optional()),
  S3_PUBLIC_ENDPOINT: unsetIfEmpty(z.url({ protocol: /^https?$/, error: 'S3_PUBLIC_ENDPOINT must be an http(s) URL' }).optional()),
  S3_REGION: z.string().min(1).default('us-east-1'),
  S3_BUCKET: unsetIfEmpty(z.string().min(3).max(63).optional()),
  S3_ACCESS_KEY_ID: unsetIfEmpty(z.string().min(1).optional()),
  S3_SECRET_ACCESS_KEY: unsetIfEmpty(z.string().min(1).optional()),
  S3_FORCE_PATH_STYLE: optionalBool,
};
type FilesEnv = z.infer<z.ZodObject<typeof filesEnv>>;

export interface S3Config {
  /** Unset: AWS S3 itself (the region's endpoint). */
  endpoint: string | undefined;
  /**
   * The store's address as clients reach it, when it differs from the server's (MinIO inside
   * docker compose): presigned URLs are signed for this host. Unset: `endpoint`.
   */
  publicEndpoint: string | undefined;
  region: string;
  bucket: string;
  accessKeyId: string | undefined;
  secretAccessKey: string | undefined;
  forcePathStyle: boolean;
}

export interface FilesConfig {
  storage: 'local' | 's3';
  /** Local driver: where the objects live (FILE_DIR, default DATA_DIR/files). */
  dir: string;
  /**
   * HMAC key of the local driver's signed URLs (FILE_URL_SECRET, else derived from JWT_SECRET);
   * null when neither is set (production with a JWKS only): the file procedures then answer
   * PRECONDITION_FAILED with FILE_STORAGE=local.
   */
  urlSecret: Buffer | null;
  /** Local driver: the server's public base URL for signed URLs; null: URLs are relative (`/files/...`). */
  publicUrl: string | null;
  /** Lifetime of download URLs (file.get). */
  urlTtlSeconds: number;
  /** Lifetime of upload URLs (file.createUpload). */
  uploadTtlSeconds: number;
  maxBytes: number;
  /** Bytes of files one tenant may keep (uploads in progress count with their declared size); null: unlimited. */
  tenantQuotaBytes: number | null;
  /** Uploads never attached to a message are removed this long after createUpload. */
  unattachedTtlSeconds: number;
  /** How often each node looks for thumbnails to make and objects to remove. */
  sweepIntervalMs: number;
  s3: S3Config | null;
}

/**
 * FILE_* and S3_*. The local driver's URL key is FILE_URL_SECRET or derived from JWT_SECRET, never a
 * built-in one: in production that is a secret of the deployment (the development JWT secret is
 * refused there).
 */
export function filesConfig(e: FilesEnv, dataDir: string, jwtSecret: string | null, production: boolean, jwtSecretIsDev: boolean): FilesConfig {
  let urlSecret: Buffer | null;
  if (e.FILE_URL_SECRET !== undefined) {
    if (Buffer.byteLength(e.FILE_URL_SECRET) < 32) throw new ConfigError('FILE_URL_SECRET must be at least 32 bytes (e.g. the output of `openssl rand -base64 48`)');
    urlSecret = Buffer.from(e.FILE_URL_SECRET);
  } else if (jwtSecret !== null && !(production && jwtSecretIsDev)) {
    // Derived, so that a leaked download URL key is not the token key.
    urlSecret = createHmac('sha256', jwtSecret).update('chat file url signing key v1').digest();
  } else {
    // Never a built-in key: without one, local file URLs cannot be signed (FileService refuses).
    urlSecret = null;
  }
  let s3: S3Config | null = null;
  if (e.FILE_STORAGE === 's3') {
    if (!e.S3_BUCKET) throw new ConfigError('FILE_STORAGE=s3 needs S3_BUCKET (and S3_ENDPOINT for a store other than AWS)');
    s3 = {
      endpoint: e.S3_ENDPOINT,
      publicEndpoint: e.S3_PUBLIC_ENDPOINT,
      region: e.S3_REGION,
      bucket: e.S3_BUCKET,
      accessKeyId: e.S3_ACCESS_KEY_ID,
      secretAccessKey: e.S3_SECRET_ACCESS_KEY,
      forcePathStyle: e.S3_FORCE_PATH_STYLE ?? false,
    };
    if ((s3.accessKeyId === undefined) !== (s3.secretAccessKey === undefined)) {
      throw new ConfigError('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together (or leave both unset for the AWS default credentials)');
    }
  }
  return {
    storage: e.FILE_STORAGE,
    dir: e.FILE_DIR ?? join(dataDir, 'files'),
    urlSecret,
    publicUrl: e.FILE_PUBLIC_URL ? e.FILE_PUBLIC_URL.replace(/\/+$/, '') : null,
    urlTtlSeconds: e.FILE_URL_TTL_SECONDS,
    uploadTtlSeconds: e.FILE_UPLOAD_TTL_SECONDS,
    maxBytes: e.FILE_MAX_BYTES,
    tenantQuotaBytes: e.FILE_TENANT_QUOTA_BYTES ?? null,
    unattachedTtlSeconds: e.FILE_UNATTACHED_TTL_SECONDS,
    sweepIntervalMs: e.FILE_SWEEP_INTERVAL_MS,
    s3,
  };
}

/**
 * The origins of the URLs file uploads and downloads go to, when they are not the server's own:
 * the browser page's CSP allows them (uploads with XMLHttpRequest, thumbnails as images). S3: the
 * store as clients reach it (S3_PUBLIC_ENDPOINT, else S3_ENDPOINT, else AWS's regional endpoint),
 * path-style and, unless S3_FORCE_PATH_STYLE, virtual-hosted (`<bucket>.<host>`, what the SDK
 * signs for DNS-compatible bucket names). Local: FILE_PUBLIC_URL's origin (unset: relative URLs).
 */
export function fileOrigins(cfg: FilesConfig): string[] {
  if (cfg.storage === 'local' || cfg.s3 === null) return cfg.publicUrl ? [new URL(cfg.publicUrl).origin] : [];
  const s3 = cfg.s3;
  const base = new URL(s3.publicEndpoint ?? s3.endpoint ?? `https://s3.${s3.region}.amazonaws.com`);
  const origins = [base.origin];
  if (!s3.forcePathStyle) origins.push(`${base.protocol}//${s3.bucket}.${base.host}`);
  return origins;
}
