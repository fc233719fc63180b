/** `send --file` and `download`: file transfers with a progress bar on stderr. */
import { open, readFile, stat } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import pc from 'picocolors';
import type { UploadedFile } from '../index.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';
import { clean } from './terminal.js';

/** Types by file extension; anything else goes as application/octet-stream (the server sniffs the bytes). */
const TYPES: Record<string, string> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.pdf': 'application/pdf',
  '.txt': 'text/plain',
  '.log': 'text/plain',
  '.md': 'text/markdown',
  '.csv': 'text/csv',
  '.json': 'application/json',
  '.zip': 'application/zip',
  '.mp3': 'audio/mpeg',
  '.mp4': 'video/mp4',
};

export const mimeOf = (path: string) => TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';

const size = (n: number) => (n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`);

/**
 * A progress bar on stderr: redrawn in place on a terminal, printed once when done otherwise
 * (logs and pipes get one line, not hundreds). Silent with --json.
 */
export function progressBar(ctx: Context, label: string) {
  const tty = process.stderr.isTTY === true;
  let last = -1;
  const draw = (loaded: number, total: number) => {
    const ratio = total > 0 ? Math.min(1, loaded / total) : 1;
    const width = 24;
    const filled = Math.round(ratio * width);
    return `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(ratio * 100)).padStart(3)}% ${size(loaded)}/${size(total)}`;
  };
  return {
    update(loaded: number, total: number) {
      if (ctx.json || !tty) return;
      const pct = total > 0 ? Math.floor((loaded / total) * 100) : 100;
      if (pct === last) return;
      last = pct;
      process.stderr.write(`\r${draw(loaded, total)}`);
    },
    done(total: number) {
      if (ctx.json) return;
      process.stderr.write(`${tty ? '\r' : ''}${draw(total, total)}\n`);
    },
  };
}

/** Uploads each path into the room (in order), with a progress bar each. */
export async function uploadFiles(ctx: Context, c: Awaited<ReturnType<Context['client']>>, roomId: string, paths: string[], mime?: string): Promise<UploadedFile[]> {
  const out: UploadedFile[] = [];
  for (const path of paths) {
    const info = await stat(path).catch(() => null);
    if (!info?.isFile()) throw new CliError(`--file ${path}: no such file`);
    const bytes = await readFile(path);
    const name = basename(path);
    const bar = progressBar(ctx, pc.dim(`uploading ${name}`));
    const file = await c.uploadFile(roomId, bytes, { name, mime: mime ?? mimeOf(path), onProgress: (p) => bar.update(p.loaded, p.total) });
    bar.done(file.size);
    out.push(file);
  }
  return out;
}

/** A name from the server made safe as a file name here: no folders, no control characters, no leading dots. */
export function safeFileName(name: string): string {
  const cleaned = clean(name)
    .replace(/[/\\:*?"<>|]/g, '_')
    .replace(/^\.+/, '')
    .trim();
  return cleaned.slice(0, 200) || 'download';
}

export async function download(ctx: Context, fileId: string, opts: { output?: string; force?: boolean }): Promise<void> {
  const c = await ctx.client();
  const { file, response } = await c.downloadFile(fileId);
  const path = opts.output ?? safeFileName(file.name);
  // Without -o the name comes from the server: never overwrite what is there.
  const fh = await open(path, opts.output || opts.force ? 'w' : 'wx').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EEXIST') throw new CliError(`${path} exists: pass -o <path> (or --force to overwrite)`);
    throw new CliError(`cannot write ${path}: ${err.message}`);
  });
  const bar = progressBar(ctx, pc.dim(`downloading ${safeFileName(file.name)}`));
  let loaded = 0;
  try {
    if (response.body) {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        await fh.write(chunk);
        loaded += chunk.length;
        bar.update(loaded, file.size);
      }
    }
  } finally {
    await fh.close();
  }
  bar.done(loaded);
  if (loaded !== file.size) throw new CliError(`download of ${fileId} ended after ${loaded} of ${file.size} bytes`);
  ctx.out.result({ fileId: file.id, name: file.name, size: file.size, mime: file.mime, path }, `saved ${pc.bold(path)} (${size(file.size)}, ${file.mime})`);
}
