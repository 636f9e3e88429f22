// Finds or starts the Redis and PostgreSQL a local run needs, so `npm start` works on a bare machine.
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ConfigSchema } from '../config.js';
import { redactUrl } from '../redis/connection.js';

export interface ServiceUrls {
  redisUrl: string;
  databaseUrl: string;
  stop: () => Promise<void>;
}

export interface Log {
  info(o: object, msg: string): void;
  warn(o: object, msg: string): void;
}

/** A server this module started; `stop()` shuts it down. */
export interface PrivateService {
  url: string;
  stop: () => Promise<void>;
}

export const DEFAULT_REDIS_URL: string = ConfigSchema.properties.REDIS_URL.default;
export const DEFAULT_DATABASE_URL: string = ConfigSchema.properties.DATABASE_URL.default;

const HOW_TO_GET =
  'Either run `docker compose up -d redis postgres` (from the repository root), ' +
  'or install them with `apt-get install -y redis-server postgresql`, ' +
  'or point REDIS_URL / DATABASE_URL at running servers.';

/** Where private stores live and which ports they take: the checkout's `.local/` and the standard ports. */
export interface LocalServiceOptions {
  root?: string;
  redisPort?: number;
  postgresPort?: number;
}

/**
 * Returns URLs to use. Env wins; else a private store an earlier start left running (see leftoverRedis); else the
 * default local ports if something listens; else private instances. Private stores, started or taken over, are
 * stopped by `stop()`.
 */
export async function ensureLocalServices(
  env: NodeJS.ProcessEnv,
  log: Log,
  options: LocalServiceOptions = {},
): Promise<ServiceUrls> {
  const { redisPort = 6379, postgresPort = 5432 } = options;
  const started: PrivateService[] = [];
  const stop = async (): Promise<void> => {
    // Reverse order, and each only once, so a double stop() is harmless.
    for (const s of started.splice(0).reverse()) await s.stop();
  };
  // Only looked up when needed: a deployed build with both URLs set has no use for the checkout.
  const local = (name: string): string => join(options.root ?? findRepoRoot(), '.local', name);
  try {
    // A Redis Cluster is never started here: REDIS_CLUSTER_NODES names one that runs already (REDIS_URL unused).
    let redisUrl = env.REDIS_URL || (env.REDIS_CLUSTER_NODES ? DEFAULT_REDIS_URL : undefined);
    if (!redisUrl) {
      const dir = local('redis');
      const leftover = await leftoverRedis(dir, redisPort);
      if (leftover) {
        started.push(leftover);
        redisUrl = leftover.url;
        log.warn(
          { redisUrl, dir, pid: leftover.pid },
          'taking over the private redis-server an earlier start left running; it stops with this one',
        );
      } else if (await isListening('127.0.0.1', redisPort)) {
        redisUrl = `redis://127.0.0.1:${redisPort}`;
      } else {
        const redis = await startPrivateRedis(dir, redisPort);
        started.push(redis);
        redisUrl = redis.url;
        log.warn({ redisUrl, dir }, `nothing on 127.0.0.1:${redisPort}: started a private redis-server`);
      }
    }
    let databaseUrl = env.DATABASE_URL;
    if (!databaseUrl) {
      const dir = local('pg');
      const leftover = await leftoverPostgres(dir, postgresPort);
      if (leftover) {
        started.push(leftover);
        databaseUrl = leftover.url;
        log.warn(
          { databaseUrl, dir, pid: leftover.pid },
          'taking over the private PostgreSQL an earlier start left running; it stops with this one',
        );
      } else if (await isListening('127.0.0.1', postgresPort)) {
        databaseUrl =
          postgresPort === 5432 ? DEFAULT_DATABASE_URL : `postgres://postgres@127.0.0.1:${postgresPort}/flashsale`;
      } else {
        const postgres = await startPrivatePostgres(dir, postgresPort);
        started.push(postgres);
        databaseUrl = postgres.url;
        // A fresh cluster has no application database yet.
        await ensureDatabase(databaseUrl);
        log.warn({ databaseUrl, dir }, `nothing on 127.0.0.1:${postgresPort}: started a private PostgreSQL`);
      }
    }
    log.info(
      {
        redisUrl: redactUrl(redisUrl),
        redisClusterNodes: env.REDIS_CLUSTER_NODES || undefined,
        databaseUrl: redactUrl(databaseUrl),
      },
      'using services',
    );
    return { redisUrl, databaseUrl, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** CREATE DATABASE for the URL's database if it is missing, via the `postgres` maintenance database. */
export async function ensureDatabase(databaseUrl: string): Promise<void> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (name === '' || name === 'postgres') return;
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount) return;
    // Identifiers cannot be bound as parameters: quote them, doubling any embedded quote.
    await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
  } catch (err) {
    // Someone else created it between our check and our CREATE: 42P04 duplicate_database,
    // or 23505 when both CREATEs race on pg_database's unique index.
    const code = errorCode(err);
    if (code !== '42P04' && code !== '23505') throw err;
  } finally {
    await client.end();
  }
}

