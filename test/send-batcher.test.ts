/**
 * The group-commit queue on its own (src/services/send-batcher.ts): which group runs when, and in
 * what order callers are answered. Its use against PostgreSQL is test/send-batch.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { SendBatcher } from '../src/services/send-batcher.js';
import { deferred } from './fixture/wait.js';

/** An error with a SQLSTATE, as node-postgres reports one. */
const sqlError = (code: string) => Object.assign(new Error(`sqlstate ${code}`), { code });

/**
 * A batcher whose groups wait on gates the test opens. `log` records each group as it starts
 * (`run a,b`) and each caller as it is answered (`done x` / `fail x: message`).
 */
function harness(opts: { committed?: boolean; maxInflight?: number; onGroup?: (items: number, seconds: number) => void } = {}) {
  const log: string[] = [];
  const gates: ReturnType<typeof deferred<string[]>>[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const batcher = new SendBatcher<string, string>(
    (items) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      log.push(`run ${items.join(',')}`);
      const g = deferred<string[]>();
      gates.push(g);
      return g.promise.finally(() => inFlight--);
    },
    { ...(opts.maxInflight ? { maxInflight: opts.maxInflight } : {}), onGroup: opts.onGroup },
    opts.committed ? (outcomes) => void log.push(`committed ${outcomes.join(',')}`) : undefined,
  );
  const submit = (item: string) =>
    batcher.submit(item).then(
      (v) => void log.push(`done ${v}`),
      (err: Error) => void log.push(`fail ${item}: ${err.message}`),
    );
  return { log, gates, submit, maxInFlight: () => maxInFlight };
}

/** Lets queued promise jobs and the next turn run (the batcher starts a group from a promise job). */
const turn = () => new Promise<void>((r) => setImmediate(r));

