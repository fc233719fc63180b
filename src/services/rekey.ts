import type { Logger } from '../logger.js';
import {
  lockSealedEdits,
  lockSealedMessages,
  lockWebhookSecrets,
  resealEdit,
  resealMessage,
  type SealedBody,
  sealedRowsByKey,
  setWebhookSecret,
  webhookSecrets,
} from '../store/rekey.js';
import type { Store } from '../store/store.js';
import type { Tx } from '../store/tx.js';
import type { Keyring } from './keyring.js';
import { bodyContext } from './messages/shared.js';
import type { SecretBox } from './webhooks/secrets.js';

/** What one table's pass did. */
export interface RekeyCounts {
  /** Rows looked at (sealed ones). */
  seen: number;
  /** Rows sealed anew with the active key. */
  resealed: number;
  /** Rows that could not be opened (key not configured, or tampered): left as they are. */
  failed: number;
}

export interface RekeyReport {
  activeKeyId: string;
  messages: RekeyCounts;
  edits: RekeyCounts;
  webhookSecrets: RekeyCounts;
}

/** How many rows and secrets each key id still holds: a key may leave MESSAGE_KEYS at 0. */
export interface KeyUsage {
  activeKeyId: string | null;
  /** Message bodies and their earlier versions per key id. */
  bodies: Record<string, number>;
  /** Webhook secrets per key id (`plain`: not sealed). */
  webhookSecrets: Record<string, number>;
}

const zero = (): RekeyCounts => ({ seen: 0, resealed: 0, failed: 0 });
/**
 * A batch runs again when PostgreSQL aborts it for a deadlock: its rows are locked in id order, while
 * a reply's delete locks the reply, then its root (src/store/tx.ts), so the two can cross. Nothing of
 * a batch leaves its transaction before commit (its counts are added once it committed).
 */
const RETRY = { retry: true } as const;
const add = (to: RekeyCounts, from: RekeyCounts) => {
  to.seen += from.seen;
  to.resealed += from.resealed;
  to.failed += from.failed;
};

/**
 * The re-encryption job after a key rotation (docs/SECURITY.md, "Rotating message keys"): seals
 * every body of an encrypted room, every earlier version of one, and every webhook secret with the
 * active key (the first of MESSAGE_KEYS), bound to its room and message (a secret: to its tenant
 * and endpoint). Rows sealed before the
 * binding (`iv.tag.ciphertext`) are bound on the way. It walks each table once in primary key order,
 * one transaction per batch, with the batch's rows locked (an edit waits, and is never overwritten);
 * it can stop and run again at any time, and rows already current are left alone. A row it cannot
 * open (its key is gone, or it was tampered with) is counted and left as it is.
 */
export class Rekeyer {
  constructor(
    private readonly store: Store,
    private readonly keyring: Keyring,
    private readonly secrets: SecretBox,
    private readonly log: Logger,
    private readonly batchSize = 500,
  ) {}

  async usage(): Promise<KeyUsage> {
    const db = this.store.db();
    const [bodies, secrets] = await Promise.all([sealedRowsByKey(db), webhookSecrets(db)]);
    const hooks: Record<string, number> = {};
    for (const s of secrets) {
      const kid = this.secrets.keyIdOf(s) ?? 'plain';
      hooks[kid] = (hooks[kid] ?? 0) + 1;
    }
    return { activeKeyId: this.keyring.activeId, bodies, webhookSecrets: hooks };
  }

  async run(onBatch?: (report: RekeyReport) => void): Promise<RekeyReport> {
    const active = this.keyring.activeId;
    if (!active) throw new Error('MESSAGE_KEYS is not configured: there is no key to re-encrypt with');
    const report: RekeyReport = { activeKeyId: active, messages: zero(), edits: zero(), webhookSecrets: zero() };
    await this.pass(lockSealedMessages, resealMessage, report.messages, () => onBatch?.(report));
    await this.pass(lockSealedEdits, resealEdit, report.edits, () => onBatch?.(report));
    await this.secretPass(report.webhookSecrets, () => onBatch?.(report));
    this.log.info({ rekey: report }, 're-encryption finished');
    return report;
  }

  private async pass(
    lock: (tx: Tx, afterId: string | null, limit: number) => Promise<SealedBody[]>,
    write: (tx: Tx, id: string, body: string, keyId: string) => Promise<void>,
    counts: RekeyCounts,
    progress: () => void,
  ): Promise<void> {
    let after: string | null = null;
    for (;;) {
      // Counted per attempt and added once committed: a batch that deadlocks runs again.
      const { page: rows, batch } = await this.store.transact(async (tx) => {
        const batch = zero();
        const page = await lock(tx, after, this.batchSize);
        for (const row of page) {
          batch.seen++;
          if (this.keyring.isCurrent(row.key_id, row.body)) continue;
          const context = bodyContext(row.room_id, row.message_id);
          let plain: string;
          try {
            plain = this.keyring.decrypt(row.key_id, row.body, context);
          } catch (err) {
            batch.failed++;
            this.log.warn({ err, id: row.id, keyId: row.key_id }, 're-encryption: a body could not be opened, left as it is');
            continue;
          }
          const sealed = this.keyring.encrypt(plain, context);
          await write(tx, row.id, sealed.text, sealed.keyId);
          batch.resealed++;
        }
        return { page, batch };
      }, RETRY);
      add(counts, batch);
      progress();
      if (rows.length < this.batchSize) return;
      after = rows[rows.length - 1]!.id;
    }
  }

  private async secretPass(counts: RekeyCounts, progress: () => void): Promise<void> {
    let after: string | null = null;
    for (;;) {
      const { page: rows, batch } = await this.store.transact(async (tx) => {
        const batch = zero();
        const page = await lockWebhookSecrets(tx, after, this.batchSize);
        for (const row of page) {
          batch.seen++;
          if (this.secrets.current(row.secret)) continue;
          let plain: string;
          try {
            plain = this.secrets.open(row.secret, row);
          } catch (err) {
            batch.failed++;
            this.log.warn({ err, id: row.id }, 're-encryption: a webhook secret could not be opened, left as it is');
            continue;
          }
          await setWebhookSecret(tx, row.id, this.secrets.seal(plain, row));
          batch.resealed++;
        }
        return { page, batch };
      }, RETRY);
      add(counts, batch);
      progress();
      if (rows.length < this.batchSize) return;
      after = rows[rows.length - 1]!.id;
    }
  }
}
