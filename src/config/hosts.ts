import { domainToASCII } from 'node:url';
import type { z } from 'zod';

/** A DNS name's label (letters, digits, hyphens, underscores; no leading or trailing hyphen). */
const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/**
 * ALLOWED_HOSTS: a comma list of the host names clients use to reach the server (`chat.example.com`),
 * or `*.example.com` for every name under that domain (not `example.com` itself). Normalised as
 * `Host` headers carry them (lower case, IDN as punycode, no trailing dot); no scheme, port, path,
 * IP address or bare `*`: every bad entry is one issue naming it. Empty: any host
 * (src/http/hosts.ts says what is always allowed and why).
 */
export function allowedHosts(raw: string | undefined, ctx: z.RefinementCtx): string[] {
  const hosts = new Set<string>();
  for (const entry of (raw ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const wildcard = entry.startsWith('*.');
    const rest = (wildcard ? entry.slice(2) : entry).replace(/\.$/, '');
    const name = /^[\p{L}\p{N}._-]+$/u.test(rest) ? domainToASCII(rest) : '';
    const labels = name.split('.');
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(entry) || entry.includes('/')) {
      ctx.addIssue(`"${entry}" is not a host name: list names only, e.g. chat.example.com (no scheme, no path)`);
    } else if (/:\d*$/.test(entry) && !entry.startsWith('[')) {
      ctx.addIssue(`"${entry}": list the host name without a port (every port of a listed name is served)`);
    } else if (/^[\d.]+$/.test(rest) || entry.startsWith('[')) {
      ctx.addIssue(`"${entry}": IP addresses are always allowed; list host names only`);
    } else if (!name || labels.some((l) => !LABEL.test(l)) || (wildcard && labels.length < 2)) {
      ctx.addIssue(`"${entry}" is not a host name: expected chat.example.com, or *.example.com for every name under example.com`);
    } else {
      hosts.add(wildcard ? `*.${name}` : name);
    }
  }
  return [...hosts];
}
