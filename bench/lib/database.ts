/** The benchmarks' own databases: made fresh for a run and dropped after it, through the admin URL. */
import pg from 'pg';

/** Runs statements one after the other on one connection to `adminUrl` (a database of the cluster, `postgres`). */
export async function adminSql(adminUrl: string, ...statements: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    for (const s of statements) await c.query(s);
  } finally {
    await c.end();
  }
}

/** Drops `name` (closing its connections) and creates it empty. */
export const resetDatabase = (adminUrl: string, name: string) => adminSql(adminUrl, `drop database if exists ${name} with (force)`, `create database ${name}`);

/** Drops `name` (closing its connections). */
export const dropDatabase = (adminUrl: string, name: string) => adminSql(adminUrl, `drop database if exists ${name} with (force)`);
