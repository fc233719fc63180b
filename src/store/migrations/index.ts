import type { Migration } from '@mikro-orm/migrations';
import { Migration20261122030345 } from './Migration20261122030345.js';
import { Migration20261122031149 } from './Migration20261122031149.js';
import { Migration20261122033500 } from './Migration20261122033500.js';
import { Migration20261122041500 } from './Migration20261122041500.js';
import { Migration20261203024714 } from './Migration20261203024714.js';
import { Migration20261203024718 } from './Migration20261203024718.js';
import { Migration20261203025941 } from './Migration20261203025941.js';
import { Migration20261203051657 } from './Migration20261203051657.js';
import { Migration20261203053808 } from './Migration20261203053808.js';
import { Migration20261203054653 } from './Migration20261203054653.js';
import { Migration20261203061216 } from './Migration20261203061216.js';
import { Migration20261203140426 } from './Migration20261203140426.js';
import { Migration20261204032611 } from './Migration20261204032611.js';
import { Migration20261204033330 } from './Migration20261204033330.js';
import { Migration20261204040128 } from './Migration20261204040128.js';
import { Migration20261204164140 } from './Migration20261204164140.js';
import { Migration20261204170052 } from './Migration20261204170052.js';
import { Migration20261204184731 } from './Migration20261204184731.js';
import { Migration20261205000000 } from './Migration20261205000000.js';
import { Migration20261206030742 } from './Migration20261206030742.js';
import { Migration20261206070000 } from './Migration20261206070000.js';
import { Migration20261206080000 } from './Migration20261206080000.js';
import { Migration20261206084404 } from './Migration20261206084404.js';
import { Migration20261206100000 } from './Migration20261206100000.js';

type MigrationCtor = new (...args: ConstructorParameters<typeof Migration>) => Migration;

/** Every migration, in order. New migrations are appended here (see `npm run migration:create`). */
export const migrationsList: { name: string; class: MigrationCtor }[] = [
  { name: 'Migration20261122030345', class: Migration20261122030345 },
  { name: 'Migration20261122031149', class: Migration20261122031149 },
  { name: 'Migration20261122033500', class: Migration20261122033500 },
  { name: 'Migration20261122041500', class: Migration20261122041500 },
  { name: 'Migration20261203024714', class: Migration20261203024714 },
  { name: 'Migration20261203024718', class: Migration20261203024718 },
  { name: 'Migration20261203025941', class: Migration20261203025941 },
  { name: 'Migration20261203051657', class: Migration20261203051657 },
  // Webhook secrets sealed with MESSAGE_KEYS are longer than the plain ones.
  { name: 'Migration20261203053808', class: Migration20261203053808 },
  // Notifications: push devices, preferences, the push queue and e-mail digests; users' e-mail.
  { name: 'Migration20261203054653', class: Migration20261203054653 },
  // The durable audit trail (admin.audit).
  { name: 'Migration20261203061216', class: Migration20261203061216 },
  // room.access_version and the triggers that bump it: sends checked against a cached access row.
  { name: 'Migration20261203140426', class: Migration20261203140426 },
  // job_lease: one node at a time runs retention (a lease row, not a session advisory lock: PgBouncer).
  { name: 'Migration20261204032611', class: Migration20261204032611 },
  // notify_digest: an exact cursor (after_room_id, after_seq) and `queued` with the trigger that bumps it.
  { name: 'Migration20261204033330', class: Migration20261204033330 },
  // membership.receipt_seq: the read receipt others see, apart from last_read_seq (mine; markUnread moves it back).
  { name: 'Migration20261204040128', class: Migration20261204040128 },
  // video_removal: users to take out of a room's calls, retried until the provider answers.
  { name: 'Migration20261204164140', class: Migration20261204164140 },
  // room.directory: pg_trgm, the listed rooms in name order, and trigram indexes on name and topic (partial: public, not archived).
  { name: 'Migration20261204170052', class: Migration20261204170052 },
  // The grouped send: no foreign keys on message.room_id and room_event.room_id; the thread index partial (replies only).
  { name: 'Migration20261204184731', class: Migration20261204184731 },
  // The full-text index's pending list at 512 kB: its merges hold a send for a few ms, not ~100.
  { name: 'Migration20261205000000', class: Migration20261205000000 },
  // inbox_event: sender_id, client_id and request_hash of inbox.notify items with a clientId, unique per user.
  { name: 'Migration20261206030742', class: Migration20261206030742 },
  // webhook_delivery.last_error: the snippets of endpoints' answers kept before are dropped (data only).
  { name: 'Migration20261206070000', class: Migration20261206070000 },
  // meeting: the expiry sweep's partial index (provider, expires_at, id) over the meetings not ended.
  { name: 'Migration20261206080000', class: Migration20261206080000 },
  // deleted_meeting: a deleted room's meetings while their join tokens may be valid (a late join ends the provider room again).
  { name: 'Migration20261206084404', class: Migration20261206084404 },
  // notify_push.claim_kind: the kind a claim was taken with, so a takeover from a dead node keeps it.
  { name: 'Migration20261206100000', class: Migration20261206100000 },
];
