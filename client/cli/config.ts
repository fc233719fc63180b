/**
 * The CLI's stored logins: one JSON file, mode 0600 (directory 0700), one entry per server URL.
 * Location: $CHAT_CONFIG, else $XDG_CONFIG_HOME/trpc-chat/config.json, else ~/.config/trpc-chat/config.json.
 */
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
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
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}

export async function saveLogin(url: string, login: StoredLogin, path = configPath()): Promise<void> {
  const config = await readConfig(path);
  config.logins[url] = login;
  await writeConfig(config, path);
}

export async function removeLogin(url: string, path = configPath()): Promise<boolean> {
  const config = await readConfig(path);
  if (!config.logins[url]) return false;
  delete config.logins[url];
  await writeConfig(config, path);
  return true;
}