/** Starts redis-server (AOF on, RDB off) with its data in `dir`; resolves once it answers PING. */
export async function startPrivateRedis(dir: string, port: number): Promise<PrivateService> {
  const bin = findOnPath('redis-server');
  if (!bin) throw new Error(`redis-server not found on PATH. ${HOW_TO_GET}`);
  mkdirSync(dir, { recursive: true });
  // Daemonised so it outlives a crashed parent instead of losing un-synced AOF writes with it.
  await run(bin, [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--appendfsync',
    'everysec',
    '--save',
    '',
    '--daemonize',
    'yes',
    '--pidfile',
    join(dir, 'redis.pid'),
    '--logfile',
    join(dir, 'redis.log'),
  ]);
  await redisAnswering(dir, port);
  return privateRedis(port);
}

// PING, not just connect: while it replays the AOF Redis accepts connections but answers LOADING.
function redisAnswering(dir: string, port: number): Promise<void> {
  return waitFor(
    () => redisCommand(port, 'PING').then((r) => r.startsWith('+PONG')),
    30_000,
    `redis-server on port ${port} did not answer PING; see ${join(dir, 'redis.log')}`,
  );
}

function privateRedis(port: number): PrivateService {
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      await redisCommand(port, 'SHUTDOWN').catch(() => undefined);
      await waitFor(
        async () => !(await isListening('127.0.0.1', port)),
        10_000,
        `redis-server on port ${port} did not stop`,
      );
    },
  };
}

/**
 * The private redis-server a start that was killed (SIGKILL, a crash) left running: its pid file names a live
 * redis-server. It is daemonised on purpose, so that unsynced AOF writes outlive the crash; the next start takes
 * it over (same folder, same data) and stops it when it stops, rather than using it as a foreign server and
 * leaving it running forever.
 */
export async function leftoverRedis(
  dir: string,
  port: number,
): Promise<(PrivateService & { pid: number }) | undefined> {
  const pid = livePid(join(dir, 'redis.pid'), 'redis-server');
  if (pid === undefined) return undefined;
  await redisAnswering(dir, port);
  return { ...privateRedis(port), pid };
}

/** The private PostgreSQL a killed start left running (its postmaster.pid names a live postgres), as leftoverRedis. */
async function leftoverPostgres(dir: string, port: number): Promise<(PrivateService & { pid: number }) | undefined> {
  const data = join(dir, 'data');
  const pid = livePid(join(data, 'postmaster.pid'), 'postgres');
  const binDir = findPostgresBinDir();
  if (pid === undefined || !binDir) return undefined;
  const asOwner = await postgresRunner(dir);
  return {
    pid,
    url: `postgres://postgres@127.0.0.1:${port}/flashsale`,
    stop: async () => {
      await asOwner(join(binDir, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'stop']);
    },
  };
}

/** The pid a pid file names, if that process is alive and runs `program` (a reused pid runs something else). */
function livePid(pidFile: string, program: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    return basename(command).startsWith(program) ? pid : undefined;
  } catch {
    // No /proc (macOS): whether the process is alive at all.
    try {
      process.kill(pid, 0);
      return pid;
    } catch {
      return undefined;
    }
  }
}

