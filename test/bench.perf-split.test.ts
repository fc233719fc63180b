import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newestCodeOnly, originOf } from '../bench/lib/perf-split.js';

// The diagnostic of bench/lib/perf-split.ts (`npm run bench -- --perf`): how a perf sample is
// charged, and the JIT map repair that keeps freed code's names off the code put in its place.
describe('bench perf split', () => {
  it('charges a kernel leaf to its system call, a builtin to the nearest JavaScript frame, GC to GC', () => {
    const kernelWrite = ['ffff tcp_sendmsg ([kernel.kallsyms])', 'ffff sock_write_iter ([kernel.kallsyms])', '12 __GI___writev (/usr/lib/libc.so.6)'];
    expect(originOf(kernelWrite)).toBe('kernel: socket writes');
    expect(originOf(['ffff do_syscall_64 ([kernel.kallsyms])', '10 epoll_pwait (/usr/lib/libc.so.6)'])).toBe('kernel: reads and epoll');
    const builtinInOurs = [
      '167d440 Builtins_LoadIC_Megamorphic (/node)',
      "7f03 JS:*'node file:///app/dist/src/util/superjson-fast.js:18:9 (/tmp/perf-1.map)",
      "7f04 JS:*'_objectSpread2 file:///app/node_modules/@trpc/server/dist/x.mjs:227:24 (/tmp/perf-1.map)",
    ];
    expect(originOf(builtinInOurs)).toBe('src/ (ours)');
    expect(originOf(builtinInOurs.slice(2))).toBe('@trpc/server');
    expect(originOf(["7f05 JS:*'writeOrBuffer node:internal/streams/writable:550:23 (/tmp/perf-1.map)"])).toBe('node: (streams, net, timers...)');
    expect(originOf(['a1 v8::internal::Scavenger::ScavengeObject (/node)', "7f03 JS:*'x file:///app/dist/src/a.js:1:1 (/tmp/perf-1.map)"])).toBe('GC');
    expect(originOf(['1619332 uv__read (/node)', '162278a uv__io_poll (/node)'])).toBe('libuv and node native');
  });

  it('keeps, of overlapping JIT map entries, the newest one', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'perf-map-')), 'perf-1.map');
    // Set-up code at 0x1000..0x1100, freed; later code took 0x1080..0x1180 and 0x2000 stays alone.
    writeFileSync(file, ['1000 100 JS:*setup kysely.js:1', '2000 40 JS:*alone a.js:1', '1080 100 JS:*hot src/b.js:2', ''].join('\n'));
    newestCodeOnly(file);
    expect(readFileSync(file, 'utf8').trim().split('\n')).toEqual(['2000 40 JS:*alone a.js:1', '1080 100 JS:*hot src/b.js:2']);
    expect(readFileSync(`${file}.orig`, 'utf8')).toContain('setup');
    // Once repaired, a second call leaves the file as it is.
    newestCodeOnly(file);
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(2);
  });
});
