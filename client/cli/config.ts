/**
 * The CLI's stored logins: one JSON file, mode 0600 (directory 0700), one entry per server URL.
 * Location: $CHAT_CONFIG, else $XDG_CONFIG_HOME/trpc-chat/config.json, else ~/.config/trpc-chat/config.json.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export const APP_DIR = 'trpc-chat';

export interface StoredLogin {
  token: string;
  user: { id: string; name: string; tenant: string };
  /** ISO time the token expires, when known. */
  expiresAt: string | null;
  /** `dev`: obtained by dev login for `user.id` (renewed automatically); `token`: given by hand. */
  via: 'dev' | 'token';
  savedAt: string;
}

export interface ConfigFile {
  version: 1;
  logins: Record<string, StoredLogin>;
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CHAT_CONFIG) return env.CHAT_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, APP_DIR, 'config.json');
}

export async function readConfig(path = configPath()): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, logins: {} };
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as Partial<ConfigFile>;
    return { version: 1, logins: parsed.logins && typeof parsed.logins === 'object' ? parsed.logins : {} };
  } catch {
    throw new Error(`config file ${path} is not valid JSON: fix or delete it`);
  }
}

/** Writes atomically (temp file + rename), readable by the owner only. */
export async function writeConfig(config: ConfigFile, path = configPath()): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // Unique per write: two writes of one process must not share (and rename away) one temp file.
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}

/** How long a change waits for another command's change of the file. */
const LOCK_WAIT_MS = 5_000;
/** A lock older than this was left by a command that died while holding it. */
const STALE_LOCK_MS = 10_000;

/** The lock files this process holds: removed as it exits, also in the middle of a change (Ctrl-C). */
const held = new Set<string>();
let releaseOnExit = false;

/**
 * Runs a read-modify-write of the file under `<path>.lock` (created exclusively): two commands
 * saving logins at once (two logins, a token renewed by a running `chat tail`) would otherwise
 * each write back what they read, and the later one would drop the other's entry.
 */
async function locked<T>(path: string, change: () => Promise<T>): Promise<T> {
  if (!releaseOnExit) {
    releaseOnExit = true;
    process.once('exit', () => {
      for (const lock of held) rmSync(lock, { force: true });
    });
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const lock = `${path}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await (await open(lock, 'wx', 0o600)).close();
      held.add(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const held = await stat(lock).catch(() => null);
      if (held && Date.now() - held.mtimeMs > STALE_LOCK_MS) await rm(lock, { force: true });
      else if (Date.now() > deadline) throw new Error(`config file ${path} is locked by another chat command (delete ${lock} if none is running)`);
      else await new Promise((r) => setTimeout(r, 10 + Math.random() * 40));
    }
  }
  try {
    return await change();
  } finally {
    await rm(lock, { force: true });
    held.delete(lock);
  }
}

export function saveLogin(url: string, login: StoredLogin, path = configPath()): Promise<void> {
  return locked(path, async () => {
    const config = await readConfig(path);
    config.logins[url] = login;
    await writeConfig(config, path);
  });
}

export function removeLogin(url: string, path = configPath()): Promise<boolean> {
  return locked(path, async () => {
    const config = await readConfig(path);
    if (!config.logins[url]) return false;
    delete config.logins[url];
    await writeConfig(config, path);
    return true;
  });
}
