import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Takes the embedded database of a data directory for this process: one process at a time. Two
 * PGlite instances on one directory each keep their own copy of the files and write them back on
 * close, so the last one to close wins and the other's acknowledged writes are lost (two servers
 * gave one seq to two messages; `keys:reencrypt` beside a server reported work that was then
 * undone). A lock file names the holder's pid; a file whose process is gone (killed) is taken over.
 * Returns the release.
 */
export function lockDataDir(dir: string): () => void {
  const path = join(dir, 'pglite.lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(readOr(path, ''), 10);
      if (Number.isInteger(holder) && holder > 0 && alive(holder)) {
        throw new Error(
          `the embedded database in ${dir} is in use by process ${holder}: it takes one process at a time (stop that one first, or set DATABASE_URL so that several share a PostgreSQL; if no such process runs, delete ${path})`,
        );
      }
      // Left by a process that is gone (killed before it could release it).
      rmSync(path, { force: true });
      continue;
    }
    try {
      writeSync(fd, String(process.pid));
    } finally {
      closeSync(fd);
    }
    return () => {
      if (readOr(path, '') === String(process.pid)) rmSync(path, { force: true });
    };
  }
  throw new Error(`could not take the lock of the embedded database in ${dir} (${path})`);
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return fallback;
  }
}

/** Whether a process of this pid runs (one of another user's answers EPERM: it runs). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