describe('SendBatcher', () => {
  it('a lone item goes at once; items that come meanwhile form the next group, started before the first is answered; one group in flight', async () => {
    const h = harness();
    const first = h.submit('a');
    expect(h.log).toEqual(['run a']);
    const rest = [h.submit('b'), h.submit('c')];
    expect(h.log).toEqual(['run a']);
    h.gates[0]!.resolve(['A']);
    await first;
    expect(h.log).toEqual(['run a', 'run b,c', 'done A']);
    h.gates[1]!.resolve(['B', 'C']);
    await Promise.all(rest);
    expect(h.log).toEqual(['run a', 'run b,c', 'done A', 'done B', 'done C']);
    expect(h.maxInFlight()).toBe(1);
  });

  it('`committed` gets the outcomes of each group in group order, after the next group started and before its callers are answered', async () => {
    const h = harness({ committed: true });
    const first = h.submit('a');
    const second = [h.submit('b'), h.submit('c')];
    h.gates[0]!.resolve(['A']);
    await first;
    const third = h.submit('d');
    expect(h.log).toEqual(['run a', 'run b,c', 'committed A', 'done A']);
    h.gates[1]!.resolve(['B', 'C']);
    await Promise.all(second);
    expect(h.log.slice(4)).toEqual(['run d', 'committed B,C', 'done B', 'done C']);
    // The last group: nothing queued behind it.
    h.gates[2]!.resolve(['D']);
    await third;
    expect(h.log.slice(8)).toEqual(['committed D', 'done D']);
    expect(h.maxInFlight()).toBe(1);
  });

  it('a group failing on the data of one item is split (each item alone, in order) before the next group starts', async () => {
    const h = harness();
    const first = h.submit('a');
    const group = [h.submit('b'), h.submit('c')];
    h.gates[0]!.resolve(['A']);
    await first;
    const later = h.submit('d');
    h.gates[1]!.reject(sqlError('22P05'));
    // b alone, then c alone; d waits for the split to finish.
    while (h.gates.length < 3) await turn();
    expect(h.log.slice(-1)).toEqual(['run b']);
    h.gates[2]!.resolve(['B']);
    while (h.gates.length < 4) await turn();
    // b is answered (a promise job, so logged after c started, which the split does at once).
    expect(h.log.slice(-2)).toEqual(['run c', 'done B']);
    h.gates[3]!.reject(sqlError('22P05'));
    while (h.gates.length < 5) await turn();
    expect(h.log.slice(-2)).toEqual(['fail c: sqlstate 22P05', 'run d']);
    h.gates[4]!.resolve(['D']);
    await Promise.all([...group, later]);
    expect(h.log).toEqual(['run a', 'run b,c', 'done A', 'run b', 'run c', 'done B', 'fail c: sqlstate 22P05', 'run d', 'done D']);
    expect(h.maxInFlight()).toBe(1);
  });

  it('a transient failure (deadlock) runs the same group again; any other failure fails every item of its group', async () => {
    const h = harness();
    const first = h.submit('a');
    const group = [h.submit('b'), h.submit('c')];
    h.gates[0]!.reject(sqlError('40P01'));
    while (h.gates.length < 2) await turn();
    // The deadlocked group again, alone: b and c are not in it.
    expect(h.log).toEqual(['run a', 'run a']);
    h.gates[1]!.resolve(['A']);
    await first;
    expect(h.log).toEqual(['run a', 'run a', 'run b,c', 'done A']);
    h.gates[2]!.reject(sqlError('57P01'));
    await Promise.all(group);
    expect(h.log).toEqual(['run a', 'run a', 'run b,c', 'done A', 'fail b: sqlstate 57P01', 'fail c: sqlstate 57P01']);
  });

  it('`onGroup` is told of each group written, once, with its size and time (a retried group once, after its last run); not of a failed one', async () => {
    const groups: [number, number][] = [];
    const h = harness({ onGroup: (items, seconds) => void groups.push([items, seconds]) });
    const first = h.submit('a');
    const group = [h.submit('b'), h.submit('c'), h.submit('d')];
    h.gates[0]!.reject(sqlError('40P01'));
    while (h.gates.length < 2) await turn();
    expect(groups).toEqual([]);
    h.gates[1]!.resolve(['A']);
    await first;
    expect(groups.map(([n]) => n)).toEqual([1]);
    h.gates[2]!.resolve(['B', 'C', 'D']);
    await Promise.all(group);
    expect(groups.map(([n]) => n)).toEqual([1, 3]);
    for (const [, seconds] of groups) expect(seconds).toBeGreaterThanOrEqual(0);
    const last = h.submit('e');
    h.gates[3]!.reject(sqlError('57P01'));
    await last;
    expect(h.log.at(-1)).toBe('fail e: sqlstate 57P01');
    expect(groups).toHaveLength(2);
  });

  describe('two groups in flight (the pipelined send connection)', () => {
    it('a second group starts behind the first once as many items are queued as the first holds; fewer wait for a group to finish', async () => {
      const h = harness({ committed: true, maxInflight: 2 });
      const first = h.submit('a');
      // One queued, as many as the group in flight: it goes behind it at once.
      const second = h.submit('b');
      expect(h.log).toEqual(['run a', 'run b']);
      // Two in flight: the rest waits.
      const third = [h.submit('c'), h.submit('d')];
      expect(h.log).toEqual(['run a', 'run b']);
      h.gates[0]!.resolve(['A']);
      await first;
      // a is done: c,d (two queued, more than b holds) start behind b before a is answered.
      expect(h.log).toEqual(['run a', 'run b', 'run c,d', 'committed A', 'done A']);
      // One queued behind a group of two in flight: it waits for company or for a free slot.
      const fourth = h.submit('e');
      h.gates[1]!.resolve(['B']);
      await second;
      expect(h.log.slice(5)).toEqual(['committed B', 'done B']);
      // c,d still in flight and only e queued (fewer than c,d): e waits until c,d is done.
      expect(h.gates).toHaveLength(3);
      h.gates[2]!.resolve(['C', 'D']);
      await Promise.all(third);
      expect(h.log.slice(7)).toEqual(['run e', 'committed C,D', 'done C', 'done D']);
      h.gates[3]!.resolve(['E']);
      await fourth;
      expect(h.log.slice(11)).toEqual(['committed E', 'done E']);
      expect(h.maxInFlight()).toBe(2);
    });

    it('groups are settled in the order they started, even when a later one is done first', async () => {
      const h = harness({ committed: true, maxInflight: 2 });
      const first = h.submit('a');
      const second = h.submit('b');
      expect(h.log).toEqual(['run a', 'run b']);
      h.gates[1]!.resolve(['B']);
      await turn();
      // b is done, a is not: nothing is published or answered yet.
      expect(h.log).toEqual(['run a', 'run b']);
      h.gates[0]!.resolve(['A']);
      await Promise.all([first, second]);
      expect(h.log).toEqual(['run a', 'run b', 'committed A', 'committed B', 'done A', 'done B']);
    });

    it('never more than two in flight, every item answered once, in queue order per group', async () => {
      const h = harness({ maxInflight: 2 });
      const all = 'abcdefghijklmnopqrstuvwxyz'.split('').map((x) => h.submit(x));
      // Open every gate as it comes, answering each item with its own name upper-cased.
      for (let opened = 0; h.log.filter((l) => l.startsWith('done ')).length < 26; opened++) {
        while (h.gates.length <= opened) await turn();
        const items = h.log.filter((l) => l.startsWith('run '))[opened]!.slice(4).split(',');
        h.gates[opened]!.resolve(items.map((x) => x.toUpperCase()));
        await turn();
      }
      await Promise.all(all);
      const runs = h.log.filter((l) => l.startsWith('run ')).flatMap((l) => l.slice(4).split(','));
      expect(runs.join('')).toBe('abcdefghijklmnopqrstuvwxyz');
      expect(h.log.filter((l) => l.startsWith('done ')).map((l) => l.slice(5)).join('')).toBe('ABCDEFGHIJKLMNOPQRSTUVWXYZ');
      expect(h.maxInFlight()).toBe(2);
    });
  });
});
