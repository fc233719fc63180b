import { defineEntity, p } from '@mikro-orm/core';

/**
 * Leases of the jobs that one node at a time runs (listed in `entities`, src/store/entities.ts):
 * retention. A node takes the row when it is free or its lease ran out, renews it as it goes and
 * deletes it when done; a node that dies leaves a lease that runs out by itself. Plain rows and
 * short statements, unlike session advisory locks, work behind a transaction-mode pooler (PgBouncer).
 */
export const JobLease = defineEntity({
  name: 'JobLease',
  tableName: 'job_lease',
  properties: {
    /** The job (`retention`). */
    name: p.string().length(64).primary(),
    /** Who holds it: one run of one node (host, pid and a random id). */
    owner: p.string().length(200),
    /** Free again from then on (the database's clock: nodes' clocks do not matter). */
    leaseUntil: p.datetime(),
  },
});
