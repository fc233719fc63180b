/** The one-shot commands and `tail`. Each gets a Context (URL, token, output) from cli.ts. */
import pc from 'picocolors';
import { allMembers, allRooms, newClientId, RoomTimeline, type ChatClient, type RoomEvent } from '../index.js';
import { configPath, removeLogin, saveLogin, type StoredLogin } from './config.js';
import { isCode, terminalClient, type Context } from './context.js';
import { CliError } from './errors.js';
import { formatEvent, formatHit, formatMember, formatMessage, formatRoom } from './format.js';
import { uploadFiles } from './files.js';
import { createMeeting } from './video.js';

export async function login(ctx: Context, username: string | undefined, opts: { name?: string; tenant?: string }): Promise<void> {
  const explicitToken = ctx.tokenSource === 'cli' || (!username && ctx.tokenSource === 'env') ? ctx.opts.token : undefined;
  let stored: StoredLogin;
  if (explicitToken) {
    const c = terminalClient({ url: ctx.url, token: explicitToken, lazy: true });
    try {
      const me = await c.trpc.auth.me.query();
      stored = {
        token: explicitToken,
        user: { id: me.id, name: me.name, tenant: me.tenant },
        expiresAt: me.expiresAt ? me.expiresAt.toISOString() : null,
        via: 'token',
        savedAt: new Date().toISOString(),
      };
    } catch (err) {
      if (isCode(err, 'UNAUTHORIZED')) throw new CliError(`login refused by ${ctx.url}: ${(err as Error).message}`);
      throw err;
    } finally {
      await c.close();
    }
  } else {
    if (!username) throw new CliError('give a username (dev login) or --token <token>');
    const c = terminalClient({ url: ctx.url, lazy: true });
    try {
      const res = await c.trpc.auth.devLogin.mutate({
        username,
        ...(opts.name ? { name: opts.name } : {}),
        ...(opts.tenant ? { tenant: opts.tenant } : {}),
      });
      stored = {
        token: res.token,
        user: { id: res.user.id, name: res.user.name, tenant: res.user.tenant },
        expiresAt: res.expiresAt.toISOString(),
        via: 'dev',
        savedAt: new Date().toISOString(),
      };
    } catch (err) {
      if (isCode(err, 'FORBIDDEN')) {
        throw new CliError(`login refused by ${ctx.url}: ${(err as Error).message} (log in with --token <token> from your identity provider)`);
      }
      throw err;
    } finally {
      await c.close();
    }
  }
  await saveLogin(ctx.url, stored);
  ctx.out.result(
    { url: ctx.url, user: stored.user, expiresAt: stored.expiresAt, config: configPath() },
    `logged in to ${ctx.url} as ${pc.bold(stored.user.id)}${stored.user.name !== stored.user.id ? ` (${stored.user.name})` : ''}; token saved in ${configPath()}`,
  );
}

export async function logout(ctx: Context): Promise<void> {
  const removed = await removeLogin(ctx.url);
  ctx.out.result({ url: ctx.url, removed }, removed ? `logged out of ${ctx.url}` : `no stored login for ${ctx.url}`);
}

export async function whoami(ctx: Context): Promise<void> {
  const c = await ctx.client();
  const me = await c.trpc.auth.me.query();
  ctx.out.result(me, `${pc.bold(me.id)} (${me.name}) tenant ${me.tenant}${me.roles.length ? `, roles ${me.roles.join(', ')}` : ''} at ${ctx.url}`);
}

export async function rooms(ctx: Context): Promise<void> {
  const c = await ctx.client();
  const list = await allRooms(c);
  for (const r of list) ctx.out.result(r, () => formatRoom(r));
  if (list.length === 0) ctx.out.note('no rooms yet: `chat create <name>` or `chat dm <user>`');
}

export async function create(
  ctx: Context,
  name: string,
  opts: { member: string[]; kind: 'group' | 'support' | 'broadcast'; key?: string; topic?: string },
): Promise<void> {
  const c = await ctx.client();
  const room = await c.trpc.room.create.mutate({
    kind: opts.kind,
    name,
    ...(opts.member.length ? { memberIds: opts.member } : {}),
    ...(opts.key ? { key: opts.key } : {}),
    ...(opts.topic ? { topic: opts.topic } : {}),
  });
  ctx.out.result(room, `created ${pc.bold(room.name)} ${pc.dim(`(${room.kind})`)} ${room.id}`);
}

export async function dm(ctx: Context, user: string): Promise<void> {
  const c = await ctx.client();
  const room = await c.trpc.room.openDirect.mutate({ userId: user });
  ctx.out.result(room, `direct room with ${pc.bold(user)}: ${room.id}`);
}

export async function members(ctx: Context, roomArg: string): Promise<void> {
  const c = await ctx.client();
  const room = await ctx.resolveRoom(c, roomArg);
  const list = await allMembers(c, room.id);
  const status = await presenceOf(c, list.map((m) => m.userId));
  for (const m of list) ctx.out.result({ ...m, status: status.get(m.userId) ?? 'offline' }, () => formatMember(m, status.get(m.userId)));
}

export async function presenceOf(c: ChatClient, userIds: string[]) {
  const out = new Map<string, Awaited<ReturnType<ChatClient['trpc']['presence']['get']['query']>>[number]['status']>();
  for (let i = 0; i < userIds.length; i += 200) {
    for (const p of await c.trpc.presence.get.query({ userIds: userIds.slice(i, i + 200) })) out.set(p.userId, p.status);
  }
  return out;
}

