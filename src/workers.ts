import cluster, { type Worker } from 'node:cluster';
import type { Logger } from './log.js';
import { answerScrapes } from './observability/group-metrics.js';

/**
 * The primary of a process group (WEB_CONCURRENCY > 1): forks the workers, which share the port through
 * node:cluster (the primary accepts connections and hands them round-robin to the workers), forks again a worker
 * that dies unexpectedly, passes the stop signals on, and answers /metrics scrapes with the group's figures. It
 * serves nothing itself and holds no store connection: the stores' background loops run in every worker, each
 * safe beside the others (leases in Redis, row locks in Postgres), as they are beside other instances.
 */

// A worker that dies is forked again after this, doubled for each death in a row up to RESTART_MAX_MS, so a
// worker that cannot start (a store down) does not spin the CPU.
const RESTART_FIRST_MS = 100;
const RESTART_MAX_MS = 10_000;
// A worker that served this long before dying starts its slot's backoff over.
const STABLE_MS = 10_000;

export interface WorkerGroupOptions {
  count: number;
  /** Set in every worker's environment (the stores' URLs as the primary resolved them). */
  env: Record<string, string>;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
}

export interface WorkerGroup {
  /** Resolves once every worker listens; rejects if one exits before any has ever listened (a failed start). */
  ready: Promise<void>;
  /**
   * Passes `signal` on to every worker (each drains and closes as a single process does) and resolves once all
   * have exited; rejects naming those that exited otherwise than with 0. No worker is forked again meanwhile.
   */
  stop(signal: NodeJS.Signals): Promise<void>;
  /** Passes a second signal on: every worker exits at once. */
  interrupt(signal: NodeJS.Signals): void;
}

/** Forks `count` workers of this same program (its argv and execArgv, so tsx and `flashsale serve` carry over). */
export function startWorkers({ count, env, log }: WorkerGroupOptions): WorkerGroup {
  let stopping = false;
  let everListened = false;
  // Per slot (1..count): its worker, when it last started, and its deaths in a row.
  const slots = new Map<number, { worker?: Worker; startedAt: number; deaths: number; listening: boolean }>();
  const exits: Promise<void>[] = [];
  const failedExits: string[] = [];
  let readyResolve!: () => void;
  let readyReject!: (err: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });

  answerScrapes(() => [...slots.values()].filter((s) => s.listening && s.worker).map((s) => s.worker!), log);

  function fork(slot: number): void {
    const state = slots.get(slot) ?? { startedAt: 0, deaths: 0, listening: false };
    slots.set(slot, state);
    const worker = cluster.fork(env);
    state.worker = worker;
    state.startedAt = Date.now();
    state.listening = false;
    log.info({ worker: slot, worker_pid: worker.process.pid }, 'worker started');
    worker.once('listening', () => {
      state.listening = true;
      everListened = true;
      if ([...slots.values()].every((s) => s.listening)) readyResolve();
    });
    exits.push(
      new Promise<void>((resolve) =>
        worker.once('exit', (code, signal) => {
          state.listening = false;
          const how = { worker: slot, worker_pid: worker.process.pid, code, signal };
          if (stopping) {
            if (code !== 0)
              failedExits.push(`worker ${slot} (pid ${worker.process.pid}) exited with ${signal ?? code}`);
            return resolve();
          }
          if (!everListened) {
            readyReject(new Error(`worker ${slot} exited with ${signal ?? code} before the service could start`));
            return resolve();
          }
          if (Date.now() - state.startedAt >= STABLE_MS) state.deaths = 0;
          const delayMs = Math.min(RESTART_MAX_MS, RESTART_FIRST_MS * 2 ** state.deaths);
          state.deaths++;
          log.error({ ...how, restart_in_ms: delayMs }, 'worker exited unexpectedly: forking it again');
          setTimeout(() => {
            if (!stopping) fork(slot);
          }, delayMs).unref();
          resolve();
        }),
      ),
    );
  }

  for (let slot = 1; slot <= count; slot++) fork(slot);

  const living = () => [...slots.values()].flatMap((s) => (s.worker && !s.worker.isDead() ? [s.worker] : []));
  return {
    ready,
    async stop(signal) {
      stopping = true;
      for (const worker of living()) worker.process.kill(signal);
      // An exit pushed meanwhile (none: stopping forks nothing) would be missed; the list is final here.
      await Promise.all(exits);
      if (failedExits.length > 0) throw new Error(failedExits.join('; '));
    },
    interrupt(signal) {
      stopping = true;
      for (const worker of living()) worker.process.kill(signal);
    },
  };
}
