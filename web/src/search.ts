/**
 * Message search over the rooms I can read (`chat.search`): results with their room and a
 * highlighted snippet; choosing one jumps to the message in its room (the room view loads the
 * history around it).
 */
import type { ChatClient, RouterOutputs } from '../../client/index.js';
import { $, dateTimeFmt, errorText, h } from './dom.js';

type Hit = RouterOutputs['chat']['search']['hits'][number];

const ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'" };
const decodeEntities = (s: string) => s.replace(/&(amp|lt|gt|quot|#39);/g, (e) => ENTITIES[e] ?? e);

/**
 * The server's snippet (HTML-escaped text with `<mark>` around matches) as DOM nodes: text nodes and
 * `<mark>` elements only, never parsed as HTML.
 */
export function snippetNodes(snippet: string): Node[] {
  const out: Node[] = [];
  let marked = false;
  for (const part of snippet.split(/(<mark>|<\/mark>)/)) {
    if (part === '<mark>') marked = true;
    else if (part === '</mark>') marked = false;
    else if (part) out.push(marked ? h('mark', {}, decodeEntities(part)) : document.createTextNode(decodeEntities(part)));
  }
  return out;
}

export function setUpSearch(opts: {
  chat: () => ChatClient | null;
  nameOf: (roomId: string, userId: string) => string;
  jump: (hit: { roomId: string; messageId: string; seq: number; replyToId: string | null }) => void;
}) {
  const input = $<HTMLInputElement>('search-input');
  const panel = $('search-panel');
  const list = $('search-results');
  const status = $('search-status');
  let ticket = 0;

  const close = () => {
    ticket++;
    panel.hidden = true;
    list.replaceChildren();
    status.textContent = '';
  };

  const run = async (query: string) => {
    const chat = opts.chat();
    if (!chat) return;
    const mine = ++ticket;
    panel.hidden = false;
    status.textContent = 'Searching…';
    list.replaceChildren();
    try {
      const { hits, skippedEncryptedRooms } = await chat.trpc.chat.search.query({ query, limit: 30 });
      if (mine !== ticket) return;
      const skipped = skippedEncryptedRooms ? ` (${skippedEncryptedRooms} encrypted ${skippedEncryptedRooms === 1 ? 'room' : 'rooms'} not searched)` : '';
      status.textContent = `${hits.length ? `${hits.length} ${hits.length === 1 ? 'result' : 'results'}` : 'No results'}${skipped}`;
      list.replaceChildren(...hits.map((hit) => resultEl(hit)));
    } catch (err) {
      if (mine === ticket) status.textContent = `Search failed: ${errorText(err)}`;
    }
  };

  const resultEl = (hit: Hit) => {
    const m = hit.message;
    const button = h(
      'button',
      { type: 'button', class: 'search-hit', 'data-room-id': hit.roomId, 'data-message-id': m.id, 'data-seq': m.seq },
      h('span', { class: 'hit-room' }, `# ${hit.roomName}`),
      h('span', { class: 'hit-meta' }, `${opts.nameOf(hit.roomId, m.senderId)} · ${dateTimeFmt.format(m.createdAt)}`),
      h('span', { class: 'hit-snippet' }, ...snippetNodes(hit.snippet)),
    );
    button.addEventListener('click', () => opts.jump({ roomId: hit.roomId, messageId: m.id, seq: m.seq, replyToId: m.replyToId }));
    return h('li', {}, button);
  };

  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = input.value.trim();
    if (q) void run(q);
    else close();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      input.value = '';
      close();
    } else if (e.key === 'ArrowDown' && !panel.hidden) {
      e.preventDefault();
      list.querySelector<HTMLElement>('.search-hit')?.focus();
    }
  });
  // Arrow keys move between results; Escape goes back to the box.
  list.addEventListener('keydown', (e) => {
    const hits = [...list.querySelectorAll<HTMLElement>('.search-hit')];
    const i = hits.indexOf(document.activeElement as HTMLElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = e.key === 'ArrowDown' ? Math.min(hits.length - 1, i + 1) : i - 1;
      (next < 0 ? input : hits[next])?.focus();
    } else if (e.key === 'Escape') input.focus();
  });
  $('search-close').addEventListener('click', () => {
    close();
    input.focus();
  });
  return { close };
}
