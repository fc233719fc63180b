/**
 * Production's node flags: `npm start` and the Docker image run the server with the same ones, the
 * bench starts ours with them (bench/lib/servers.ts), this Node accepts them, and they cap the young
 * generation as docs/OPERATIONS.md ("Memory") says: 2 x 16 MB, where V8's own limit lets a burst of
 * work grow it to 2 x 64 MB that an idle node keeps.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { productionNodeFlags } from '../bench/lib/servers.js';
import { PROJECT_ROOT } from './fixture.js';

/** The largest young generation (MB) a short burst of allocation reaches under these node flags. */
function youngGenerationMb(flags: string[]): number {
  const code = `
    const v8 = require('node:v8');
    let keep = [];
    let max = 0;
    for (let i = 0; i < 8e6; i++) {
      keep.push({ i, a: [i] });
      if (keep.length > 200000) keep = [];
      if (i % 50000 === 0) max = Math.max(max, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);
    }
    process.stdout.write(String(max / 1048576));
  `;
  return Number(execFileSync(process.execPath, [...flags, '-e', code], { encoding: 'utf8' }));
}

describe('production node flags', () => {
  it('are the same for npm start and the Docker image, and the bench reads them from npm start', () => {
    const flags = productionNodeFlags(join(PROJECT_ROOT, 'package.json'));
    expect(flags).toEqual(['--max-semi-space-size=16', '--heap-growing-percent=50']);
    const dockerfile = readFileSync(join(PROJECT_ROOT, 'Dockerfile'), 'utf8');
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)?.[1];
    expect(cmd, 'the Dockerfile has a CMD in exec form').toBeDefined();
    expect(JSON.parse(cmd!)).toEqual(['node', ...flags, 'dist/src/main.js']);
  });

  it('refuse a start script that is not node with flags and the compiled entry point', () => {
    const file = join(tmpdir(), `pkg-${process.pid}.json`);
    writeFileSync(file, JSON.stringify({ scripts: { start: 'tsx src/main.ts' } }));
    expect(() => productionNodeFlags(file)).toThrow(/not "node \[flags\] dist\/src\/main.js"/);
    writeFileSync(file, JSON.stringify({ scripts: { start: 'node dist/src/main.js' } }));
    expect(productionNodeFlags(file)).toEqual([]);
  });

  it('cap the young generation at 2 x 16 MB, where the same burst grows it to 64 MB or more without them', () => {
    const capped = youngGenerationMb(productionNodeFlags(join(PROJECT_ROOT, 'package.json')));
    const uncapped = youngGenerationMb([]);
    // 2 x 16 MB; a run beside other work read 34 once (V8 counts a few pages more while it grows).
    expect(capped).toBeLessThanOrEqual(40);
    expect(uncapped).toBeGreaterThanOrEqual(64);
  });
});

describe('docker-compose.yml', () => {
  /** The lines of one top-level service of docker-compose.yml (up to the next service or section). */
  function service(compose: string, name: string): string {
    const m = new RegExp(`^ {2}${name}:.*\\n((?: {4}.*\\n|\\s*\\n)*)`, 'm').exec(compose);
    expect(m, `service ${name} in docker-compose.yml`).not.toBeNull();
    return m![1]!;
  }

  it('restarts the app nodes, the load balancer, PostgreSQL and Redis when they exit', () => {
    const compose = readFileSync(join(PROJECT_ROOT, 'docker-compose.yml'), 'utf8');
    for (const name of ['app1', 'lb', 'postgres', 'redis']) {
      expect(service(compose, name), `${name} has a restart policy`).toMatch(/^ {4}restart: (unless-stopped|always|on-failure)/m);
    }
    // app2 takes app1's keys (`<<: *app`).
    expect(service(compose, 'app2')).toMatch(/<<: \*app\b/);
  });
});
