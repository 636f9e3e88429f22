import type { Logger } from './log.js';

export interface ShutdownOptions {
  /** The most time `close` may take before the process exits with 1 (SHUTDOWN_GRACE_MS). */
  graceMs: number;
  log: Pick<Logger, 'info' | 'error'>;
  /** Stops the service: ends with every request answered and every store closed. */
  close: (signal: NodeJS.Signals) => Promise<void>;
  /** Called on a second signal, right before the exit: a primary passes it on to its workers. */
  onSecondSignal?: (signal: NodeJS.Signals) => void;
  /** process.exit, unless a test watches it. */
  exit?: (code: number) => void;
}

/**
 * A repeat of the first signal within this time is the same request to stop, delivered twice: Ctrl-C under
 * `npm start` reaches node from the terminal (to the whole process group) and again from npm, which forwards
 * it (measured 5 ms apart).
 */
export const REPEATED_SIGNAL_MS = 500;

/**
 * On the first SIGTERM or SIGINT runs `close`, then exits 0; exits 1 with an error line when `close` fails or
 * takes longer than the grace period, and at once on a second signal. close-with-grace does the same but exits
 * on any second signal, which would make every Ctrl-C of `npm start` an abrupt exit.
 */
export function closeOnSignals(options: ShutdownOptions): void {
  const { graceMs, log, close, onSecondSignal, exit = (code) => process.exit(code) } = options;
  let first: { signal: NodeJS.Signals; at: number } | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (first) {
      if (signal === first.signal && Date.now() - first.at < REPEATED_SIGNAL_MS) return;
      log.error({ signal }, 'second signal while shutting down: exiting at once');
      onSecondSignal?.(signal);
      return exit(1);
    }
    first = { signal, at: Date.now() };
    log.info({ signal, grace_ms: graceMs }, 'shutting down');
    const started = Date.now();
    const timer = setTimeout(() => {
      log.error({ grace_ms: graceMs }, 'shutdown grace period ran out: exiting with requests or stores still open');
      exit(1);
    }, graceMs);
    close(signal).then(
      () => {
        clearTimeout(timer);
        log.info({ ms: Date.now() - started }, 'shut down');
        exit(0);
      },
      (err: unknown) => {
        clearTimeout(timer);
        log.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
