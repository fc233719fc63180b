/**
 * DOM helpers of the page: element lookup and creation (text nodes only, never HTML from data),
 * the toast, avatars and formatting. Shared by every module of web/src.
 */
import type { Message } from '../../client/index.js';

// ---------------------------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------------------------

export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el as T;
}

export type Child = Node | string | null | undefined | false;
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === 'class') el.className = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/** Only https links of a card become links (the server refuses others; this page trusts no data). */
export const isHttps = (url: string) => URL.canParse(url) && new URL(url).protocol === 'https:';

/**
 * A card message (service tokens): its title, a label/value list and its links. Built from text
 * nodes only (never HTML from the data); links open in a new tab without opener or referrer.
 */
export function cardEl(card: NonNullable<Message['card']>): HTMLElement {
  return h(
    'div',
    { class: 'card' },
    h('div', { class: 'card-title' }, card.title),
    card.fields.length ? h('dl', { class: 'card-fields' }, ...card.fields.flatMap((f) => [h('dt', {}, f.label), h('dd', {}, f.value)])) : null,
    card.links?.length
      ? h(
          'div',
          { class: 'card-links' },
          ...card.links.map((l) =>
            isHttps(l.url) ? h('a', { href: l.url, target: '_blank', rel: 'noopener noreferrer' }, l.label) : h('span', {}, l.label),
          ),
        )
      : null,
  );
}

export const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

/** 1536 -> "1.5 KB". */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** At most this many files per message (the server's limit). */
export const MAX_FILES = 10;
export const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

let toastTimer: ReturnType<typeof setTimeout> | undefined;
export function toast(text: string) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 5000);
}
export const report = (err: unknown) => toast(errorText(err));

export function debounce(fn: () => void, ms: number): () => void {
  let t: ReturnType<typeof setTimeout> | undefined;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}

export function initials(name: string): string {
  return (name.match(/[A-Za-z0-9]/g) ?? ['?']).slice(0, 2).join('').toUpperCase();
}
/** A stable hue per user for avatars. */
export function hue(id: string): number {
  let x = 0;
  for (const c of id) x = (x * 31 + c.charCodeAt(0)) % 360;
  return x;
}
export function avatar(id: string, name: string, cls = 'avatar'): HTMLElement {
  const el = h('div', { class: cls, title: name }, initials(name));
  el.style.setProperty('--hue', String(hue(id)));
  return el;
}

