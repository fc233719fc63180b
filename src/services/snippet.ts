/**
 * Search snippets. PostgreSQL marks the matches of the whole body (`ts_headline` with HighlightAll and
 * the sentinels below); the excerpt and the HTML escaping happen here, on whitespace boundaries, so a
 * snippet never cuts a character sequence of the body in half (ts_headline's own fragments start at a
 * word token and dropped a leading `&lt;` of an escaped body).
 */
export const MARK_START = '\uE000';
export const MARK_STOP = '\uE001';
/** The ts_headline options that produce a fully marked body. */
export const HEADLINE_OPTIONS = `StartSel=${MARK_START}, StopSel=${MARK_STOP}, HighlightAll=true`;

const escapeHtml = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');

/**
 * An HTML-escaped excerpt of at most `maxWords` whitespace-separated words around the first match,
 * with the matches wrapped in <mark>…</mark> and an ellipsis where text was left out.
 */
export function buildSnippet(marked: string, maxWords = 24, before = 8): string {
  const words = marked.split(/\s+/).filter(Boolean);
  const first = Math.max(0, words.findIndex((w) => w.includes(MARK_START)));
  const start = Math.max(0, Math.min(first - before, words.length - maxWords));
  const end = Math.min(words.length, start + maxWords);
  const text = words
    .slice(start, end)
    .map((w) => escapeHtml(w).replaceAll(MARK_START, '<mark>').replaceAll(MARK_STOP, '</mark>'))
    .join(' ');
  return `${start > 0 ? '… ' : ''}${text}${end < words.length ? ' …' : ''}`;
}
