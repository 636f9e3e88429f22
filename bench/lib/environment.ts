/**
 * Everything the bench starts and must clean up: the compiled service (one or more deployments, each on its own
 * database and Redis key prefix), the two reference servers, and their databases. `cleanup()` stops them all,
 * drops the databases and deletes the keys (SCAN MATCH prefix* + UNLINK; never FLUSHALL).
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { answersOk, freePort, isListening, startServer, type ChildServer } from './processes.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Direct access to a deployment's stores, for the invariant checks and the memory measurement. */
export interface Stores {
  redis: Redis;
  /** REDIS_KEY_PREFIX of the deployment. */
  prefix: string;
  db: pg.Pool;
}

/** What the scenarios run against: the service, started by the bench or reached through BENCH_URL. */
export interface Deployment {
  readonly url: string;
  readonly adminToken: string;
  readonly webhookSecret: string;
  /** The service process, for CPU and RSS sampling; undefined when not known. */
  readonly pid: number | undefined;
  /** Its Redis and Postgres; undefined when not known (then only API-level checks run). */
  readonly stores: Stores | undefined;
  /** Throws if the service process died (a crash fails the run). */
  assertAlive(): void;
}

/** Service settings given to every deployment the bench starts unless a scenario overrides them. */
const SERVICE_DEFAULTS: Record<string, string> = {
  NODE_ENV: 'production',
  LOG_LEVEL: 'warn',
  // No hold of one scenario expires during a later one (the sweeper's work would land on that scenario's
  // figures); expiry-storm sets its own short lifetime.
  HOLD_TTL_SECONDS: '3600',
  // The load comes from one address: real limits would refuse it. --rate-limited turns them on, out of reach.
  RATE_LIMIT: 'off',
};

/**
 * BENCH_SERVICE_NODE_ARGS: node options for the service processes the bench starts, e.g. `--cpu-prof
 * --cpu-prof-dir=/tmp/prof` (Node refuses --cpu-prof in NODE_OPTIONS).
 */
const SERVICE_NODE_ARGS = (process.env.BENCH_SERVICE_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** The environment of a child process: the essentials only, so the caller's service settings do not leak in. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const keep = ['PATH', 'HOME', 'LANG', 'TZ', 'NODE_OPTIONS'];
  const env: NodeJS.ProcessEnv = {};
  for (const key of keep) if (process.env[key] !== undefined) env[key] = process.env[key];
  return { ...env, ...extra };
}

/** A service the bench started from the compiled build; it can be stopped and started again with other settings. */
export class ManagedDeployment implements Deployment {
  readonly adminToken = randomBytes(16).toString('hex');
  readonly webhookSecret = `whsec_${randomBytes(16).toString('hex')}`;
  private server: ChildServer | undefined;

  constructor(
    private readonly environment: BenchEnvironment,
    readonly name: string,
    private readonly port: number,
    readonly databaseUrl: string,
    readonly stores: Stores,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.server?.pid;
  }

  /** The log file of its current (or last) run. */
  get logPath(): string | undefined {
    return this.server?.logPath;
  }

  /** Starts the service with the defaults plus `overrides` (service environment variables). */
  async start(overrides: Record<string, string> = {}): Promise<void> {
    if (this.server && !this.server.exit) throw new Error(`${this.name} is already running`);
    this.environment.assertOpen();
    this.server = await startServer({
      name: this.name,
      args: [...SERVICE_NODE_ARGS, this.environment.serverScript()],
      cwd: REPO_ROOT,
      logDir: this.environment.logDir,
      env: childEnv({
        ...SERVICE_DEFAULTS,
        PORT: String(this.port),
        HOST: '127.0.0.1',
        REDIS_URL: this.environment.redisUrl,
        DATABASE_URL: this.databaseUrl,
        REDIS_KEY_PREFIX: this.stores.prefix,
        ADMIN_TOKEN: this.adminToken,
        WEBHOOK_SECRET: this.webhookSecret,
        ...overrides,
      }),
      ready: () => answersOk(`${this.url}/readyz`),
    });
    this.environment.stopIfClosed(this.server);
  }

  async stop(): Promise<void> {
    await this.server?.stop();
  }

