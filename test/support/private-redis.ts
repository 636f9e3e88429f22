import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Test } from 'tap';
import { freePort, startProcess, type RunningProcess } from './processes.js';
import { poll } from './wait.js';

/** A redis-server the test may kill, restart or freeze. */
export interface PrivateRedis {
  url: string;
  /**
   * Starts it again on its data directory and waits until it answers: empty without persistence; with `aof`, with
   * what the AOF kept, unless `emptyDataDir` wipes the directory first (a disk lost with the machine).
   */
  start(options?: { emptyDataDir?: boolean }): Promise<void>;
  /** SIGKILL, as a crash: nothing is flushed; with `aof`, what was written to the kernel survives it. */
  kill(): Promise<void>;
  /** SIGSTOP: the process keeps its connections open and answers nothing, the "hang" case. */
  freeze(): void;
  thaw(): void;
}

/** How a private redis-server keeps its data. */
export interface PrivateRedisOptions {
  /**
   * `none` (default): nothing on disk, a restart comes back empty, as on Debian's default and these machines.
   * `aof`: `appendonly yes`, `appendfsync everysec` (docker-compose.yml's setting). Redis writes each event loop's
   * AOF buffer to the kernel before it sends that loop's replies, so a killed process loses nothing acknowledged
   * (the kernel has it); a machine crash loses up to the last second (the fsync is once a second). The exception
   * is a disk so slow that a background fsync is still running: Redis then postpones the write, by up to 2 s.
   */
  persistence?: 'none' | 'aof';
}

/** A redis-server of this test's own on a free port (without persistence unless told: see PrivateRedisOptions). */
export async function privateRedis(t: Test, options: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const dir = await mkdtemp(join(tmpdir(), 'flashsale-redis-'));
  const persistence =
    options.persistence === 'aof' ? ['--appendonly', 'yes', '--appendfsync', 'everysec'] : ['--appendonly', 'no'];
  let server: RunningProcess | undefined;

  const start = async ({ emptyDataDir = false } = {}) => {
    if (emptyDataDir) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir);
    }
    server = startProcess(
      '/usr/bin/redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, '--dir', dir],
      { stdio: 'ignore' },
    );
    await waitForPing(url);
  };
  const kill = async () => {
    const running = server;
    server = undefined;
    await running?.stop();
  };

  t.teardown(async () => {
    await kill();
    await rm(dir, { recursive: true, force: true });
  });
  await start();
  return { url, start, kill, freeze: () => server?.child.kill('SIGSTOP'), thaw: () => server?.child.kill('SIGCONT') };
}

/** Waits until a PING at `url` is answered; throws, with the last error, if none is within `timeoutMs`. */
async function waitForPing(url: string, timeoutMs = 10_000): Promise<void> {
  const failure = await poll(
    () => pingFailure(url),
    (err) => err === null,
    timeoutMs,
    50,
  );
  if (failure !== null) throw new Error(`redis at ${url} did not start`, { cause: failure });
}

/** Null when one PING at `url` is answered, else what failed. */
async function pingFailure(url: string): Promise<unknown> {
  const client = new Redis(url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.ping();
    return null;
  } catch (err) {
    return err;
  } finally {
    client.disconnect();
  }
}
