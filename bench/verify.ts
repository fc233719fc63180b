/**
 * `npm run bench:verify`: CPU per access-token verification (HS256, JWT_SECRET), every connection's
 * first cost. The same tokens through the quick check (a plain header: node:crypto HMAC plus jose's
 * claim validation) and through jose's whole `jwtVerify` (WebCrypto; a header member the quick check
 * does not know sends a token there). CPU of all threads (WebCrypto runs its jobs on the libuv pool).
 */
import { TokenVerifier } from '../src/auth/verifier.js';
import { signHs256, TEST_AUTH, TEST_SECRET } from '../test/fixture.js';

const N = 20_000;
const verifier = new TokenVerifier(TEST_AUTH);
const now = Math.floor(Date.now() / 1000);
const tokens = (header: Record<string, unknown>) => Array.from({ length: N }, (_, i) => signHs256({ sub: `u${i}`, iat: now, exp: now + 600 }, TEST_SECRET, header));
const paths = { quick: { alg: 'HS256', typ: 'JWT' }, jose: { alg: 'HS256', typ: 'JWT', ext: 1 } };

const results: Record<string, { cpuUsPerToken: number; wallUsPerToken: number }> = {};
// Two rounds each, the first one warms up; the second is reported.
for (const round of [1, 2]) {
  for (const [name, header] of Object.entries(paths)) {
    const list = tokens(header);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(list.map((t) => verifier.verify(t)));
    const cpu = process.cpuUsage(c0);
    const wallMs = performance.now() - t0;
    if (round === 2) results[name] = { cpuUsPerToken: +((cpu.user + cpu.system) / N).toFixed(1), wallUsPerToken: +((wallMs * 1000) / N).toFixed(1) };
  }
}
console.log(JSON.stringify({ node: process.version, tokens: N, results }, null, 2));
process.exit(0);
