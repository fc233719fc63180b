import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { AUDIT_ACTIONS, AUDIT_CURSOR } from '../domain/audit.js';
import type { ExportRecord } from '../domain/compliance.js';
import type { Flow, StreamConn } from '../stream/streams.js';
import type { Context } from '../trpc/context.js';
import { adminProcedure, router } from '../trpc/init.js';
import { streamConn } from '../trpc/stream-conn.js';
import { InputDate, RoomId, UserId } from './schemas.js';

/**
 * Waits while the caller's socket holds more than the soft limit of unsent bytes (ends with the
 * signal). The wait also ends the tick, and so the transport's cork of the socket: what was
 * written meanwhile goes to the kernel.
 */
async function drain(flow: Flow, signal: AbortSignal | undefined): Promise<void> {
  while (!signal?.aborted && flow.buffered() > flow.soft) {
    await sleep(20, undefined, { signal }).catch(() => undefined);
  }
}

/**
 * Before each page of an export: waits for the socket to drain, so no page is read while it is
 * full. No socket (createCaller): no wait.
 */
function pacer(conn: StreamConn, signal: AbortSignal | undefined): () => Promise<void> {
  return async () => {
    if (conn.flow) await drain(conn.flow, signal);
  };
}

/**
 * Runs an export as a pulled subscription: one value per JSON line, ending after the `end` record.
 * The checks (role, tenant, NOT_FOUND) and the audit row happen before the subscription starts, so
 * a refusal is the call's error.
 */
async function exportStream(
  ctx: Context,
  signal: AbortSignal | undefined,
  open: (pace: () => Promise<void>) => Promise<AsyncGenerator<ExportRecord>>,
): Promise<AsyncGenerator<ExportRecord>> {
  const conn = streamConn(ctx, signal);
  let records: AsyncGenerator<ExportRecord>;
  try {
    records = await open(pacer(conn, signal));
  } catch (err) {
    conn.release?.();
    throw err;
  }
  const flow = conn.flow;
  return (async function* () {
    try {
      for await (const r of records) {
        // Paced per record too: a page yielded in one go is written in one tick, corked, and
        // counted whole against the hard limit (4008; an export has no resume point). Here the
        // socket holds at most the soft limit and one record. Drained: no wait.
        if (flow && flow.buffered() > flow.soft) await drain(flow, signal);
        if (signal?.aborted) return;
        yield r;
      }
    } finally {
      conn.release?.();
    }
  })();
}

/** Compliance for tenant admins: exports, erasure, the audit trail (docs/SECURITY.md, "Compliance"). */
export const adminRouter = router({
  /** Everything the tenant holds about a user, as JSON Lines records (subscription; ends after `end`). */
  exportUser: adminProcedure
    .input(z.object({ userId: UserId }))
    .subscription(({ ctx, input, signal }) => exportStream(ctx, signal, (pace) => ctx.services.compliance.exportUser(ctx.actor, input.userId, pace))),

  /** A room with its members, messages (edits, reactions), files and membership events, as JSON Lines records. */
  exportRoom: adminProcedure
    .input(z.object({ roomId: RoomId }))
    .subscription(({ ctx, input, signal }) => exportStream(ctx, signal, (pace) => ctx.services.compliance.exportRoom(ctx.actor, input.roomId, pace))),

  /** Erases a user's content and shows them as "deleted user" (idempotent). */
  eraseUser: adminProcedure
    .input(z.object({ userId: UserId }))
    .mutation(({ ctx, input }) => ctx.services.compliance.eraseUser(ctx.actor, input.userId)),

  /** The tenant's audit trail, newest first (default 100, at most 500 per page). */
  audit: adminProcedure
    .input(
      z.object({
        since: InputDate('since').nullish(),
        actorId: UserId.nullish(),
        roomId: RoomId.nullish(),
        action: z.enum(AUDIT_ACTIONS, { error: `action must be one of ${AUDIT_ACTIONS.join(', ')}` }).nullish(),
        cursor: z.string().max(100).regex(AUDIT_CURSOR, 'cursor must be a nextCursor of admin.audit').nullish(),
        limit: z.number().int().min(1, 'limit is at least 1').max(500, 'limit is at most 500').default(100),
      }),
    )
    .query(({ ctx, input }) => ctx.services.compliance.audit(ctx.actor, input)),
});
