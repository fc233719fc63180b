/**
 * Helpers for the rich-chat tests (test/messages.rich.test.ts): the inbox stream through
 * createCaller, and an app started on an existing database (restarts with other config).
 */
import { isTrackedEnvelope } from '@trpc/server';
import type { Config } from '../src/config.js';
import type { App } from '../src/app.js';
import type { InboxEvent } from '../src/domain/events.js';
import type { Actor } from '../src/domain/actor.js';
import { createCaller } from '../src/trpc/router.js';
import { TEST_REDIS_URL } from './env.js';
import { startServer, testConfig, testPrefix, type TestServer } from './helpers.js';
import { within } from './router-helpers.js';

export interface InboxStream {
  /** The next tracked inbox event (fails after `timeoutMs`). */
  next(timeoutMs?: number): Promise<{ id: string; event: InboxEvent }>;
  abort(): void;
}

/** `inbox.events` opened through createCaller (tracked tuples unwrapped), abortable. */
export async function openInbox(app: App, a: Actor, input: { lastEventId?: string | null } = {}): Promise<InboxStream> {
  const ac = new AbortController();
  const caller = createCaller({ actor: a, authError: null, services: app.services }, { signal: ac.signal });
  const iterable = (await caller.inbox.events(input)) as unknown as AsyncIterable<unknown>;
  const it = iterable[Symbol.asyncIterator]();
  return {
    async next(timeoutMs = 5000) {
      const r = await within(it.next(), timeoutMs, 'the next inbox.events event');
      if (r.done) throw new Error('inbox.events ended unexpectedly');
      if (!isTrackedEnvelope(r.value)) throw new Error(`inbox.events yielded an untracked value: ${JSON.stringify(r.value)}`);
      const [id, event] = r.value;
      return { id, event: event as InboxEvent };
    },
    abort: () => ac.abort(),
  };
}

/** A real app (Redis bus) on an existing database: for restarts with another configuration. */
export function startAppOn(databaseUrl: string, label: string, overrides: Partial<Config> = {}): Promise<TestServer> {
  return startServer(testConfig({ databaseUrl, redisUrl: TEST_REDIS_URL, redisPrefix: testPrefix(label), ...overrides }));
}
