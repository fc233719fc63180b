/**
 * `npm run bench:call`: what one procedure call costs the server's JavaScript, through tRPC's
 * `callTRPCProcedure` and through the transport's `callProcedure` (src/transport/call.ts), on the
 * shape of a chat send: one middleware that adds to the context, a zod input, a resolver. Rounds
 * alternate between the two; each prints the mean µs per call over 100,000 sequential calls.
 */
import { callTRPCProcedure, initTRPC } from '@trpc/server';
import { z } from 'zod';
import { callProcedure } from '../src/transport/index.js';

const t = initTRPC.context<{ actor: { id: string } | null; services: object; authError: string | null }>().create();
const authed = t.procedure.use(({ ctx, next }) => {
  if (!ctx.actor) throw new Error('unauthorized');
  return next({ ctx: { ...ctx, actor: ctx.actor } });
});
const router = t.router({
  send: authed.input(z.object({ roomId: z.uuid(), clientId: z.uuid(), body: z.string().max(4000) })).mutation(({ input }) => input.body.length),
});
const ctx = { actor: { id: 'ann' }, services: {}, authError: null };
const input = { roomId: '0f1c3a52-6a3e-4b4f-9a61-1d2b7f0a9c11', clientId: '6f9619ff-8b86-4d01-b42d-00cf4fc964ff', body: 'hello there' };
const N = 100_000;
const ROUNDS = 5;

async function measure(call: typeof callProcedure): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < N; i++) await call({ router, path: 'send', getRawInput: async () => input, ctx, type: 'mutation', signal: undefined, batchIndex: 0 });
  return ((performance.now() - start) * 1000) / N;
}

const sums = { trpc: 0, ours: 0 };
for (let round = 0; round <= ROUNDS; round++) {
  const trpc = await measure(callTRPCProcedure);
  const ours = await measure(callProcedure);
  // Round 0 warms both up and is not counted.
  if (round > 0) {
    sums.trpc += trpc;
    sums.ours += ours;
  }
  console.log(`round ${round}${round === 0 ? ' (warm-up)' : ''}: callTRPCProcedure ${trpc.toFixed(2)} µs/call, callProcedure ${ours.toFixed(2)} µs/call`);
}
console.log(`mean of ${ROUNDS} rounds (Node ${process.version}): callTRPCProcedure ${(sums.trpc / ROUNDS).toFixed(2)} µs/call, callProcedure ${(sums.ours / ROUNDS).toFixed(2)} µs/call`);
