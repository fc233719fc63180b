/**
 * `chat <room>`: an interactive terminal chat on node:readline.
 *
 * Scrollback comes from history, then the room's events follow from the last seq shown
 * (`ChatClient.openRoom`): a reconnect or a server restart resumes from the last event id, and the
 * timeline drops anything it has already shown, so no line is lost or repeated. Lines typed while
 * the server is away are queued and sent, in order, with their client ids (sends are idempotent).
 *
 * The end of the input (Ctrl-D, `/quit`, a pipe that ends) leaves once the scrollback is shown, the
 * queued lines are sent and the room has shown them; Ctrl-C (SIGINT) and SIGTERM leave at once:
 * the wait for a retry and a send on its way are cut short, and every line not sent is named.
 *
 * The exit code tells a script (`printf 'deploy done\n' | chat ops || alert`) whether its lines went
 * out: 0 when every line was sent, 1 when one was not (refused, or left unsent by Ctrl-C), else 3
 * when one was not confirmed (Ctrl-C cut its send short: it may have reached the server).
 */
import { emitKeypressEvents, createInterface, clearLine, cursorTo, type Interface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import pc from 'picocolors';
import { allMembers, backoff, isTransient, newClientId, retryAfterMs, type ChatClient, type Message, type Room, type RoomEvent } from '../index.js';
import type { Context } from './context.js';
import { CliError, describeError } from './errors.js';
import { formatEvent, formatMember, formatMessage } from './format.js';
import { presenceOf } from './commands.js';
import { clean } from './terminal.js';
import { createMeeting } from './video.js';

/** Send `typing: true` at most this often while keys are pressed (the server coalesces within 3 s). */
const TYPING_EVERY_MS = 3_000;
/** Send `typing: false` after this long without a key. */
const TYPING_IDLE_MS = 5_000;
/**
 * On the way out, how long the lines just sent may take to come back through the room's events
 * (shown in the room's order); those that have not by then are shown from the send's answer.
 */
const ECHO_WAIT_MS = 5_000;
/** The exit code when no line was refused but one was not confirmed (it may have been sent). */
const EXIT_NOT_CONFIRMED = 3;

const HELP = [
  'Enter sends the line. Commands:',
  '  /react <seq> <emoji>    react to message #seq (/unreact to take it back)',
  '  /edit <seq> <text>      edit your message #seq',
  '  /delete <seq>           delete message #seq',
  '  /who                    members and who is online',
  '  /more                   load older messages',
  '  /meet [title]           start a video meeting and print the join link',
  '  /leave                  leave the room and quit',
  '  /quit                   quit (Ctrl-D too)',
].join('\n');

export async function chat(ctx: Context, roomArg: string, opts: { history?: number }): Promise<void> {
  const client = await ctx.client();
  const room = await ctx.resolveRoom(client, roomArg);
  const me = await client.trpc.auth.me.query();
  const session = new ChatSession(ctx, client, room, me.id, opts.history ?? 30);
  await session.run();
}

class ChatSession {
  private readonly tty = !!(process.stdin.isTTY && process.stdout.isTTY);
  private rl!: Interface;
  private readonly queue: { clientId: string; body: string }[] = [];
  private sending = false;
  private drained: (() => void) | null = null;
  private lastTypingSent = 0;
  private typingOn = false;
  private typingIdle: NodeJS.Timeout | null = null;
  private markTimer: NodeJS.Timeout | null = null;
  private typingExpiry: NodeJS.Timeout | null = null;
  private lastMarked = -1;
  private wasOpen = false;
  private done!: () => void;
  private fail!: (err: unknown) => void;
  private room!: ReturnType<ChatClient['openRoom']>;
  private quitting = false;
  /** Aborted by Ctrl-C / SIGTERM: every wait of the way out ends, a send on its way is abandoned. */
  private readonly interrupt = new AbortController();
  /** Resolved once the scrollback is printed: lines are sent (and shown) after it. */
  private scrollbackShown!: () => void;
  private readonly scrollback = new Promise<void>((r) => (this.scrollbackShown = r));
  /** Lines sent whose `message.new` has not been shown yet, by message id. */
  private readonly unechoed = new Map<string, Message>();
  /** Called on every change of the room view (the way out waits for the echo of the lines sent). */
  private roomChanged: (() => void) | null = null;
  /** Lines given to send in this run, and those not sent / not confirmed (for the exit code). */
  private readonly lines = { total: 0, notSent: 0, notConfirmed: 0 };

  constructor(
    private readonly ctx: Context,
    private readonly client: ChatClient,
    private readonly info: Room,
    private readonly selfId: string,
    private readonly historyLimit: number,
  ) {}

  async run(): Promise<void> {
    const finished = new Promise<void>((resolve, reject) => {
      this.done = resolve;
      this.fail = reject;
    });
    finished.catch(() => undefined); // a failure before we wait on it is still reported below
    this.rl = createInterface({ input: process.stdin, output: process.stdout, terminal: this.tty, historySize: 200 });
    this.rl.setPrompt(this.promptText());
    this.rl.on('line', (line) => void this.onLine(line));
    this.rl.on('close', () => void this.quit());
    this.rl.on('SIGINT', () => void this.quit('interrupt')); // Ctrl-C in a terminal
    if (this.tty) {
      emitKeypressEvents(process.stdin, this.rl);
      process.stdin.on('keypress', (_s: string, key: { name?: string } | undefined) => {
        if (key?.name !== 'return' && key?.name !== 'enter') this.keyPressed();
      });
    }
    process.once('SIGTERM', () => void this.quit('interrupt'));
    process.once('SIGINT', () => void this.quit('interrupt'));

    this.print(pc.bold(`── ${this.info.name} `) + pc.dim(`(${this.info.kind}, ${this.info.memberCount} members) · /help for commands`));
    let warned = false;
    this.client.onStateChange(({ state, error, closeCode }) => {
      if (process.env.CHAT_DEBUG) {
        const causes: string[] = [];
        for (let e: unknown = error; e && causes.length < 5; e = (e as { cause?: unknown }).cause) causes.push(String((e as Error).message ?? (e as { type?: string }).type ?? e));
        process.stderr.write(`[debug] ${new Date().toISOString()} connection ${state} ${closeCode ?? ''} ${causes.join(' <- ')}\n`);
      }
      if (state === 'open') {
        if (warned) this.print(pc.green(this.wasOpen ? '✓ reconnected' : '✓ connected'));
        this.wasOpen = true;
        warned = false;
      } else if (state === 'connecting' && error && !warned) {
        warned = true;
        this.print(pc.yellow(this.wasOpen ? '⚠ connection lost: reconnecting…' : `⚠ cannot connect to ${this.ctx.url}: retrying…`));
      }
    });

    this.room = this.client.openRoom(this.info.id, {
      historyLimit: this.historyLimit,
      onChange: (event, fresh) => {
        if (event && fresh) this.show(event);
        this.roomChanged?.();
      },
      onError: (err) => this.fail(new CliError(describeError(err, this.ctx.url))),
    });
    this.room.timeline.selfId = this.selfId;
    const shown = (async () => {
      await this.room.loaded;
      if (this.interrupt.signal.aborted) return;
      for (const m of this.room.timeline.messages()) this.showMessage(m, 'history');
      this.scrollbackShown();
      // Who is online is a nicety: a server going away right now must not end the session.
      await this.showPresence().catch(() => undefined);
      if (this.quitting) return;
      this.scheduleMarkRead();
      if (this.tty) this.rl.prompt();
    })();
    // Ctrl-C while the room loads ends the session without it.
    await Promise.race([shown, finished]);
    await finished;
    this.failIfNotSent();
  }

  /** Ends the run with a non-zero exit (one line on stderr) when a line did not surely go out. */
  private failIfNotSent(): void {
    const { total, notSent, notConfirmed } = this.lines;
    const of = `of ${total} line${total === 1 ? '' : 's'}`;
    if (notSent > 0) throw new CliError(`${notSent} ${of} not sent${notConfirmed > 0 ? `, ${notConfirmed} not confirmed` : ''}`);
    if (notConfirmed > 0) throw new CliError(`${notConfirmed} ${of} not confirmed: it may have been sent`, EXIT_NOT_CONFIRMED);
  }

  /** Resolves when `p` does, or at once on Ctrl-C (answering false then). */
  private async unlessInterrupted(p: Promise<unknown>): Promise<boolean> {
    const signal = this.interrupt.signal;
    if (signal.aborted) return false;
    let stop!: () => void;
    const interrupted = new Promise<false>((r) => (stop = () => r(false)));
    signal.addEventListener('abort', stop, { once: true });
    try {
      return await Promise.race([p.then(() => true), interrupted]);
    } finally {
      signal.removeEventListener('abort', stop);
    }
  }

  // ---- output --------------------------------------------------------------------------------

  /** A line for people: stdout, or stderr in --json mode (stdout carries only JSON there). */
  private print(line: string): void {
    if (this.ctx.json) {
      process.stderr.write(`${line}\n`);
    } else if (this.tty) {
      clearLine(process.stdout, 0);
      cursorTo(process.stdout, 0);
      process.stdout.write(`${line}\n`);
      this.rl.prompt(true);
    } else {
      process.stdout.write(`${line}\n`);
    }
  }

  private promptText(): string {
    const typing = this.room?.timeline.typing() ?? [];
    const who = typing.length === 0 ? '' : pc.dim(`${typing.join(', ')} ${typing.length === 1 ? 'is' : 'are'} typing… `);
    return `${who}${pc.bold(this.info.name)}> `;
  }

  /**
   * Redraws the prompt, and again when the next typing indicator runs out: a stop that never
   * comes (the other client went away) must not leave "is typing" in a quiet room.
   */
  private refreshPrompt(): void {
    if (!this.tty) return;
    if (this.typingExpiry) clearTimeout(this.typingExpiry);
    this.typingExpiry = null;
    const next = this.room?.timeline.expireTyping() ?? null;
    if (next !== null && !this.quitting) {
      this.typingExpiry = setTimeout(() => this.refreshPrompt(), Math.max(0, next - Date.now()) + 1);
      this.typingExpiry.unref();
    }
    this.rl.setPrompt(this.promptText());
    this.rl.prompt(true);
  }

  private showMessage(m: Message, type: 'history' | 'message.new'): void {
    if (this.ctx.json) this.ctx.out.jsonLine(type === 'history' ? { type, message: m } : { type, roomId: m.roomId, seq: m.seq, message: m });
    else this.print(formatMessage(m));
  }

  private show(event: RoomEvent): void {
    if (event.type === 'message.new') {
      this.unechoed.delete(event.message.id);
      this.showMessage(event.message, 'message.new');
      if (event.message.senderId !== this.selfId) this.scheduleMarkRead();
      this.refreshPrompt();
      return;
    }
    if (this.ctx.json) {
      if (event.type !== 'ready') this.ctx.out.jsonLine(event);
      return;
    }
    if (event.type === 'typing') {
      // In a terminal the prompt shows who is typing; piped output gets a line when it starts.
      if (this.tty) {
        this.refreshPrompt();
        return;
      }
    }
    if (event.type === 'receipt.read') return; // shown by /who, not as a stream of lines
    if (event.type === 'member.joined' || event.type === 'member.left') return; // the system message says it
    const line = formatEvent(event, (id) => this.room.timeline.byMessageId(id)?.seq, this.selfId);
    if (line) this.print(line);
  }

  private async showPresence(): Promise<void> {
    const members = await allMembers(this.client, this.info.id);
    const status = await presenceOf(this.client, members.map((m) => m.userId));
    for (const [userId, s] of status) this.room.timeline.setPresence(userId, s);
    const online = members.filter((m) => m.userId !== this.selfId && status.get(m.userId) === 'online').map((m) => m.userId);
    if (this.ctx.json) return;
    this.print(pc.dim(online.length ? `online: ${online.join(', ')}` : 'nobody else is online'));
  }

  // ---- input ---------------------------------------------------------------------------------

  private keyPressed(): void {
    if (this.rl.line.startsWith('/')) return; // a command, not a message
    const now = Date.now();
    if (!this.typingOn || now - this.lastTypingSent >= TYPING_EVERY_MS) {
      this.typingOn = true;
      this.lastTypingSent = now;
      this.client.trpc.chat.typing.mutate({ roomId: this.info.id, typing: true }).catch(() => undefined);
    }
    if (this.typingIdle) clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  private stopTyping(): void {
    if (this.typingIdle) clearTimeout(this.typingIdle);
    this.typingIdle = null;
    if (!this.typingOn) return;
    this.typingOn = false;
    this.client.trpc.chat.typing.mutate({ roomId: this.info.id, typing: false }).catch(() => undefined);
  }

  private async onLine(raw: string): Promise<void> {
    const line = raw.trim();
    if (!line) {
      if (this.tty) this.rl.prompt();
      return;
    }
    if (line.startsWith('/') && !line.startsWith('//')) {
      try {
        await this.command(line);
      } catch (err) {
        this.print(pc.red(`error: ${describeError(err, this.ctx.url)}`));
      }
    } else {
      // `//text` sends "/text".
      this.typingOn = false;
      if (this.typingIdle) clearTimeout(this.typingIdle);
      this.enqueue(line.startsWith('//') ? line.slice(1) : line);
    }
    if (this.tty) this.rl.prompt();
  }

  private async command(line: string): Promise<void> {
    const [cmd = '', ...args] = line.slice(1).split(/\s+/);
    const t = this.client.trpc;
    switch (cmd.toLowerCase()) {
      case 'help':
        return this.print(HELP);
      case 'react':
      case 'unreact': {
        const [seqArg, emoji] = args;
        if (!seqArg || !emoji) throw new CliError(`usage: /${cmd} <seq> <emoji>`);
        const m = await this.messageAt(seqArg);
        if (cmd === 'react') await t.chat.react.mutate({ messageId: m.id, emoji });
        else await t.chat.unreact.mutate({ messageId: m.id, emoji });
        return;
      }
      case 'edit': {
        const parts = /^\/\S+\s+(\S+)\s+([\s\S]+)$/.exec(line);
        if (!parts) throw new CliError('usage: /edit <seq> <text>');
        const m = await this.messageAt(parts[1]!);
        await t.chat.edit.mutate({ messageId: m.id, body: parts[2]! });
        return;
      }
      case 'delete': {
        if (!args[0]) throw new CliError('usage: /delete <seq>');
        const m = await this.messageAt(args[0]);
        await t.chat.delete.mutate({ messageId: m.id });
        return;
      }
      case 'who': {
        const members = await allMembers(this.client, this.info.id);
        const status = await presenceOf(this.client, members.map((m) => m.userId));
        if (this.ctx.json) {
          for (const m of members) this.ctx.out.jsonLine({ type: 'member', ...m, status: status.get(m.userId) ?? 'offline' });
          return;
        }
        const lastSeq = this.room.timeline.lastSeq;
        this.print(
          members
            .map((m) => `  ${formatMember(m, status.get(m.userId))}${m.lastReadSeq >= lastSeq && lastSeq > 0 ? pc.dim(' ✓ read all') : ''}`)
            .join('\n'),
        );
        return;
      }
      case 'more': {
        const before = this.room.timeline.messages().length;
        const oldest = this.room.timeline.oldestSeq();
        const more = await this.room.loadOlder(this.historyLimit);
        if (!more) return this.print(pc.dim('(no older messages)'));
        const older = this.room.timeline.messages().filter((m) => oldest === null || m.seq < oldest);
        this.print(pc.dim(`── ${this.room.timeline.messages().length - before} older messages ──`));
        for (const m of older) this.showMessage(m, 'history');
        return;
      }
      case 'meet': {
        const join = await createMeeting(this.client, this.info.id, args.join(' ') || undefined);
        if (this.ctx.json) return this.ctx.out.jsonLine({ type: 'meeting', ...join });
        return this.print(`${pc.bold('meeting')} ${join.meetingId}: ${pc.underline(join.url)}\n  token: ${join.token}`);
      }
      case 'leave':
        await t.room.leave.mutate({ roomId: this.info.id });
        this.print(pc.dim(`you left ${this.info.name}`));
        return this.quit();
      case 'quit':
      case 'exit':
      case 'q':
        return this.quit();
      default:
        throw new CliError(`unknown command /${cmd} (try /help)`);
    }
  }

  /** The message with this seq: from the timeline, else fetched. */
  private async messageAt(seqArg: string): Promise<Message> {
    const seq = Number(seqArg.replace(/^#/, ''));
    if (!Number.isSafeInteger(seq) || seq < 0) throw new CliError(`"${seqArg}" is not a message number (the #seq shown before a message)`);
    const known = this.room.timeline.bySeq(seq);
    if (known) return known;
    const page = await this.client.trpc.chat.history.query({ roomId: this.info.id, afterSeq: Math.max(0, seq - 1), limit: 1 });
    const m = page.messages[0];
    if (!m || m.seq !== seq) throw new CliError(`no message #${seq} in this room`);
    return m;
  }

  // ---- sending ---------------------------------------------------------------------------------

  private enqueue(body: string): void {
    this.lines.total++;
    this.queue.push({ clientId: newClientId(), body });
    void this.pump();
  }

  /**
   * Sends queued lines in order, once the scrollback is shown; transient failures are retried with
   * the same client id. Ctrl-C ends the wait for a retry and abandons a send on its way: the lines
   * left are reported, none is tried again.
   */
  private async pump(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    const signal = this.interrupt.signal;
    await this.unlessInterrupted(this.scrollback);
    let attempt = 0;
    let warned = false;
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      if (signal.aborted) {
        this.queue.shift();
        this.notSent('not sent', next.body, 'interrupted');
        continue;
      }
      try {
        const m = await this.client.trpc.chat.send.mutate({ roomId: this.info.id, clientId: next.clientId, body: next.body }, { signal });
        this.queue.shift();
        // Shown when its `message.new` comes (in the room's order), unless that came first.
        if (!this.room.timeline.byMessageId(m.id)) this.unechoed.set(m.id, m);
        attempt = 0;
        warned = false;
      } catch (err) {
        if (signal.aborted) {
          this.queue.shift();
          this.notSent('not confirmed', next.body, 'interrupted before the server answered: it may have been sent');
          continue;
        }
        if (!isTransient(err) || this.quitting) {
          this.queue.shift();
          this.notSent('not sent', next.body, describeError(err, this.ctx.url));
          continue;
        }
        if (!warned) this.print(pc.yellow(`… server unreachable, will send when it is back (${this.queue.length} queued)`));
        warned = true;
        const wait = Math.max(backoff(attempt++), retryAfterMs(err) ?? 0);
        if (process.env.CHAT_DEBUG) process.stderr.write(`[debug] ${new Date().toISOString()} send ${next.clientId} failed: retry in ${wait} ms\n`);
        await sleep(wait, undefined, { signal }).catch(() => undefined);
      }
    }
    this.sending = false;
    this.drained?.();
  }

  /** Names a line that did not go out (its start: a long one is cut). */
  private notSent(what: 'not sent' | 'not confirmed', body: string, why: string): void {
    if (what === 'not sent') this.lines.notSent++;
    else this.lines.notConfirmed++;
    this.print(pc.red(`${what}: "${clean(body.length > 60 ? `${body.slice(0, 59)}…` : body)}" (${why})`));
  }

  /**
   * Waits (at most ECHO_WAIT_MS, or until Ctrl-C) until the room has shown the lines sent, then
   * shows those it has not from the send's answer: a pipe that ends right after its lines still
   * prints them, as the room numbers them.
   */
  private async showSent(): Promise<void> {
    const seen = () => [...this.unechoed.values()].every((m) => this.room.timeline.lastSeq >= m.seq);
    if (this.unechoed.size > 0 && !seen()) {
      let timer: NodeJS.Timeout | undefined;
      const caughtUp = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ECHO_WAIT_MS);
        this.roomChanged = () => {
          if (seen()) resolve();
        };
      });
      await this.unlessInterrupted(caughtUp);
      clearTimeout(timer);
      this.roomChanged = null;
    }
    for (const m of [...this.unechoed.values()].sort((a, b) => a.seq - b.seq)) this.showMessage(m, 'message.new');
    this.unechoed.clear();
  }

  private scheduleMarkRead(): void {
    if (this.markTimer) return;
    this.markTimer = setTimeout(() => {
      this.markTimer = null;
      const seq = this.room.timeline.lastSeq;
      if (seq <= this.lastMarked || seq < 0) return;
      this.lastMarked = seq;
      this.client.trpc.receipt.markRead.mutate({ roomId: this.info.id, seq }).catch(() => {
        this.lastMarked = -1;
      });
    }, 300);
  }

  /**
   * `end` (Ctrl-D, /quit, /leave, the end of piped input): the scrollback, then the lines already
   * typed go out (as long as the server answers) and are shown as the room has them. `interrupt`
   * (Ctrl-C, SIGTERM): at once, also in the middle of an `end`.
   */
  private async quit(how: 'end' | 'interrupt' = 'end'): Promise<void> {
    if (how === 'interrupt') this.interrupt.abort();
    if (this.quitting) return;
    this.quitting = true;
    if (how === 'end') await this.unlessInterrupted(this.scrollback);
    if (this.sending || this.queue.length > 0) await new Promise<void>((r) => (this.drained = r));
    await this.showSent();
    this.stopTyping();
    if (this.markTimer) clearTimeout(this.markTimer);
    if (this.typingExpiry) clearTimeout(this.typingExpiry);
    this.room?.close();
    this.rl.close();
    this.done();
  }
}
