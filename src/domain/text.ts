/**
 * Cutting user text to a length. Lengths count code points, as PostgreSQL's `varchar(n)` counts
 * characters, and a cut never falls between the two halves of a surrogate pair: a lone surrogate
 * is refused by PostgreSQL in JSON ("Unicode low surrogate must follow a high surrogate") and
 * replaced by U+FFFD in text.
 */

/** The first `max` code points of `text` (all of it when it is not longer). */
export function clip(text: string, max: number): string {
  // A string of at most `max` UTF-16 code units has at most `max` code points.
  if (text.length <= max) return text;
  let units = 0;
  let n = 0;
  for (const ch of text) {
    if (n === max) return text.slice(0, units);
    units += ch.length;
    n++;
  }
  return text;
}

/** `text` if it has at most `max` code points, else its first `max - 1` followed by an ellipsis (`…`). */
export function excerpt(text: string, max: number): string {
  const head = clip(text, max);
  return head.length === text.length ? text : `${clip(head, max - 1)}…`;
}

/**
 * Whether `text` is well-formed UTF-16: no lone surrogate (`String.prototype.isWellFormed`, Node
 * 20+; declared by the ES2024 lib, which tsconfig.json does not load).
 */
export const isWellFormed = (text: string): boolean => (text as string & { isWellFormed(): boolean }).isWellFormed();

/**
 * `text` as one line: each run of whitespace, line breaks (U+2028 and U+2029 included) and control
 * characters (C0, DEL, C1) one space, none at the ends. For names shown inside a line of their own
 * (an e-mail's plain text, a push's title): a name stored with a line break would add lines.
 */
export const oneLine = (text: string): string => text.replace(/[\s\p{Cc}]+/gu, ' ').trim();
