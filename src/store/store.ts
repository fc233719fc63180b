import type { MessageDto } from '../domain/events.js';
import { type Db, kysely, type Orm } from './database.js';
import { appendMessageRows, type NewMessage } from './hot/append-messages.js';
import type { StatementPipe } from './hot/pipe.js';
import type { HotContext } from './hot/query.js';
import { type TransactOptions, transact, type Tx, type TxContext } from './tx.js';

export type { NewMessage } from './hot/append-messages.js';

/** What became of one grouped send: written, a repeat of an earlier clientId, its room is gone or archived. */
/** `stale`: checked against a cached access row whose room changed since (nothing written; check again). */
export type AppendOutcome = { kind: 'new'; message: MessageDto } | { kind: 'repeat' } | { kind: 'gone' } | { kind: 'archived' } | { kind: 'stale' };

/**
 * The persistence layer as services see it: reads on a fresh EntityManager, durable changes in a
 * transaction (`transact`, see tx.ts), and the grouped send of plain messages.
 */
export class Store {
  readonly hot: HotContext;
  /**
   * Groups of `appendMessages` that may be in flight at once (the send batcher's `maxInflight`): 2
   * on the statement pipe (one connection runs them one after the other, in order), 1 on the pool.
   */
  readonly sendGroupsInFlight: number;
  /** Transactions run again after a deadlock or serialization failure (`transact` with `retry`). */
  readonly txStats = { retried: 0 };
  private readonly ctx: TxContext;

  constructor(
    readonly orm: Orm,
    ctx: TxContext,
    opts: { preparedStatements: boolean; pipe?: StatementPipe | null },
  ) {
    this.hot = { orm, prepared: opts.preparedStatements, pipe: opts.preparedStatements ? (opts.pipe ?? null) : null };
    this.sendGroupsInFlight = this.hot.pipe ? 2 : 1;
    this.ctx = {
      ...ctx,
      onRetry: (err, attempt) => {
        this.txStats.retried++;
        ctx.onRetry?.(err, attempt);
      },
    };
  }

  /** The typed query builder on a fresh EntityManager (never the global one), for reads outside a transaction. */
  db(): Db {
    return kysely(this.orm.em.fork());
  }

  /**
   * Runs `fn` in a transaction; the events it appended are published after commit, in order. With
   * `retry`, a deadlock or serialization failure runs it again (tx.ts `TransactOptions`: only for
   * callbacks with no effect outside the transaction before commit).
   */
  transact<T>(fn: (tx: Tx) => Promise<T>, opts?: TransactOptions): Promise<T> {
    return transact(this.orm.em, this.ctx, fn, opts);
  }

  /**
   * Writes plain new messages of any rooms in one statement (src/store/hot/append-messages.ts). One
   * outcome per input, in input order (seq order within each room). The new messages' events are not
   * published here: the caller hands the outcomes to `publishAppended`, in the order of the writes
   * (the send batcher does it while the next group is written).
   */
  async appendMessages(messages: NewMessage[]): Promise<AppendOutcome[]> {
    const { outcomes: rows, hooked, notified } = await appendMessageRows(this.hot, messages, this.ctx.notifyQueue?.() ?? null);
    if (hooked) this.ctx.onOutbox?.();
    if (notified) this.ctx.onNotify?.();
    return rows.map((o) => (o.kind === 'new' ? { kind: 'new', message: this.ctx.toMessage(o.row) } : o));
  }

  /**
   * Publishes the events of the messages `appendMessages` wrote, in input order (seq order per room).
   * Never throws: a failed publish is the job error it is after any commit (the hubs fill what the
   * bus lost from the room log).
   */
  publishAppended(outcomes: AppendOutcome[]): void {
    for (const o of outcomes) {
      if (o.kind !== 'new') continue;
      const { roomId, seq } = o.message;
      try {
        void this.ctx.publisher.room({ type: 'message.new', roomId, seq, message: o.message }).catch((err: unknown) => this.ctx.onJobError(err));
      } catch (err) {
        this.ctx.onJobError(err);
      }
    }
  }
}
