/** The coordinator's handle on a load worker process (bench/load/worker.ts) and its IPC calls. */
import type { Command, Reply, WorkerEvent } from './ipc.js';
import { spawnNode, type Proc } from './proc.js';

export class LoadWorker {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  onWatermark: ((value: number) => void) | null = null;

  private constructor(
    readonly index: number,
    readonly proc: Proc,
  ) {
    proc.child.on('message', (m: Reply | WorkerEvent) => {
      if ('event' in m) {
        if (m.event === 'wm') this.onWatermark?.(m.value);
        return;
      }
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      clearTimeout(w.timer);
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(`worker ${index}: ${m.error}`));
    });
    void proc.exited.then(({ code, signal }) => {
      for (const [, w] of this.waiting) {
        clearTimeout(w.timer);
        w.reject(new Error(`worker ${index} exited (code ${code}, signal ${signal})\n${proc.output.slice(-20).join('\n')}`));
      }
      this.waiting.clear();
    });
  }

  get pid() {
    return this.proc.pid;
  }

  static async start(index: number): Promise<LoadWorker> {
    const proc = spawnNode({ name: `load${index}`, args: ['--import', 'tsx', 'bench/load/worker.ts'], env: {}, ipc: true, echo: true });
    const w = new LoadWorker(index, proc);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker ${index} did not start`)), 30_000);
      const onMsg = (m: WorkerEvent) => {
        if ('event' in m && m.event === 'hello') {
          clearTimeout(timer);
          proc.child.off('message', onMsg);
          resolve();
        }
      };
      proc.child.on('message', onMsg);
      void proc.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`worker ${index} exited at start\n${proc.output.join('\n')}`));
      });
    });
    return w;
  }

  call<T>(c: Command, timeoutMs = 120_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`worker ${this.index}: ${c.cmd} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.proc.child.send({ ...c, id });
    });
  }

  /** Fire and forget (flow-control relay). */
  notify(c: Command) {
    if (this.proc.alive) this.proc.child.send({ ...c, id: 0 });
  }
}
