import { setTimeout as sleep } from 'node:timers/promises';

/** Reads until `done` accepts the value or `timeoutMs` has passed, every `everyMs`; returns the last value read. */
export async function poll<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs: number,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() >= deadline) return value;
    await sleep(everyMs);
  }
}

/** Polls a condition until it holds or `timeoutMs` has passed; says whether it held. */
export function eventually(condition: () => Promise<boolean>, timeoutMs: number, everyMs = 25): Promise<boolean> {
  return poll(condition, (holds) => holds, timeoutMs, everyMs);
}
