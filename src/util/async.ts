/** Rejects with "<what> timed out after <ms> ms" when `p` has not settled in time (timer unref'd). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
      timer.unref();
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * One run of a job at a time: `run` starts it unless a run is under way, and then answers that one.
 * `current` is the run under way (null when none), for a shutdown to wait on.
 */
export class OneAtATime {
  current: Promise<void> | null = null;

  run(job: () => Promise<void>): Promise<void> {
    if (this.current !== null) return this.current;
    const run = job().finally(() => {
      if (this.current === run) this.current = null;
    });
    this.current = run;
    return run;
  }
}
