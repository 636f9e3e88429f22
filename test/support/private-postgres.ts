/**
 * A PostgreSQL cluster of the test's own (initdb into a temporary folder, a free port), for tests that crash
 * Postgres itself: `stop('immediate')` is `pg_ctl stop -m immediate`, every backend killed without a checkpoint,
 * so the next `start()` replays the WAL as after a crash.
 *
 * The cluster runs with `fsync=off`: it only skips flushing to disk, which matters for a power cut, not for a
 * killed Postgres (the kernel keeps every page written before the kill), and it makes initdb and commits fast on a
 * busy CI machine. Durability across an operating-system crash is not what these tests measure.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { freePort } from './processes.js';

const run = promisify(execFile);

/**
 * Where the server binaries (initdb, pg_ctl, postgres) are: TEST_POSTGRES_BIN, else the newest version Debian
 * installed under /usr/lib/postgresql (15 on these machines), so CI on another release does not skip the tests.
 */
const BIN = process.env.TEST_POSTGRES_BIN ?? debianPostgresBin() ?? '/usr/lib/postgresql/15/bin';

function debianPostgresBin(): string | undefined {
  let versions: string[];
  try {
    versions = readdirSync('/usr/lib/postgresql').filter((v) => /^[0-9]+$/.test(v));
  } catch {
    return undefined;
  }
  const newest = versions
    .sort((a, b) => Number(b) - Number(a))
    .find((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));
  return newest === undefined ? undefined : `/usr/lib/postgresql/${newest}/bin`;
}
// Starting waits for crash recovery to replay the WAL written since the last checkpoint: seconds at most here.
const START_DEADLINE_S = 60;

/** How `pg_ctl stop` ends the server: `immediate` kills every process at once, as a crash does. */
export type StopMode = 'immediate' | 'fast' | 'smart';

/** A PostgreSQL cluster the test may crash and start again. */
export interface PrivatePostgres {
  /** A maintenance-database URL (`postgres://postgres@127.0.0.1:PORT/postgres`), as TEST_PG_URL is. */
  url: string;
  port: number;
  /** `pg_ctl stop -m <mode>`, waiting until the server is gone. */
  stop(mode?: StopMode): Promise<void>;
  /** `pg_ctl start`, waiting until the server accepts connections (after crash recovery, if it crashed). */
  start(): Promise<void>;
}

/** Why a private cluster cannot be made here, or undefined when it can: a test skips with this message. */
export function privatePostgresUnavailable(): string | undefined {
  for (const name of ['initdb', 'pg_ctl', 'postgres']) {
    try {
      accessSync(join(BIN, name), constants.X_OK);
    } catch {
      return `no PostgreSQL server binaries in ${BIN} (${name} missing): install postgresql or set TEST_POSTGRES_BIN`;
    }
  }
  return undefined;
}

/** Postgres refuses to run as root: as root, its commands run as the postgres user (and it owns the folder). */
const asRoot = process.getuid?.() === 0;

function postgresCommand(name: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const binary = join(BIN, name);
  return asRoot ? run('runuser', ['-u', 'postgres', '--', binary, ...args]) : run(binary, args);
}

/** A new cluster on a free port, started; stopped and deleted when the test ends. */
export async function privatePostgres(t: Test): Promise<PrivatePostgres> {
  const missing = privatePostgresUnavailable();
  if (missing) throw new Error(missing);
  const dir = await mkdtemp(join(tmpdir(), 'flashsale-postgres-'));
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  let running = false;
  t.teardown(async () => {
    if (running) await stop('immediate').catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  await postgresCommand('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);

  let port = await freePort();
  const start = async () => {
    // The socket goes into the cluster's folder: /var/run/postgresql may not be writable for the test's user.
    const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
    await postgresCommand('pg_ctl', [
      '-D',
      data,
      '-l',
      log,
      '-w',
      '-t',
      String(START_DEADLINE_S),
      '-o',
      options,
      'start',
    ]);
    running = true;
  };
  const stop = async (mode: StopMode = 'fast') => {
    await postgresCommand('pg_ctl', ['-D', data, '-m', mode, '-w', 'stop']);
    running = false;
  };

  // A free port can be taken between the probe and the start: try another one then.
  for (let tries = 1; ; tries++) {
    try {
      await start();
      break;
    } catch (err) {
      if (tries >= 3) throw new Error(`postgres did not start (log in ${log})`, { cause: err });
      port = await freePort();
    }
  }
  return {
    get url() {
      return `postgres://postgres@127.0.0.1:${port}/postgres`;
    },
    get port() {
      return port;
    },
    stop,
    start,
  };
}
