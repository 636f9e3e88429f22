import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';

/** A server process the bench started: its output goes to a log file, `stop()` ends it gracefully. */
export interface ChildServer {
  name: string;
  pid: number;
  logPath: string;
  /** Set once the process has exited, with how. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** True if it exited without being asked to. */
  crashed(): boolean;
  stop(): Promise<void>;
  /** The last lines of its log, for error messages. */
  tail(lines?: number): string;
}

const running = new Set<ChildProcess>();
// A bench interrupted or crashed must not leave servers behind.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A TCP port nothing listens on right now (the kernel's choice). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

export function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** GET url answers 2xx. */
export async function answersOk(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * Starts `node args...` with its stdout and stderr written straight to `logDir/name.log` (no pipe through this
 * process, which is busy generating load), and resolves once `ready()` holds. Fails if it exits first or is not
 * ready within `timeoutMs`.
 */
export async function startServer(options: {
  name: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  logDir: string;
  ready: () => Promise<boolean>;
  timeoutMs?: number;
  cwd?: string;
}): Promise<ChildServer> {
  const logPath = join(options.logDir, `${options.name}.log`);
  const fd = openSync(logPath, 'a');
  const child = spawn(process.execPath, options.args, {
    env: options.env,
    cwd: options.cwd,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`${options.name} did not start`);
  running.add(child);
  let stopping = false;
  const server: ChildServer = {
    name: options.name,
    pid: child.pid,
    logPath,
    exit: undefined,
    crashed: () => server.exit !== undefined && !stopping,
    tail: (lines = 20) => {
      try {
        return readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '(no log)';
      }
    },
    stop: async () => {
      if (server.exit) return;
      stopping = true;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(killer);
    },
  };
  child.once('exit', (code, signal) => {
    server.exit = { code, signal };
    running.delete(child);
  });

  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  while (!(await options.ready())) {
    if (server.exit) {
      throw new Error(`${options.name} exited (code ${server.exit.code}) before it was ready:\n${server.tail()}`);
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`${options.name} was not ready within ${options.timeoutMs ?? 60_000} ms:\n${server.tail()}`);
    }
    await sleep(20);
  }
  return server;
}
