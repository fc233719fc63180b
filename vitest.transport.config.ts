import { defineConfig } from 'vitest/config';

/**
 * The transport's tests alone (test/transport/), without the global setup that checks PostgreSQL
 * and Redis: they need neither. `npx vitest run --config vitest.transport.config.ts`.
 * `npm test` runs them too, with the rest of the suite.
 */
export default defineConfig({
  test: {
    include: ['test/transport/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
