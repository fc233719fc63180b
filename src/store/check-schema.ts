/**
 * `npm run db:check`: the entities are the schema. Creates a scratch database, applies every
 * migration, and fails when MikroORM's diff between that schema and the entities is not empty
 * (a migration is missing, or an entity drifted from the migrations). Uses DATABASE_URL's server
 * (default: the local `postgres` database) and drops the scratch database afterwards.
 */
import pg from 'pg';
import { openDatabase } from './database.js';

const base = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const scratch = `chat_schema_check_${process.pid}`;
const admin = new pg.Client({ connectionString: base });
await admin.connect();
await admin.query(`CREATE DATABASE ${scratch}`);
let failed = true;
try {
  const url = new URL(base);
  url.pathname = `/${scratch}`;
  const db = await openDatabase({ databaseUrl: url.toString(), dataDir: '', migrate: true });
  try {
    const diff = await db.orm.schema.getUpdateSchemaSQL({ wrap: false, safe: false, dropTables: true });
    if (diff.trim()) {
      console.error('The migrations and the entities (src/store/entities.ts) disagree. Statements that would align the database:');
      console.error(diff);
      console.error('Fix the entity, or add a migration (npm run migration:create).');
    } else {
      console.log('schema check: the migrations produce exactly the schema of the entities');
      failed = false;
    }
  } finally {
    await db.close();
  }
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`);
  await admin.end();
}
process.exit(failed ? 1 : 0);