export async function history(ctx: Context, roomArg: string, opts: { limit?: number; before?: number; after?: number }): Promise<void> {
  const c = await ctx.client();
  const room = await ctx.resolveRoom(c, roomArg);
  const page = await c.trpc.chat.history.query({
    roomId: room.id,
    limit: opts.limit ?? 50,
    ...(opts.before !== undefined ? { beforeSeq: opts.before } : {}),
    ...(opts.after !== undefined ? { afterSeq: opts.after } : {}),
  });
  for (const m of page.messages) ctx.out.result(m, () => formatMessage(m));
  if (page.hasMore && page.messages.length > 0) {
    const hint = opts.after !== undefined ? `--after ${page.messages.at(-1)!.seq}` : `--before ${page.messages[0]!.seq}`;
    ctx.out.note(pc.dim(`(more: ${hint})`));
  }
}

export async function send(ctx: Context, roomArg: string, words: string[], opts: { file?: string[]; mime?: string } = {}): Promise<void> {
  const body = words.join(' ');
  const paths = opts.file ?? [];
  if (!body.trim() && paths.length === 0) throw new CliError('nothing to send: give the message text or --file <path>');
  if (paths.length > 10) throw new CliError('at most 10 files per message');
  const c = await ctx.client();
  const room = await ctx.resolveRoom(c, roomArg);
  const files = await uploadFiles(ctx, c, room.id, paths, opts.mime);
  const kind = files.length === 0 ? undefined : files.every((f) => f.mime.startsWith('image/')) ? 'image' : 'file';
  const m = await c.trpc.chat.send.mutate({ roomId: room.id, clientId: newClientId(), body, ...(kind ? { kind, attachments: files } : {}) });
  const attached = files.length ? ` with ${files.length} file${files.length > 1 ? 's' : ''}` : '';
  ctx.out.result(m, `sent #${m.seq} to ${pc.bold(room.name)}${attached}`);
}

export async function search(ctx: Context, words: string[], opts: { room?: string; limit?: number }): Promise<void> {
  const c = await ctx.client();
  const roomId = opts.room ? (await ctx.resolveRoom(c, opts.room)).id : undefined;
  const res = await c.trpc.chat.search.query({ query: words.join(' '), ...(roomId ? { roomId } : {}), ...(opts.limit ? { limit: opts.limit } : {}) });
  for (const h of res.hits) ctx.out.result(h, () => formatHit(h));
  if (res.hits.length === 0) ctx.out.note('no matches');
  if (res.skippedEncryptedRooms > 0) ctx.out.note(pc.dim(`(${res.skippedEncryptedRooms} encrypted rooms not searched)`));
}

export async function read(ctx: Context, roomArg: string, seq: number | undefined): Promise<void> {
  const c = await ctx.client();
  const room = await ctx.resolveRoom(c, roomArg);
  const res = await c.trpc.receipt.markRead.mutate({ roomId: room.id, seq: seq ?? room.lastSeq });
  ctx.out.result(res, `${pc.bold(room.name)}: read up to #${res.lastReadSeq}`);
}

export async function meet(ctx: Context, roomArg: string, opts: { title?: string }): Promise<void> {
  const c = await ctx.client();
  const room = await ctx.resolveRoom(c, roomArg);
  const join = await createMeeting(c, room.id, opts.title);
  ctx.out.result(join, [
    `meeting ${join.meetingId} in ${pc.bold(room.name)} (${join.provider})`,
    `  join: ${pc.underline(join.url)}`,
    `  token: ${join.token}`,
    ...(join.expiresAt ? [pc.dim(`  token expires ${join.expiresAt}`)] : []),
  ].join('\n'));
}

/**
 * Follows a room until Ctrl-C. With --json, one line per event: the event object the subscription
 * yields as `data` (`{ type, roomId, seq?, ... }`), `ready` included.
 */
export async function tail(ctx: Context, roomArg: string, opts: { since?: number }): Promise<void> {
  let wasOpen = false;
  let warned = false;
  const c = await ctx.client();
  const room = await ctx.resolveRoom(c, roomArg);
  const me = ctx.json ? null : await c.trpc.auth.me.query();
  const seen = new RoomTimeline(null);
  const stopState = c.onStateChange(({ state, error }) => {
    if (state === 'open') {
      if (warned) ctx.out.note(pc.green(wasOpen ? 'reconnected' : 'connected'));
      wasOpen = true;
      warned = false;
    } else if (state === 'connecting' && error && !warned) {
      warned = true;
      ctx.out.note(pc.yellow(wasOpen ? 'connection lost: reconnecting…' : `cannot connect to ${ctx.url}: retrying…`));
    }
  });
  await new Promise<void>((resolve, reject) => {
    const sub = c.subscribeRoom(
      room.id,
      {
        onEvent: (event: RoomEvent) => {
          if (event.type === 'message.new') seen.load([event.message]);
          if (ctx.json) return ctx.out.jsonLine(event);
          if (event.type === 'ready') return ctx.out.note(pc.dim(`following ${room.name} from #${event.seq} (Ctrl-C to stop)`));
          const line = formatEvent(event, (id) => seen.byMessageId(id)?.seq, me?.id);
          if (line) ctx.out.line(line);
        },
        onError: (err) => {
          sub.unsubscribe();
          reject(err);
        },
      },
      { lastEventId: opts.since !== undefined ? String(opts.since) : null },
    );
    const stop = () => {
      sub.unsubscribe();
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  }).finally(stopState);
}
