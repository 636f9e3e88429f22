import type { Logger } from '../log.js';

export interface Loop {
  /** Stops the loop and waits for a pass in progress. */
  stop(): Promise<void>;
}

/**
 * Runs `pass` every `intervalMs`, at once again when a pass says more work is waiting, until stopped. A failing
 * pass (a store away) is logged once per outage and retried on the next tick. The first pass runs at once, or
 * after `firstPassAfterMs`.
 */
export function runPeriodically(
  name: string,
  intervalMs: number,
  pass: () => Promise<{ more?: boolean }>,
  log: Logger,
  firstPassAfterMs = 0,
): Loop {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let failing = false;

  const schedule = (delay: number) => {
    if (!stopped) timer = setTimeout(tick, delay);
  };
  const tick = () => {
    running = pass().then(
      (result) => {
        if (failing) log.info({ loop: name }, `${name} recovered`);
        failing = false;
        schedule(result.more ? 0 : intervalMs);
      },
      (err: unknown) => {
        if (!failing) log.error({ loop: name, err }, `${name} pass failed; retrying`);
        failing = true;
        schedule(intervalMs);
      },
    );
  };
  schedule(firstPassAfterMs);

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
