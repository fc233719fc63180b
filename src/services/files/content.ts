import { fileTypeFromBuffer } from 'file-type';
import { PREVIEW_TYPES } from '../../domain/files.js';

/** How many leading bytes of an object are read to find its type. */
export const SNIFF_BYTES = 64 * 1024;

/** Types file-type cannot recognise (no magic number): accepted when the bytes are no known binary type. */
const TEXT_LIKE = new Set([
  'application/json',
  'application/ld+json',
  'application/xml',
  'application/x-ndjson',
  'application/yaml',
  'application/x-yaml',
  'application/javascript',
  'application/sql',
  'application/rtf',
]);
/** Declared names of the same type as file-type reports it. */
const ALIASES: Record<string, string> = {
  'image/jpg': 'image/jpeg',
  'image/pjpeg': 'image/jpeg',
  'audio/mp3': 'audio/mpeg',
  'application/x-zip-compressed': 'application/zip',
  'application/x-pdf': 'application/pdf',
  'audio/x-wav': 'audio/wav',
  'audio/wave': 'audio/wav',
};

/**
 * Types of one family: the same container or format under two names, one of which is how browsers
 * and operating systems declare it and the other how file-type reports it (a browser's voice note
 * is `audio/webm`, its bytes WebM, which file-type calls `video/webm`; an animated PNG declared
 * `image/png` is found `image/apng`). A declared type matches bytes of its family; the declared
 * type is kept. None of these makes anything inline that is not: the one inline member is
 * `image/png`, and APNG bytes are a PNG (its first frame for those that do not animate).
 */
const FAMILIES: Record<string, string> = {
  'audio/webm': 'webm',
  'video/webm': 'webm',
  'image/png': 'png',
  'image/apng': 'png',
  'video/matroska': 'matroska',
  'video/x-matroska': 'matroska',
  'audio/matroska': 'matroska',
  'audio/x-matroska': 'matroska',
  'audio/mp4': 'm4a',
  'audio/x-m4a': 'm4a',
  'audio/m4a': 'm4a',
  'application/gzip': 'gzip',
  'application/x-gzip': 'gzip',
  'application/vnd.rar': 'rar',
  'application/x-rar-compressed': 'rar',
};

/**
 * Formats whose bytes file-type may only know as their container: every legacy Office file
 * (.doc, .xls, .ppt, Outlook .msg, Project .mpp) is an OLE compound file (`application/x-cfb`);
 * OOXML, OpenDocument, EPUB, JAR, KMZ, ... are zips, named by entries that may lie past the
 * sniffed head or that file-type does not look for. Such bytes match a declared format of their
 * container (the declared type is kept); none of these is shown inline.
 */
const CONTAINERS: Record<string, (declared: string) => boolean> = {
  'application/x-cfb': (m) =>
    [
      'application/msword',
      'application/vnd.ms-excel',
      'application/vnd.ms-powerpoint',
      'application/vnd.ms-outlook',
      'application/vnd.ms-project',
      'application/vnd.ms-publisher',
      'application/vnd.visio',
      'application/x-msi',
    ].includes(m),
  'application/zip': (m) =>
    m.startsWith('application/vnd.openxmlformats-officedocument.') ||
    m.startsWith('application/vnd.oasis.opendocument.') ||
    /^application\/vnd\.ms-(word|excel|powerpoint)\.[a-z.]*macroenabled/.test(m) ||
    m.endsWith('+zip') ||
    [
      'application/java-archive',
      'application/vnd.android.package-archive',
      'application/vnd.google-earth.kmz',
      'application/vnd.ms-xpsdocument',
      'application/oxps',
      'application/vnd.ms-visio.drawing',
      'application/vnd.apple.keynote',
      'application/vnd.apple.pages',
      'application/vnd.apple.numbers',
      'application/x-xpinstall',
      'model/3mf',
    ].includes(m),
};

/**
 * Declared types browsers give text files: Windows declares `.csv` files `application/vnd.ms-excel`
 * where Excel is installed. Accepted like text-like types (no known binary type, no NUL byte).
 */
const TEXT_DECLARED_AS = new Set(['application/vnd.ms-excel']);

/** Whether two canonical types are one type or of one family (FAMILIES). */
const sameFamily = (a: string, b: string) => a === b || (FAMILIES[a] !== undefined && FAMILIES[a] === FAMILIES[b]);

export const isTextLike = (mime: string) => mime.startsWith('text/') || TEXT_LIKE.has(mime);

/** The type a declared type stands for (lowercase, parameters and known aliases resolved). */
export function canonicalMime(mime: string): string {
  const base = mime.split(';')[0]!.trim().toLowerCase();
  return ALIASES[base] ?? base;
}

export type ContentCheck = { ok: true; mime: string } | { ok: false; reason: string };

/**
 * Whether the first bytes of a file match its declared type. Bytes of a known binary type must be
 * declared as that type, one of its family (FAMILIES) or a format of its container (CONTAINERS:
 * the declared type is kept both times), or `application/octet-stream` (which then takes the found
 * type); bytes of no known type are accepted for text-like declarations (text/*, JSON, XML, ...,
 * TEXT_DECLARED_AS) without NUL bytes, and for `application/octet-stream`.
 */
export async function checkContent(head: Uint8Array, declared: string): Promise<ContentCheck> {
  const want = canonicalMime(declared);
  const found = head.length > 0 ? await fileTypeFromBuffer(head) : undefined;
  if (found) {
    const got = canonicalMime(found.mime);
    if (got === want || want === 'application/octet-stream') return { ok: true, mime: got };
    if (sameFamily(got, want) || CONTAINERS[got]?.(want)) return { ok: true, mime: want };
    // A text-like declaration of an XML file that file-type calls XML is fine.
    if (got === 'application/xml' && isTextLike(want)) return { ok: true, mime: want };
    return { ok: false, reason: `its bytes are ${got}, not ${want}` };
  }
  if (want === 'application/octet-stream') return { ok: true, mime: want };
  if (isTextLike(want) || TEXT_DECLARED_AS.has(want)) {
    if (head.includes(0)) return { ok: false, reason: `its bytes are binary, not ${want}` };
    return { ok: true, mime: want };
  }
  return { ok: false, reason: `its bytes are not recognisably ${want}` };
}

/** Images that get a thumbnail and their dimensions. */
export const hasPreview = (mime: string) => PREVIEW_TYPES.includes(mime);

/** Shown in the browser (images of the preview types and PDF); everything else is downloaded. */
export const isInline = (mime: string) => hasPreview(mime) || mime === 'application/pdf';

/**
 * `Content-Disposition` for a file name (RFC 6266): an ASCII fallback in `filename` (quotes,
 * backslashes, controls and non-ASCII replaced) and the exact name in `filename*` (RFC 5987,
 * UTF-8, percent-encoded).
 */
export function contentDisposition(name: string, inline: boolean): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this replaces
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_').replace(/[\u0000-\u001f]/g, '_') || 'file';
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${inline ? 'inline' : 'attachment'}; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}
