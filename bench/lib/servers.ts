/** Starting the systems under test, each as its own process. */
import { readFileSync } from 'node:fs';
import { capCpu } from './cgroup.js';
import { TEST_LIMITS_ENV } from '../../test/proc.js';
import type { System } from './ipc.js';
import { BENCH_AUDIENCE, BENCH_ISSUER } from './ours-api.js';
import { freePort, spawnNode, waitHealthy, type Proc } from './proc.js';

/**
 * The node flags of production: the ones `npm start` gives node before `dist/src/main.js` (the
 * Docker image's `CMD` carries the same, test/deploy.node-flags.test.ts keeps them equal), so that
 * the bench measures ours as it is deployed.
 */
export function productionNodeFlags(pkgFile = 'package.json'): string[] {
  const start = (JSON.parse(readFileSync(pkgFile, 'utf8')) as { scripts: Record<string, string> }).scripts.start ?? '';
  const m = /^node\s+(.*?)\s*dist\/src\/main\.js$/.exec(start.trim());
  if (!m) throw new Error(`package.json's start script is not "node [flags] dist/src/main.js": ${start}`);
  return m[1] ? m[1].split(/\s+/) : [];
}

/** socketioPg: the Socket.IO server with each message inserted into PostgreSQL first. */
export type SystemName = 'ours' | 'socketio' | 'socketioPg' | 'ws';

/** The wire protocol each system's clients speak. */
export const WIRE: Record<SystemName, System> = { ours: 'ours', socketio: 'socketio', socketioPg: 'socketio', ws: 'ws' };

export interface BenchEnv {
  databaseUrl: string;
  redisUrl: string;
  redisPrefix: string;
  jwtSecret: string;
  profileDir: string;
}

export interface StartOpts {
  port?: number;
  /** Peers: use Redis between nodes (ours always has Redis). */
  redis?: boolean;
  /** ours: run with `node --cpu-prof` (the profile is written when the process exits). */
  cpuProf?: boolean;
  /** Caps the server's CPU at this many CPUs (a cgroup quota, bench/lib/cgroup.ts), once it is up. */
  cpuQuota?: number;
  /** `node --heapsnapshot-signal=SIGUSR2` (a SIGUSR2 writes a heap snapshot into the profile dir). */
  heapSnapshot?: boolean;
  /** `node --perf-basic-prof` (any system): JIT frames named for `perf` (bench/lib/perf-split.ts). */
  perfMap?: boolean;
  label?: string;
}

export interface Server {
  sys: SystemName;
  proc: Proc;
  url: string;
  port: number;
}

export async function startServer(env: BenchEnv, sys: SystemName, o: StartOpts = {}): Promise<Server> {
  const port = o.port ?? (await freePort());
  const name = o.label ?? sys;
  let proc: Proc;
  if (sys === 'ours') {
    proc = spawnNode({
      name,
      // The compiled build with production's node flags (`npm start`, the Docker image); bench/run.ts
      // builds it.
      args: [
        ...productionNodeFlags(),
        ...(o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${env.profileDir}`] : []),
        ...(o.heapSnapshot ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${env.profileDir}`] : []),
        ...(o.perfMap ? ['--perf-basic-prof'] : []),
        // BENCH_OURS_NODE_ARGS='--trace-gc' (with BENCH_ECHO=1 to see the output): node flags NODE_OPTIONS refuses.
        ...(process.env.BENCH_OURS_NODE_ARGS ? process.env.BENCH_OURS_NODE_ARGS.split(' ').filter(Boolean) : []),
        'dist/src/main.js',
      ],
      env: {
        // The rate limits of the tests (a load generator sends far faster than a person), and
        // room for thousands of connections from one address and for many tabs per user.
        ...TEST_LIMITS_ENV,
        MAX_CONNECTIONS_PER_USER: '100000',
        MAX_CONNECTIONS_PER_IP: '100000',
        NODE_ENV: 'production',
        PORT: String(port),
        HOST: '127.0.0.1',
        DATABASE_URL: env.databaseUrl,
        REDIS_URL: env.redisUrl,
        REDIS_PREFIX: env.redisPrefix,
        JWT_SECRET: env.jwtSecret,
        AUTH_ISSUER: BENCH_ISSUER,
        AUTH_AUDIENCE: BENCH_AUDIENCE,
        LOG_LEVEL: 'warn',
        // BENCH_OURS_ENV='{"ACTIVITY_FEED":"false"}': settings for an A/B run of one feature's cost.
        ...(process.env.BENCH_OURS_ENV ? (JSON.parse(process.env.BENCH_OURS_ENV) as Record<string, string>) : {}),
      },
    });
  } else {
    const script = sys === 'ws' ? 'bench/peers/ws-server.ts' : 'bench/peers/socketio-server.ts';
    proc = spawnNode({
      name,
      // BENCH_PEER_NODE_ARGS='--cpu-prof --cpu-prof-dir=<dir>': node flags for the peers (a profile of theirs).
      args: [
        ...(o.perfMap ? ['--perf-basic-prof'] : []),
        ...(o.heapSnapshot ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${env.profileDir}`] : []),
        ...(process.env.BENCH_PEER_NODE_ARGS ? process.env.BENCH_PEER_NODE_ARGS.split(' ').filter(Boolean) : []),
        '--import',
        'tsx',
        script,
      ],
      env: {
        PORT: String(port),
        JWT_SECRET: env.jwtSecret,
        ...(sys === 'socketioPg' ? { DATABASE_URL: env.databaseUrl } : {}),
        ...(o.redis ? { REDIS_URL: env.redisUrl, REDIS_PREFIX: `${env.redisPrefix}${sys}:` } : {}),
      },
    });
  }
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(`${url}/healthz`, proc, 90_000);
  if (o.cpuQuota) capCpu(proc.child, o.cpuQuota, name);
  return { sys, proc, url, port };
}
