import type { Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import { excerpt, oneLine } from '../../domain/text.js';
import type { DigestItem } from '../../store/notify.js';

/** A link to a room on the chat page (`#/room/<id>`, as web/src/main.ts reads it). */
export function roomUrl(base: string | null, roomId: string | null): string {
  const root = base ?? '';
  return roomId ? `${root}/#/room/${roomId}` : `${root}/`;
}

/** What a push or a digest may show of a message: nothing of an encrypted room's body. */
export function previewOf(m: { encrypted: boolean; roomName: string; body: string | null; deleted: boolean }): string {
  if (m.encrypted) return `New message in ${m.roomName}`;
  if (m.deleted || m.body === null) return '(deleted)';
  return excerpt(oneLine(m.body), 140);
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

export interface Digest {
  subject: string;
  text: string;
  html: string;
}

/**
 * The e-mail of unread mentions and direct messages, grouped by room: plain text and HTML. Names are
 * put on one line (`oneLine`): one stored with a line break (before names were checked) would add
 * lines of its own to the plain text, read as the mail's.
 */
export function renderDigest(name: string, items: DigestItem[], base: string | null): Digest {
  const rooms = new Map<string, DigestItem[]>();
  for (const it of items) rooms.set(it.room_id, [...(rooms.get(it.room_id) ?? []), it]);
  const userName = oneLine(name);
  const sender = (m: DigestItem) => oneLine(m.sender_name ?? m.sender_id);
  const label = (r: DigestItem) => (r.room_kind === 'direct' ? `Direct message from ${sender(r)}` : oneLine(r.room_name));
  const n = items.length;
  const subject = `${n} unread ${n === 1 ? 'message' : 'messages'} for you`;
  const text: string[] = [`Hello ${userName},`, '', `while you were away you got ${n} ${n === 1 ? 'message' : 'messages'}:`, ''];
  const html: string[] = [`<p>Hello ${escapeHtml(userName)},</p>`, `<p>while you were away you got ${n} ${n === 1 ? 'message' : 'messages'}:</p>`];
  for (const [roomId, list] of rooms) {
    const first = list[0]!;
    const url = roomUrl(base, roomId);
    text.push(`${label(first)} (${url})`);
    html.push(`<h3><a href="${escapeHtml(url)}">${escapeHtml(label(first))}</a></h3><ul>`);
    for (const m of list) {
      const line = previewOf({ encrypted: m.encrypted || m.key_id !== null, roomName: oneLine(m.room_name), body: m.body, deleted: false });
      const who = sender(m);
      text.push(`  ${who}: ${line}`);
      html.push(`<li><b>${escapeHtml(who)}</b>: ${escapeHtml(line)}</li>`);
    }
    text.push('');
    html.push('</ul>');
  }
  text.push('You get this because you were mentioned or sent a direct message. Turn digests off in the notification settings.');
  html.push('<p style="color:#666">You get this because you were mentioned or sent a direct message. Turn digests off in the notification settings.</p>');
  return { subject, text: text.join('\n'), html: html.join('\n') };
}

/** What a claim's lease leaves after its send's deadline: the database writes that record the outcome. */
const LEASE_MARGIN_MS = 5000;

/**
 * The one rule for the send of a claimed notification row (a push, an e-mail digest): it may take
 * `timeoutMs` (PUSH_TIMEOUT_MS) in all and is then cut off, as a failure retried later; the claim's
 * lease is that plus a margin. So a send has always ended before its lease runs out and another node
 * can claim the row: each row is handled by one node at a time.
 */
export function sendLimits(timeoutMs: number): { deadlineMs: number; leaseMs: number } {
  return { deadlineMs: timeoutMs, leaseMs: timeoutMs + LEASE_MARGIN_MS };
}

/**
 * Sends e-mail over SMTP_URL (nodemailer). The URL is checked at start; nodemailer is loaded and
 * the transport made with the first e-mail (a node that sends none does not carry the library).
 * Each step of the SMTP exchange is bounded by `timeoutMs`, and the whole exchange (connection,
 * greeting, commands, message) by one deadline (`sendLimits`): when it passes, the connection is
 * closed and the send fails.
 */
export class Mailer {
  private readonly options: SMTPTransport.Options;
  private transport: Promise<Transporter> | null = null;
  /** How long one send may take in all. */
  readonly deadlineMs: number;

  constructor(
    url: string,
    private readonly from: string,
    timeoutMs: number,
  ) {
    const u = new URL(url);
    this.options = {
      host: u.hostname,
      port: u.port ? Number(u.port) : u.protocol === 'smtps:' ? 465 : 587,
      secure: u.protocol === 'smtps:',
      ...(u.username ? { auth: { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } } : {}),
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
    };
    this.deadlineMs = sendLimits(timeoutMs).deadlineMs;
  }

  private transporter(): Promise<Transporter> {
    this.transport ??= import('nodemailer').then(({ default: nodemailer }) => nodemailer.createTransport(this.options));
    return this.transport;
  }

  /**
   * Sends one e-mail, ended by `deadlineMs` from now or by `opts.by` (a `Date.now()` time), whichever
   * comes first, or when `opts.signal` aborts: the connection is closed and the send fails. A cut-off
   * send may still have been accepted by the server (at least once).
   */
  async send(to: string, d: Digest, opts: { by?: number; signal?: AbortSignal } = {}): Promise<void> {
    const startedAt = Date.now();
    const budget = Math.max(0, Math.min(this.deadlineMs, (opts.by ?? Number.POSITIVE_INFINITY) - startedAt));
    const cut = new AbortController();
    const timer = setTimeout(() => cut.abort(new Error(`the SMTP exchange did not end within its deadline (${budget} ms)`)), budget);
    const onAbort = () => cut.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) onAbort();
    try {
      await (await this.transporter()).sendMail({ from: this.from, to, subject: d.subject, text: d.text, html: d.html, signal: cut.signal });
    } catch (err) {
      throw cut.signal.aborted && cut.signal.reason instanceof Error ? cut.signal.reason : err;
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  close(): void {
    void this.transport?.then((t) => t.close(), () => undefined);
  }
}
