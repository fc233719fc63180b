/**
 * Optional features' libraries are loaded only when the feature is configured: the AWS SDK for
 * FILE_STORAGE=s3, livekit-server-sdk for VIDEO_PROVIDER=livekit, nodemailer with the first e-mail,
 * sharp with the first image preview. A child process records every package the module graph of
 * src/app.ts resolves (module.registerHooks), then builds the S3 storage to show the record sees
 * a dynamic import too.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

const CHILD = `
import { registerHooks } from 'node:module';
const seen = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const m = /^(@[^/]+\\/[^/]+|[^./][^/:]*)/.exec(specifier);
    if (m && !specifier.startsWith('node:')) seen.add(m[1]);
    return next(specifier, context);
  },
});
await import('./src/app.ts');
const atStart = [...seen];
const { createStorage } = await import('./src/services/files/index.ts');
await createStorage({ storage: 's3', s3: { bucket: 'b', region: 'us-east-1', forcePathStyle: true } });
console.log(JSON.stringify({ atStart, afterS3: [...seen] }));
`;

describe('optional libraries', () => {
  it('are not loaded by the server module graph; a configured feature loads its own', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], { cwd: process.cwd(), timeout: 60_000 });
    const { atStart, afterS3 } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { atStart: string[]; afterS3: string[] };
    // The record works: the server's own libraries are in it.
    expect(atStart).toEqual(expect.arrayContaining(['@trpc/server', 'ioredis', 'ws', '@mikro-orm/postgresql']));
    for (const lib of ['@aws-sdk/client-s3', '@aws-sdk/s3-request-presigner', 'livekit-server-sdk', 'nodemailer', 'sharp']) {
      expect(atStart, lib).not.toContain(lib);
    }
    expect(afterS3).toEqual(expect.arrayContaining(['@aws-sdk/client-s3', '@aws-sdk/s3-request-presigner']));
  });
});
