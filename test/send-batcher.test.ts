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
function harness(opts: { committed?: boolean } = {}) {
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
    {},
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
});
