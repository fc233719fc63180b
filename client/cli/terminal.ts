/**
 * Terminal safety: everything the CLI prints that came from other users (message bodies, names,
 * room names and topics, file names, reactions, search snippets) passes through `clean` first, so
 * nobody can clear your screen, move the cursor, rewrite earlier lines, set the window title,
 * plant a hyperlink or reorder text with bidi controls.
 *
 * It is done once, where data enters the CLI: `terminalSafeLink` cleans every string of every
 * result and subscription event before any command sees it.
 */
import type { TRPCLink } from '@trpc/client';
import type { AnyRouter } from '@trpc/server';
import { observable } from '@trpc/server/observable';

/**
 * Escape sequences as a whole (CSI with its parameters, OSC/DCS/APC/PM/SOS strings up to their
 * terminator, two-byte ESC sequences), the 8-bit CSI/OSC forms, then any remaining C0 control
 * except tab and newline, DEL, C1 controls, and the bidi embedding/override/isolate controls.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is this module's job
const SEQUENCES = /\u001b\[[0-?]*[ -/]*[@-~]?|\u001b[\]PX^_][^\u0007\u001b\u009c]*(?:\u0007|\u001b\\|\u009c)?|\u001b[ -~]?|\u009b[0-?]*[ -/]*[@-~]?|[\u009d\u0090\u0098\u009e\u009f][^\u0007\u001b\u009c]*(?:\u0007|\u001b\\|\u009c)?/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is this module's job
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** `s` without terminal control sequences and characters (tabs and newlines stay). */
export function clean(s: string): string {
  return s.replace(SEQUENCES, '').replace(CONTROLS, '');
}

/** A copy of `value` with every string cleaned (arrays, plain objects and Maps are walked). */
export function cleanDeep<T>(value: T): T {
  return walk(value) as T;
}

function walk(value: unknown): unknown {
  if (typeof value === 'string') return clean(value);
  if (Array.isArray(value)) return value.map(walk);
  if (value instanceof Map) return new Map([...value].map(([k, v]) => [walk(k), walk(v)]));
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = walk(v);
    return out;
  }
  return value;
}

/** A tRPC link that cleans every result and every subscription event on its way in. */
export function terminalSafeLink<R extends AnyRouter>(): TRPCLink<R> {
  return () =>
    ({ next, op }) =>
      observable((observer) => {
        const sub = next(op).subscribe({
          next: (envelope) => {
            const result = envelope.result;
            // Results and events carry `data` (`type` absent or 'data'); started/stopped/state do not.
            if (result.type === undefined || result.type === 'data') {
              observer.next({ ...envelope, result: { ...result, data: cleanDeep(result.data) } });
            } else observer.next(envelope);
          },
          error: (err) => observer.error(err),
          complete: () => observer.complete(),
        });
        return () => sub.unsubscribe();
      });
}
