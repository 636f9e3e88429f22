/**
 * The service as a real process (`src/server.ts` run by a child node), for tests that kill it at a named crash
 * point (FLASHSALE_FAULT, see src/domain/faults.ts) and start it again on the same stores.
 */
import type { FaultPoint } from '../../src/domain/faults.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Test } from 'tap';
import {
  ADMIN_TOKEN,
  createTestDatabase,
  deleteKeys,
  newKeyPrefix,
  redisClient,
  TEST_REDIS_CLUSTER_NODES,
  TEST_REDIS_URL,
} from './app.js';
import { attempt, client, type Attempt, type Client } from './http.js';
import type { PostgresScope } from './postgres-state.js';
import { freePort, startProcess, type RunningProcess } from './processes.js';
import type { RedisScope } from './redis-state.js';
import { poll } from './wait.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

// Starting the service (tsx compiles on the fly, migrations run; a primary and its workers each compile) on a busy
// machine.
const READY_DEADLINE_MS = 60_000;
// Longer than any answer may take: a request still running then is a hang.
const CLIENT_DEADLINE_MS = 8000;

/** Where the process kills itself, as a power cut would ('none': it does not). */
export type Fault = FaultPoint | 'none';

/** One run of the service process. */
export interface Service extends RunningProcess {
  base: string;
  fault: Fault;
  /** A request to this process, with a client deadline. */
  call: Client<any>;
  /** A request that may meet the process dying: its answer, or the error instead. */
  attempt(method: string, path: string, body?: unknown): Promise<Attempt<any>>;
  /** Whether /readyz answers 200 now. */
  isReady(): Promise<boolean>;
  /** The process's log lines so far (JSON lines at LOG_LEVEL=warn, and anything on stderr). */
  output(): string[];
}

/** Spawns `src/server.ts` with a clean environment (nothing of tap's loaders): only what the service reads. */
function spawnService(env: Record<string, string>, port: number, fault: Fault): Service {
  const running = startProcess(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      HOST: '127.0.0.1',
      ...(fault === 'none' ? {} : { FLASHSALE_FAULT: fault }),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  // A chunk of a pipe can end inside a line: keep the unfinished end of each stream until the rest arrives, or a
  // long log line would be read as two fragments that are not JSON.
  const collector = () => {
    let unfinished = '';
    return (chunk: Buffer) => {
      const parts = (unfinished + chunk.toString('utf8')).split('\n');
      unfinished = parts.pop() ?? '';
      for (const line of parts) if (line.trim() !== '') lines.push(line);
      if (lines.length > 2000) lines.splice(0, lines.length - 2000);
    };
  };
  running.child.stdout!.on('data', collector());
  running.child.stderr!.on('data', collector());
  const base = `http://127.0.0.1:${port}`;
  const call = client<any>(base, CLIENT_DEADLINE_MS);
  return {
    ...running,
    base,
    fault,
    call,
    attempt: (method, path, body) => attempt(call, method, path, body),
    isReady: async () => (await attempt(call, 'GET', '/readyz')).answer?.status === 200,
    output: () => lines,
  };
}

/** Lines the services logged at level error or above (and any line not JSON), for the test's diagnostics. */
export function errorLines(...services: Service[]): string[] {
  return services.flatMap((s) =>
    s.output().filter((line) => {
      try {
        return (JSON.parse(line) as { level?: number }).level! >= 50;
      } catch {
        return !line.startsWith('{');
      }
    }),
  );
}

/** How one service of a world is started. */
export interface StartOptions {
  fault?: Fault;
  /** Settings of this start only, over the world's. */
  env?: Record<string, string>;
  /** False: return at once instead of waiting until /readyz says ready. */
  ready?: boolean;
}

/** What a test works with: its own database and key prefix, clients to look at both, and services to start. */
export interface ServiceWorld extends RedisScope, PostgresScope {
  databaseUrl: string;
  db: pg.Pool;
  /** Starts the service; waits until /readyz says ready unless `ready` is false. */
  start(options?: StartOptions): Promise<Service>;
}

/** Where a world's stores are, when not the shared servers. */
export interface WorldStores {
  /** A maintenance-database URL of the Postgres server the world's database is made on (a test's own cluster). */
  postgresServer?: string;
}

/** A world whose every service gets `settings` (environment variables); all of them are killed when the test ends. */
export async function serviceWorld(
  t: Test,
  settings: Record<string, string>,
  stores: WorldStores = {},
): Promise<ServiceWorld> {
  const databaseUrl = await createTestDatabase(t, stores.postgresServer);
  const prefix = newKeyPrefix();
  const redis = redisClient();
  const db = new pg.Pool({ connectionString: databaseUrl, max: 3 });
  // An idle client ended by the database's DROP ... WITH (FORCE) in teardown must not fail the test.
  db.on('error', () => {});
  const services: Service[] = [];
  // One teardown, in this order: no process may write a key after its prefix has been cleaned.
  t.teardown(async () => {
    await Promise.all(services.map((s) => s.stop()));
    await db.end();
    redis.disconnect();
    await deleteKeys(prefix);
  });

  const baseEnv = {
    REDIS_URL: TEST_REDIS_URL,
    // A world given a Redis server of its own runs on it, cluster or not.
    REDIS_CLUSTER_NODES: settings.REDIS_URL === undefined ? TEST_REDIS_CLUSTER_NODES : '',
    DATABASE_URL: databaseUrl,
    REDIS_KEY_PREFIX: prefix,
    ADMIN_TOKEN,
    LOG_LEVEL: 'warn',
    ...settings,
  };

  async function start(options: StartOptions = {}): Promise<Service> {
    const fault = options.fault ?? 'none';
    // A free port can be taken between the probe and the listen: try another one then.
    for (let tries = 1; ; tries++) {
      const service = spawnService({ ...baseEnv, ...options.env }, await freePort(), fault);
      services.push(service);
      if (options.ready === false) return service;
      const state = async () => {
        if (service.child.exitCode !== null || service.child.signalCode !== null) return 'exited';
        return (await service.isReady()) ? 'ready' : 'starting';
      };
      if ((await poll(state, (s) => s !== 'starting', READY_DEADLINE_MS, 50)) === 'ready') return service;
      const log = service.output().join('\n');
      await service.stop();
      if (tries < 3 && log.includes('EADDRINUSE')) continue;
      throw new Error(`the service (fault ${fault}) did not become ready:\n${log}`);
    }
  }

  return { prefix, databaseUrl, redis, db, start };
}
