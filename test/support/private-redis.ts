import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Test } from 'tap';
import { freePort, startProcess, type RunningProcess } from './processes.js';
import { poll } from './wait.js';

/** A redis-server the test may kill, restart or freeze. */
export interface PrivateRedis {
  url: string;
  /** Starts it again (empty: it keeps nothing on disk) and waits until it answers. */
  start(): Promise<void>;
  kill(): Promise<void>;
  /** SIGSTOP: the process keeps its connections open and answers nothing, the "hang" case. */
  freeze(): void;
  thaw(): void;
}

/** A redis-server of this test's own on a free port, without persistence: a restart comes back empty, as in production. */
export async function privateRedis(t: Test): Promise<PrivateRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const dir = await mkdtemp(join(tmpdir(), 'flashsale-redis-'));
  let server: RunningProcess | undefined;

  const start = async () => {
    server = startProcess(
      '/usr/bin/redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
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