  /**
   * `npm run reconcile -- --check` (the compiled CLI) on every product of this deployment's stores: clean (exit
   * 0), drift (1) or a failure (2), with what it printed.
   */
  reconcileCheck(): Promise<{ exitCode: number; output: string }> {
    const env = childEnv({
      REDIS_URL: this.environment.redisUrl,
      DATABASE_URL: this.databaseUrl,
      REDIS_KEY_PREFIX: this.stores.prefix,
      LOG_LEVEL: 'warn',
    });
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [this.environment.compiled('cli/reconcile.js'), '--check'],
        { cwd: REPO_ROOT, env, timeout: 120_000, encoding: 'utf8' },
        (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : 2) : 0;
          resolve({ exitCode: code, output: `${stdout}${stderr}`.trim() });
        },
      );
    });
  }

  assertAlive(): void {
    if (this.server?.crashed()) {
      const how = this.server.exit?.signal ?? `code ${this.server.exit?.code}`;
      throw new Error(
        `the service (${this.name}, pid ${this.server.pid}) exited (${how}) during the run:\n${this.server.tail()}`,
      );
    }
  }
}

/** A deployment the bench did not start: BENCH_URL, with optional access to its stores. */
export class ExternalDeployment implements Deployment {
  readonly pid: number | undefined;
  constructor(
    readonly url: string,
    readonly adminToken: string,
    readonly webhookSecret: string,
    pid: number | undefined,
    readonly stores: Stores | undefined,
  ) {
    this.pid = pid;
  }

  assertAlive(): void {}
}

export interface ReferenceServer {
  name: string;
  url: string;
  server: ChildServer;
  /** The seed's: signs its payment webhooks. */
  webhookSecret?: string;
}

export class BenchEnvironment {
  readonly runId = randomBytes(4).toString('hex');
  readonly logDir = mkdtempSync(join(tmpdir(), 'flashsale-bench-'));
  readonly redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
  /** Maintenance database URL on the Postgres server where the bench creates (and drops) its databases. */
  readonly pgAdminUrl = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  private buildDir: string | undefined;
  private readonly databases: string[] = [];
  private readonly prefixes: string[] = [];
  private readonly servers: ChildServer[] = [];
  private readonly deployments: ManagedDeployment[] = [];
  private readonly pools: pg.Pool[] = [];
  private readonly redisClients: Redis[] = [];
  /** Set by cleanup(): nothing new is created after it (a run interrupted mid-scenario must not leak). */
  private closed = false;

  assertOpen(): void {
    if (this.closed) throw new Error('the bench is shutting down');
  }

  /** A server that finished starting after cleanup() began is stopped at once (cleanup no longer sees it). */
  stopIfClosed(server: ChildServer): void {
    if (!this.closed) return;
    void server.stop();
    throw new Error('the bench is shutting down');
  }

