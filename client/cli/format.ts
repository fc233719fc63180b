/** How the CLI shows messages, rooms and events in a terminal (colors only on a color terminal). */
import pc from 'picocolors';
import { unreadLabel } from '../index.js';
import type { Member, Message, PresenceStatus, RoomEvent, RoomListItem, SearchHit } from '../types.js';

const PALETTE = [pc.cyan, pc.magenta, pc.yellow, pc.green, pc.blue, pc.red] as const;

/** A stable color per user. */
export function userColor(userId: string): (s: string) => string {
  let h = 0;
  for (let i = 0; i < userId.length; i++) h = (h * 31 + userId.charCodeAt(i)) >>> 0;
  return PALETTE[h % PALETTE.length]!;
}

export const who = (userId: string) => pc.bold(userColor(userId)(userId));

export function clock(d: Date | string): string {
  const date = typeof d === 'string' ? new Date(d) : d;
  return `${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
}

/**
 * A field shown inside a line (a file's name, a link, a topic): its line breaks become spaces, so
 * text another user chose cannot start a line that passes for a message of someone else.
 */
const flat = (s: string) => s.replace(/\s*\n\s*/g, ' ');

/** A body's own lines, indented under its head for the same reason. */
const indented = (s: string) => s.replace(/\n/g, '\n    ');

export function reactionsText(m: Pick<Message, 'reactions'>): string {
  if (m.reactions.length === 0) return '';
  return ` ${pc.dim('[')}${m.reactions.map((r) => `${r.emoji}${r.count > 1 ? ` ${r.count}` : ''}`).join(pc.dim(', '))}${pc.dim(']')}`;
}

/** `12:03 #12 alice: hello (edited) [👍 2]` */
export function formatMessage(m: Message, mark = ''): string {
  const head = `${pc.dim(clock(m.createdAt))} ${pc.dim(`#${m.seq}`)}${mark ? ` ${mark}` : ''}`;
  // A system message's body can hold text users chose (a meeting title) or come from a service.
  if (m.kind === 'system') return `${head} ${pc.dim(`* ${indented(m.body ?? '')}`)}`;
  if (m.kind === 'card' && m.card && !m.deletedAt) return `${head} ${who(m.senderId)}: ${formatCard(m.card)}${reactionsText(m)}`;
  // A body's own lines are indented under its head, so a message cannot pass for another's line.
  const body = m.deletedAt || m.body === null ? pc.dim(pc.italic('(deleted)')) : indented(m.body);
  // An uploaded file shows its id (`chat download <id>`); a link its URL.
  const files = m.attachments
    .map((a) => pc.dim(` [${a.mime?.startsWith('image/') ? 'image' : 'file'}: ${flat(a.name)} ${'fileId' in a ? a.fileId : flat(a.url)}]`))
    .join('');
  const edited = m.editedAt && !m.deletedAt ? pc.dim(' (edited)') : '';
  return `${head} ${who(m.senderId)}: ${body}${files}${edited}${reactionsText(m)}`;
}

/**
 * A card as a few lines under its message head: the title, `label: value` per field, then the links
 * (`label: url`). Each line indented, so no line of a card passes for another message.
 */
export function formatCard(card: NonNullable<Message['card']>): string {
  const lines = [
    pc.bold(flat(card.title)),
    ...card.fields.map((f) => `    ${pc.dim(`${flat(f.label)}:`)} ${flat(f.value)}`),
    ...(card.links ?? []).map((l) => `    ${pc.dim('↗')} ${flat(l.label)}: ${pc.underline(flat(l.url))}`),
  ];
  return lines.join('\n');
}

export const presenceDot = (s: PresenceStatus | undefined) =>
  s === 'online' ? pc.green('●') : s === 'away' ? pc.yellow('●') : s === 'dnd' ? pc.red('●') : pc.dim('○');

/**
 * One line for a room event, or null when it is not worth a line. `seqOf` maps a message id to its
 * seq when the caller knows it (reactions name the message by id).
 */
export function formatEvent(
  e: RoomEvent,
  seqOf: (messageId: string) => number | undefined = () => undefined,
  /** The user at the terminal: their own presence changes are not news to them and are not shown. */
  selfId?: string,
): string | null {
  switch (e.type) {
    case 'ready':
      return null;
    case 'reset':
      return pc.yellow(`(the stream could not continue from the last event seen: some messages before #${e.seq} are not shown; see the history)`);
    case 'message.new':
      return formatMessage(e.message);
    case 'message.edited':
      return formatMessage(e.message, pc.yellow('✎ edited'));
    case 'message.deleted':
      return `${pc.dim(clock(new Date()))} ${pc.dim(`#${e.message.seq}`)} ${pc.red('✗ deleted')}`;
    case 'reaction.added':
    case 'reaction.removed': {
      const seq = seqOf(e.messageId);
      const target = seq === undefined ? 'a message' : `#${seq}`;
      const verb = e.type === 'reaction.added' ? 'reacted' : 'took back';
      return pc.dim(`${e.userId} ${verb} ${e.emoji} ${e.type === 'reaction.added' ? 'to' : 'on'} ${target}`);
    }
    case 'member.joined':
      return pc.dim(`* ${e.userId} joined as ${e.role}`);
    case 'member.left':
      return pc.dim(`* ${e.userId} ${e.reason === 'left' ? 'left' : `was ${e.reason}`}`);
    case 'member.updated':
      return pc.dim(`* ${e.userId} is now ${e.role}${e.mutedUntil ? `, muted until ${e.mutedUntil.toISOString()}` : ''}`);
    case 'room.updated':
      return pc.dim(`* room is now "${flat(e.name)}"${e.topic ? ` (${flat(e.topic)})` : ''}`);
    case 'typing':
      return e.typing ? pc.dim(`… ${e.userId} is typing`) : null;
    case 'presence':
      return e.userId === selfId ? null : `${presenceDot(e.status)} ${pc.dim(`${e.userId} is ${e.status}`)}`;
    case 'receipt.read':
      return pc.dim(`✓ ${e.userId} read up to #${e.seq}`);
    default:
      return null;
  }
}

export function formatRoom(r: RoomListItem): string {
  const unread = r.unreadCount > 0 ? pc.bold(pc.yellow(` ${unreadLabel(r.unreadCount)} unread`)) : '';
  const last = r.lastMessage ? pc.dim(`  ${r.lastMessage.senderId}: ${truncate(r.lastMessage.deletedAt ? '(deleted)' : r.lastMessage.body || r.lastMessage.card?.title || '', 40)}`) : '';
  return `${pc.bold(r.name)} ${pc.dim(`(${r.kind})`)}${unread}  ${pc.dim(r.id)}${last}`;
}

export function formatMember(m: Member, status?: PresenceStatus): string {
  const muted = m.mutedUntil ? pc.red(' muted') : '';
  return `${status !== undefined ? `${presenceDot(status)} ` : ''}${who(m.userId)}${m.name !== m.userId ? pc.dim(` (${m.name})`) : ''} ${pc.dim(m.role)}${muted}`;
}

export function formatHit(h: SearchHit): string {
  const snippet = h.snippet.replace(/<mark>(.*?)<\/mark>/g, (_, s: string) => pc.bold(pc.yellow(s)));
  return `${pc.bold(h.roomName)} ${pc.dim(`#${h.message.seq}`)} ${who(h.message.senderId)}: ${flat(unescapeHtml(snippet))}  ${pc.dim(h.roomId)}`;
}

function unescapeHtml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');
}

export function truncate(s: string, n: number): string {
  const one = s.replace(/\s+/g, ' ');
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}
