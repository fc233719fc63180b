/**
 * A tRPC link for client tests that holds one call until the test releases it: the first call
 * `match` picks. By default its answer is held (value or error: the server has handled the call
 * when `caught` resolves); with `request` the call itself (not yet sent when `caught` resolves).
 */
import type { TRPCLink } from '@trpc/client';
import { observable } from '@trpc/server/observable';
import type { AppRouter } from '../client/index.js';
import { deferred } from './fixture.js';

export function holdFirst(match: (path: string, input: unknown) => boolean, what: 'answer' | 'request' = 'answer') {
  const [caught, released] = [deferred<void>(), deferred<void>()];
  let armed = true;
  const link: TRPCLink<AppRouter> =
    () =>
    ({ op, next }) =>
      observable((observer) => {
        const hold = armed && match(op.path, op.input);
        if (hold) armed = false;
        let sub: { unsubscribe(): void } | null = null;
        let stopped = false;
        const send = () => {
          if (stopped) return;
          const held = hold && what === 'answer';
          sub = next(op).subscribe({
            next: (v) => {
              if (!held) return observer.next(v);
              caught.resolve();
              void released.promise.then(() => {
                observer.next(v);
                observer.complete();
              });
            },
            error: (e) => {
              if (!held) return observer.error(e);
              caught.resolve();
              void released.promise.then(() => observer.error(e));
            },
            complete: () => {
              if (!held) observer.complete();
            },
          });
        };
        if (hold && what === 'request') {
          caught.resolve();
          void released.promise.then(send);
        } else send();
        return () => {
          stopped = true;
          sub?.unsubscribe();
        };
      });
  return { link, caught: caught.promise, release: () => released.resolve() };
}