  /**
   * `npm run build`, then a private copy of dist/ (inside the repository, so node_modules resolves): a
   * rebuild by someone else during the run cannot pull the files from under the service.
   */
  build(log: (line: string) => void): void {
    log('building the service (npm run build)');
    const result = spawnSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: ['ignore', 2, 2] });
    if (result.status !== 0) throw new Error(`npm run build failed (exit ${result.status})`);
    this.buildDir = join(REPO_ROOT, 'bench', '.build', this.runId);
    mkdirSync(this.buildDir, { recursive: true });
    cpSync(join(REPO_ROOT, 'dist'), join(this.buildDir, 'dist'), { recursive: true });
  }

  serverScript(): string {
    return this.compiled('server.js');
  }

  /** A compiled script of src/ in the private build, e.g. `cli/reconcile.js`. */
  compiled(script: string): string {
    if (!this.buildDir) throw new Error('build() first');
    return join(this.buildDir, 'dist', 'src', script);
  }

  /** CREATE DATABASE flashsale_bench_<random>; dropped by cleanup(). Returns its URL. */
  async createDatabase(): Promise<string> {
    this.assertOpen();
    const name = `flashsale_bench_${randomBytes(6).toString('hex')}`;
    const client = new pg.Client({ connectionString: this.pgAdminUrl });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${name}`);
    } finally {
      await client.end();
    }
    this.databases.push(name);
    const url = new URL(this.pgAdminUrl);
    url.pathname = `/${name}`;
    return url.toString();
  }

  /** A Redis key prefix of its own; its keys are deleted by cleanup(). */
  newPrefix(): string {
    this.assertOpen();
    const prefix = `bench:${randomBytes(6).toString('hex')}:`;
    this.prefixes.push(prefix);
    return prefix;
  }

  /** A new deployment of the service on a fresh database and key prefix, started with `overrides`. */
  async launchService(name: string, overrides: Record<string, string> = {}): Promise<ManagedDeployment> {
    const databaseUrl = await this.createDatabase();
    const redis = new Redis(this.redisUrl, { lazyConnect: false, maxRetriesPerRequest: 2 });
    this.redisClients.push(redis);
    const db = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    this.pools.push(db);
    const deployment = new ManagedDeployment(this, name, await freePort(), databaseUrl, {
      redis,
      prefix: this.newPrefix(),
      db,
    });
    this.deployments.push(deployment);
    await deployment.start(overrides);
    return deployment;
  }

  /** The bare Fastify ceiling (bench/baselines/ceiling.ts, through tsx). */
  async startCeiling(): Promise<ReferenceServer> {
    return this.startReference('ceiling', 'bench/baselines/ceiling.ts', {});
  }

  /** The seed's design (bench/baselines/seed.ts, through tsx) on a database of its own. */
  async startSeed(name = 'seed'): Promise<ReferenceServer> {
    const webhookSecret = `whsec_${randomBytes(16).toString('hex')}`;
    const reference = await this.startReference(name, 'bench/baselines/seed.ts', {
      DATABASE_URL: await this.createDatabase(),
      WEBHOOK_SECRET: webhookSecret,
    });
    return { ...reference, webhookSecret };
  }

  private async startReference(name: string, script: string, env: Record<string, string>): Promise<ReferenceServer> {
    this.assertOpen();
    const port = await freePort();
    const server = await startServer({
      name,
      args: ['--import', 'tsx', script],
      cwd: REPO_ROOT,
      logDir: this.logDir,
      env: childEnv({ NODE_ENV: 'production', PORT: String(port), ...env }),
      ready: () => isListening(port),
    });
    this.servers.push(server);
    this.stopIfClosed(server);
    return { name, url: `http://127.0.0.1:${port}`, server };
  }

  /** Stops everything started, drops the databases, deletes the keys. Safe to call twice. */
  async cleanup(log: (line: string) => void, keepLogs: boolean): Promise<void> {
    this.closed = true;
    const problems: string[] = [];
    const attempt = async (what: string, task: () => Promise<unknown>) => {
      try {
        await task();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    for (const deployment of this.deployments.splice(0))
      await attempt(`stop ${deployment.name}`, () => deployment.stop());
    for (const server of this.servers.splice(0)) await attempt(`stop ${server.name}`, () => server.stop());
    for (const pool of this.pools.splice(0)) await attempt('close pool', () => pool.end());
    for (const client of this.redisClients.splice(0)) client.disconnect();

    const redis = new Redis(this.redisUrl);
    for (const prefix of this.prefixes.splice(0)) await attempt(`delete ${prefix}*`, () => deleteKeys(redis, prefix));
    redis.disconnect();
    const databases = this.databases.splice(0);
    if (databases.length > 0) {
      const client = new pg.Client({ connectionString: this.pgAdminUrl });
      await attempt('connect to postgres', () => client.connect());
      for (const name of databases) {
        await attempt(`drop ${name}`, () => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
      }
      await client.end().catch(() => undefined);
    }
    if (this.buildDir) {
      rmSync(this.buildDir, { recursive: true, force: true });
      try {
        rmdirSync(join(this.buildDir, '..')); // bench/.build, unless another run is using it
      } catch {
        // not empty
      }
    }
    if (keepLogs) log(`server logs kept in ${this.logDir}`);
    else rmSync(this.logDir, { recursive: true, force: true });
    for (const problem of problems) log(`cleanup: ${problem}`);
  }
}

/** Deletes every key under `prefix` without blocking Redis: SCAN MATCH prefix* then UNLINK, a page at a time. */
export async function deleteKeys(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

/** BENCH_URL and its companions, when the bench runs against a deployment it did not start. */
export function externalDeployment(): ExternalDeployment | undefined {
  const url = process.env.BENCH_URL;
  if (!url) return undefined;
  let stores: Stores | undefined;
  if (process.env.BENCH_REDIS_URL && process.env.BENCH_DATABASE_URL) {
    stores = {
      redis: new Redis(process.env.BENCH_REDIS_URL),
      prefix: process.env.BENCH_REDIS_PREFIX ?? 'fs:',
      db: new pg.Pool({ connectionString: process.env.BENCH_DATABASE_URL, max: 2 }),
    };
  }
  const pid = process.env.BENCH_PID ? Number(process.env.BENCH_PID) : undefined;
  return new ExternalDeployment(
    url.replace(/\/+$/, ''),
    process.env.ADMIN_TOKEN ?? '',
    (process.env.WEBHOOK_SECRET ?? '').split(',')[0] ?? '',
    pid,
    stores,
  );
}