/** initdb (once) and start PostgreSQL on `port` with its cluster in `dir/data`; resolves once it accepts connections. */
export async function startPrivatePostgres(dir: string, port: number): Promise<PrivateService> {
  const binDir = findPostgresBinDir();
  if (!binDir)
    throw new Error(`PostgreSQL's initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin. ${HOW_TO_GET}`);
  const data = join(dir, 'data');
  // Unix socket paths are limited to ~107 bytes; a deep checkout falls back to a temp folder.
  const socketDir = join(dir, `.s.PGSQL.${port}`).length < 100 ? dir : tmpdir();
  mkdirSync(dir, { recursive: true });
  const asOwner = await postgresRunner(dir);
  const pgCtl = join(binDir, 'pg_ctl');
  if (!existsSync(join(data, 'PG_VERSION'))) {
    await asOwner(join(binDir, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  }
  // pg_ctl hands -o to a shell, hence the quoting.
  const opts = `-p ${port} -c listen_addresses=127.0.0.1 -k ${shellQuote(socketDir)}`;
  await asOwner(pgCtl, ['-D', data, '-l', join(dir, 'postgres.log'), '-o', opts, '-w', '-t', '60', 'start']);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/flashsale`,
    stop: async () => {
      await asOwner(pgCtl, ['-D', data, '-m', 'fast', '-w', 'stop']);
    },
  };
}

/** True if a TCP connect to host:port succeeds within timeoutMs. */
export function isListening(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The folder holding package.json above this module, from src/cli/ and from dist/src/cli/ alike. */
export function findRepoRoot(from = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    // tsc copies package.json into dist/ when a source file imports it: that is not the root.
    if (existsSync(join(dir, 'package.json')) && basename(dir) !== 'dist') return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

function errorCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && isExecutable(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

function findPostgresBinDir(): string | undefined {
  const initdb = findOnPath('initdb');
  if (initdb && isExecutable(join(dirname(initdb), 'pg_ctl'))) return dirname(initdb);
  // Debian keeps the server binaries off PATH, one folder per major version: take the newest.
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  return versions
    .map((v) => join(root, v, 'bin'))
    .find((d) => isExecutable(join(d, 'initdb')) && isExecutable(join(d, 'pg_ctl')));
}

type Runner = (cmd: string, args: string[]) => Promise<string>;

/**
 * initdb and postgres refuse to run as root: as root, run them as the `postgres` system user
 * (created if missing) and hand it the folder. Otherwise run them as ourselves.
 */
async function postgresRunner(dir: string): Promise<Runner> {
  if (process.getuid?.() !== 0) return run;
  if (
    !(await run('id', ['-u', 'postgres']).then(
      () => true,
      () => false,
    ))
  ) {
    await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
  }
  await run('chown', ['-R', 'postgres:', dir]);
  const runuser = findOnPath('runuser');
  const asPostgres: Runner = runuser
    ? (cmd, args) => run(runuser, ['-u', 'postgres', '--', cmd, ...args])
    : (cmd, args) => run('su', ['-s', '/bin/sh', 'postgres', '-c', [cmd, ...args].map(shellQuote).join(' ')]);
  // An ancestor folder closed to others (e.g. /root) would make initdb fail with a vaguer message.
  await asPostgres('test', ['-w', dir]).catch(() => {
    throw new Error(
      `the postgres user cannot write ${dir} (an ancestor folder is not searchable); set DATABASE_URL instead`,
    );
  });
  return asPostgres;
}

/** Runs a command to completion; rejects with its output on a non-zero exit. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    child.once('error', reject);
    // 'exit', not 'close': a daemon started by cmd may keep the pipes open.
    child.once('exit', (code, signal) => {
      if (code === 0) resolve(output);
      else
        reject(new Error(`${basename(cmd)} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${output.trim()}`));
    });
  });
}

/** Sends one inline command and returns the first reply line ('' if the server closed without one). */
function redisCommand(port: number, command: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('timeout')));
    socket.once('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (b: Buffer) => {
      reply += b.toString();
      if (reply.includes('\r\n')) socket.end();
    });
    socket.once('error', reject);
    socket.once('close', () => resolve(reply.split('\r\n')[0] ?? ''));
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(message);
}
