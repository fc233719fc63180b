/**
 * Generates a new migration from the difference between the entities and the schema that the
 * existing migrations produce. Runs against a scratch database on DATABASE_URL (default: the local
 * server's `postgres` database), which it creates and drops.
 *   npm run migration:create
 */
import pg from 'pg';
import { MikroORM } from '@mikro-orm/postgresql';
import { ormOptions, migrate, type Orm } from './database.js';

const base = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const scratch = `chat_migration_scratch_${process.pid}`;
const admin = new pg.Client({ connectionString: base });
await admin.connect();
await admin.query(`CREATE DATABASE ${scratch}`);
const url = new URL(base);
url.pathname = `/${scratch}`;
const orm = (await MikroORM.init({ ...ormOptions(url.toString()), migrations: { ...ormOptions('').migrations, path: 'src/store/migrations', pathTs: 'src/store/migrations', fileName: (ts: string) => `Migration${ts}` } })) as unknown as Orm;
try {
  await migrate(orm, url.toString());
  const res = await orm.migrator.create('src/store/migrations');
  console.log(res.fileName ? `created ${res.fileName}: add it to src/store/migrations/index.ts` : 'no changes');
  console.log(res.diff.up.join('\n'));
} finally {
  await orm.close(true);
  await admin.query(`DROP DATABASE ${scratch}`);
  await admin.end();
}
