/**
 * Setup of our server through its public API (tRPC over HTTP, superjson `{json}` bodies): rooms,
 * members, direct rooms. Tokens are HS256 JWTs signed with the server's JWT_SECRET.
 */
import { createHmac } from 'node:crypto';

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** An HS256 access token valid for 24 h (the server's default maximum lifetime). */
/** The issuer and audience the benchmarked server checks (required in production). */
export const BENCH_ISSUER = 'chat-bench';
export const BENCH_AUDIENCE = 'chat';

export function makeToken(secret: string, sub: string): string {
  const iat = Math.floor(Date.now() / 1000);
  const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, name: sub, iss: BENCH_ISSUER, aud: BENCH_AUDIENCE, iat, exp: iat + 24 * 3600 })}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

export class OursApi {
  private readonly tokens = new Map<string, string>();

  constructor(
    readonly url: string,
    private readonly secret: string,
  ) {}

  token(user: string): string {
    let t = this.tokens.get(user);
    if (!t) {
      t = makeToken(this.secret, user);
      this.tokens.set(user, t);
    }
    return t;
  }

  async mutate<T>(user: string, path: string, input: unknown): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const r = await fetch(`${this.url}/trpc/${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token(user)}` },
        body: JSON.stringify({ json: input }),
        signal: AbortSignal.timeout(30_000),
      });
      const body = (await r.json()) as { result?: { data: { json: T } }; error?: { json: { message: string; data?: { code?: string } } } };
      if (body.result) return body.result.data.json;
      const code = body.error?.json.data?.code;
      if ((code === 'TOO_MANY_REQUESTS' || code === 'SERVICE_UNAVAILABLE') && attempt < 10) {
        await new Promise((res) => setTimeout(res, 200 * attempt));
        continue;
      }
      throw new Error(`${path} as ${user}: ${body.error?.json.message ?? r.status}`);
    }
  }

  /** A group room owned by `owner` with `members` (added 100 per call, the API's limit). */
  async groupRoom(owner: string, name: string, members: string[]): Promise<string> {
    const others = members.filter((m) => m !== owner);
    const room = await this.mutate<{ id: string }>(owner, 'room.create', { kind: 'group', name, memberIds: others.slice(0, 100) });
    for (let i = 100; i < others.length; i += 100) {
      await this.mutate(owner, 'room.addMembers', { roomId: room.id, userIds: others.slice(i, i + 100) });
    }
    return room.id;
  }

  async directRoom(a: string, b: string): Promise<string> {
    const room = await this.mutate<{ id: string }>(a, 'room.openDirect', { userId: b });
    return room.id;
  }
}

/** Runs `fn` over `items` with at most `parallel` in flight; results in order. */
export async function mapLimit<T, R>(items: T[], parallel: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(parallel, items.length)) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}
