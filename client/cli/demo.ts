/**
 * `demo`: two simulated users (dev logins `demo-alice` and `demo-bob`) talk in a new room over
 * real WebSockets: typing, messages, a reaction, read receipts. Prints the room as Alice's
 * subscription sees it, checks that both users received every message once and in order, and
 * exits 0 after N messages.
 */
import pc from 'picocolors';
import { newClientId, type ChatClient, type RoomEvent } from '../index.js';
import { isCode, terminalClient, type Context } from './context.js';
import { CliError } from './errors.js';
import { formatEvent } from './format.js';

const SCRIPT = [
  ['alice', 'Hi Bob! Is the new chat server up?'],
  ['bob', 'Hey Alice, yes: tRPC over WebSockets, Postgres and Redis behind it.'],
  ['alice', 'Nice. What happens if my laptop drops off the network?'],
  ['bob', 'Your client resumes from the last event id it saw: nothing lost, nothing twice.'],
  ['alice', 'And if a server restarts?'],
  ['bob', 'Same thing: another node replays from PostgreSQL, then goes live.'],
  ['alice', 'Typing indicators and read receipts too?'],
  ['bob', 'Live only, never replayed. You are looking at them right now.'],
] as const;

const WAIT_MS = 15_000;

interface Participant {
  name: 'alice' | 'bob';
  id: string;
  client: ChatClient;
  messages: number[];
  waiters: { pred: () => boolean; resolve: () => void }[];
}

export async function demo(ctx: Context, opts: { messages: number; delay: number }): Promise<void> {
  const started = Date.now();
  const anon = terminalClient({ url: ctx.url, lazy: true });
  const login = async (username: string) => {
    try {
      return await anon.trpc.auth.devLogin.mutate({ username });
    } catch (err) {
      if (isCode(err, 'FORBIDDEN')) throw new CliError(`the demo needs dev login, which ${ctx.url} has disabled (AUTH_DEV_LOGIN)`);
      throw err;
    }
  };
  const people: Participant[] = [];
  try {
    const [a, b] = [await login('demo-alice'), await login('demo-bob')];
    for (const [name, res] of [['alice', a], ['bob', b]] as const) {
      people.push({ name, id: res.user.id, client: terminalClient({ url: ctx.url, token: res.token }), messages: [], waiters: [] });
    }
    const [alice, bob] = people as [Participant, Participant];
    const room = await alice.client.trpc.room.create.mutate({ kind: 'group', name: `demo ${new Date().toISOString().slice(11, 19)}`, memberIds: [bob.id] });
    ctx.out.note(pc.bold(`demo room "${room.name}" ${pc.dim(room.id)} on ${ctx.url}`));

    const check = (p: Participant) => {
      p.waiters = p.waiters.filter((w) => {
        if (!w.pred()) return true;
        w.resolve();
        return false;
      });
    };
    const until = (p: Participant, pred: () => boolean, what: string) =>
      new Promise<void>((resolve, reject) => {
        if (pred()) return resolve();
        const timer = setTimeout(() => reject(new CliError(`demo: timed out waiting for ${what}`)), WAIT_MS);
        p.waiters.push({
          pred,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    let ready = 0;
    const subs = people.map((p) =>
      p.client.subscribeRoom(room.id, {
        onEvent: (event: RoomEvent) => {
          if (event.type === 'ready') ready++;
          if (event.type === 'message.new' && event.message.kind !== 'system') p.messages.push(event.message.seq);
          if (p === alice) show(ctx, event);
          check(p);
          for (const q of people) check(q);
        },
        onError: (err) => {
          for (const w of p.waiters) w.resolve();
          ctx.out.note(pc.red(`${p.name}: ${err.message}`));
        },
      }),
    );
    await Promise.all(people.map((p) => until(p, () => ready === people.length, 'both subscriptions')));

    let firstFromAlice: string | null = null;
    for (let i = 0; i < opts.messages; i++) {
      const [who, text] = SCRIPT[i % SCRIPT.length]!;
      const p = who === 'alice' ? alice : bob;
      await p.client.trpc.chat.typing.mutate({ roomId: room.id, typing: true });
      if (opts.delay > 0) await new Promise((r) => setTimeout(r, opts.delay)); // a person typing
      const m = await p.client.trpc.chat.send.mutate({ roomId: room.id, clientId: newClientId(), body: text });
      firstFromAlice ??= p === alice ? m.id : null;
      await Promise.all(people.map((q) => until(q, () => q.messages.includes(m.seq), `message #${m.seq} at ${q.name}`)));
      if (i === 1 && firstFromAlice) await bob.client.trpc.chat.react.mutate({ messageId: firstFromAlice, emoji: '👍' });
    }
    for (const p of people) {
      const last = Math.max(...p.messages);
      await p.client.trpc.receipt.markRead.mutate({ roomId: room.id, seq: last });
    }
    for (const s of subs) s.unsubscribe();
    for (const p of people) {
      const inOrder = p.messages.every((s, i) => i === 0 || p.messages[i - 1]! < s);
      if (p.messages.length !== opts.messages || !inOrder) {
        throw new CliError(`demo: ${p.name} received ${p.messages.length} of ${opts.messages} messages${inOrder ? '' : ' out of order'}`);
      }
    }
    const ms = Date.now() - started;
    ctx.out.result(
      { type: 'summary', roomId: room.id, messages: opts.messages, users: people.map((p) => p.id), ms },
      pc.green(`demo done: ${opts.messages} messages, each received once and in order by both users, in ${ms} ms`),
    );
  } finally {
    await Promise.allSettled([anon.close(), ...people.map((p) => p.client.close())]);
  }
}

function show(ctx: Context, event: RoomEvent): void {
  if (ctx.json) {
    ctx.out.jsonLine(event);
    return;
  }
  if (event.type === 'ready' || event.type === 'member.joined') return;
  const line = formatEvent(event);
  if (line) ctx.out.line(line);
}
