import pg from 'pg';
import { Redis } from 'ioredis';
import { TEST_PG_URL, TEST_REDIS_URL } from './env.js';

/** Fails fast with a clear message when the real services the suite needs are not reachable. */
export default async function setup() {
  const client = new pg.Client({ connectionString: TEST_PG_URL });
  try {
    await client.connect();
    await client.query('select 1');
  } catch (err) {
    throw new Error(`PostgreSQL is not reachable at ${TEST_PG_URL}: ${(err as Error).message}`);
  } finally {
    await client.end().catch(() => undefined);
  }
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    throw new Error(`Redis is not reachable at ${TEST_REDIS_URL}: ${(err as Error).message}`);
  } finally {
    redis.disconnect();
  }
}
