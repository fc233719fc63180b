import { closeSync, lstatSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/**
 * Takes the embedded database of a data directory for this process: one process at a time. Two
 * PGlite instances on one directory each keep their own copy of the files and write them back on
 * close, so the last one to close wins and the other's acknowledged writes are lost (two servers
 * gave one seq to two messages; `keys:reencrypt` beside a server reported work that was then
 * undone). A lock file names the holder's pid and `tempDir`, a private directory of the holder
 * outside the data directory (the embedded server's socket directory: a socket path must stay
 * short, so it lives under the system's temporary directory). A file whose process is gone (killed
 * before its stop) is taken over, and the directory it names removed: each kill left one behind.
 * Returns the release.
 */
export function lockDataDir(dir: string, tempDir?: string): () => void {
  const path = join(dir, 'pglite.lock');
  const content = tempDir === undefined ? String(process.pid) : `${process.pid}\n${tempDir}`;
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const [first = '', left] = readOr(path, '').split('\n');
      const holder = Number.parseInt(first, 10);
      if (Number.isInteger(holder) && holder > 0 && alive(holder)) {
        throw new Error(
          `the embedded database in ${dir} is in use by process ${holder}: it takes one process at a time (stop that one first, or set DATABASE_URL so that several share a PostgreSQL; if no such process runs, delete ${path})`,
        );
      }
      // Left by a process that is gone (killed before it could release it), and so is its directory.
      if (left) removeLeftDir(left.trim());
      rmSync(path, { force: true });
      continue;
    }
    try {
      writeSync(fd, content);
    } finally {
      closeSync(fd);
    }
    return () => {
      if (readOr(path, '') === content) rmSync(path, { force: true });
    };
  }
  throw new Error(`could not take the lock of the embedded database in ${dir} (${path})`);
}

/**
 * Removes the directory a dead holder's lock names, if it is what a holder makes: an absolute path
 * to a directory (not a link) of this user that only this user may enter (mkdtemp's 0700). Anything
 * else stays: the lock file is no reason to delete what it happens to name.
 */
function removeLeftDir(path: string): void {
  if (!isAbsolute(path)) return;
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) return;
  rmSync(path, { recursive: true, force: true });
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
