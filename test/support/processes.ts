import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A port of 127.0.0.1 that was free a moment ago (another process may take it before the caller listens). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** How a process ended: an exit code, or the signal that killed it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process the test started. */
export interface RunningProcess {
  child: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<ExitStatus>;
  /** Kills the process (SIGKILL unless told otherwise) unless it is gone already, and waits until it is. */
  stop(signal?: NodeJS.Signals): Promise<ExitStatus>;
}

/** Spawns a process whose exit the test can wait for. */
export function startProcess(command: string, args: string[], options: SpawnOptions): RunningProcess {
  const child = spawn(command, args, options);
  const exited = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    exited,
    async stop(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** A process told to die (or meant to kill itself) must be gone by then. */
export const EXIT_DEADLINE_MS = 10_000;

/** How the process exited, or undefined if it is still running after `timeoutMs`. */
export function waitForExit(process: RunningProcess, timeoutMs = EXIT_DEADLINE_MS): Promise<ExitStatus | undefined> {
  return Promise.race([process.exited, sleep(timeoutMs).then(() => undefined)]);
}
