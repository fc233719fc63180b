/**
 * Helpers for router-level tests (createCaller against a real app on a per-file database and a
 * per-file Redis prefix). Only used by test/router.*.test.ts.
 */
import { isTrackedEnvelope, TRPCError } from '@trpc/server';
import type { TRPC_ERROR_CODE_KEY } from '@trpc/server/rpc';
import { expect } from 'vitest';
import type { App } from '../src/app.js';
import type { Config } from '../src/config.js';
import type { MemberRole, RoomEvent } from '../src/domain/events.js';
import type { Actor } from '../src/domain/actor.js';
import { em, sql } from '../src/services/deps.js';
import { createCaller } from '../src/trpc/router.js';
import { TEST_REDIS_URL } from './env.js';
import { createTestDatabase, startServer, testConfig, testPrefix, type TestServer } from './helpers.js';

export interface TestApp {
  srv: TestServer;
  app: App;
  databaseUrl: string;
  /** Closes the app and drops its database. */
  close(): Promise<void>;
}

/** A real app (PostgreSQL + Redis bus) on a fresh database and a fresh Redis prefix. */
export async function startTestApp(label: string, overrides: Partial<Config> = {}): Promise<TestApp> {
  const db = await createTestDatabase(label);
  let srv: TestServer;
  try {
    srv = await startServer(
      testConfig({ databaseUrl: db.url, redisUrl: TEST_REDIS_URL, redisPrefix: testPrefix(label), ...overrides }),
    );
  } catch (err) {
    await db.drop();
    throw err;
  }
  return {
    srv,
    app: srv.app,
    databaseUrl: db.url,
    async close() {
      try {
        await srv.close();
      } finally {
        await db.drop();
      }
    },
  };
}

/**
 * Awaits a call that must fail with a TRPCError of `code`; optionally checks its message.
 * Returns the error for further assertions.
 */
export async function expectTRPCError(
  p: Promise<unknown>,
  code: TRPC_ERROR_CODE_KEY,
  message?: string | RegExp,
): Promise<TRPCError> {
  const err = await p.then(
    (value) => {
      throw new Error(`expected a ${code} error, but the call succeeded with ${JSON.stringify(value)?.slice(0, 300)}`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TRPCError);
  expect(err).toMatchObject({ code });
  if (message !== undefined) expect((err as TRPCError).message).toMatch(message);
  return err as TRPCError;
}

/** Rejects after `ms` unless `p` settles first (a bound so a broken stream fails instead of hanging). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export interface Tracked {
  id: string;
  event: RoomEvent;
}

/** A `chat.events` subscription opened through createCaller, with its own AbortController. */
export interface EventStream {
  /** The next tracked event (fails after `timeoutMs`). */
  next(timeoutMs?: number): Promise<Tracked>;
  /** The next `n` tracked events. */
  take(n: number, timeoutMs?: number): Promise<Tracked[]>;
  /** Resolves true once the iterator reports done (the stream ended). */
  ended(timeoutMs?: number): Promise<boolean>;
  /** Aborts the subscription (the caller's signal). */
  abort(): void;
}

export async function openEvents(
  app: App,
  a: Actor | null,
  input: { roomId: string; lastEventId?: string | null },
): Promise<EventStream> {
  const ac = new AbortController();
  const caller = createCaller(
    { actor: a, authError: a ? null : 'missing access token', services: app.services },
    { signal: ac.signal },
  );
  const iterable = (await caller.chat.events(input)) as unknown as AsyncIterable<unknown>;
  const it = iterable[Symbol.asyncIterator]();
  const next = async (timeoutMs = 5000): Promise<Tracked> => {
    const r = await within(it.next(), timeoutMs, 'the next chat.events event');
    if (r.done) throw new Error('chat.events ended unexpectedly');
    const v = r.value;
    if (!isTrackedEnvelope(v)) throw new Error(`chat.events yielded an untracked value: ${JSON.stringify(v)}`);
    const [id, event] = v;
    return { id, event: event as RoomEvent };
  };
  return {
    next,
    async take(n, timeoutMs) {
      const out: Tracked[] = [];
      for (let i = 0; i < n; i++) out.push(await next(timeoutMs));
      return out;
    },
    async ended(timeoutMs = 5000) {
      const r = await within(it.next(), timeoutMs, 'chat.events to end');
      return r.done === true;
    },
    abort: () => ac.abort(),
  };
}

/**
 * Sets a member's role directly in PostgreSQL. Test setup only: the router has no `room.setRole`
 * yet, and removeMember/leave rules need admins and moderators.
 */
export async function setMemberRole(app: App, roomId: string, userId: string, role: MemberRole): Promise<void> {
  const rows = await sql(em(app.services.deps), 'update membership set role = ? where room_id = ? and user_id = ? returning user_id', [
    role,
    roomId,
    userId,
  ]);
  if (rows.length !== 1) throw new Error(`${userId} is not a member of ${roomId}`);
}
