import { parseArgs, type ParseArgsConfig } from 'node:util';
import pino from 'pino';
import { loadConfig, type Config } from '../config.js';
import { createDatabase } from '../db/connection.js';
import { createOrderDesk } from '../domain/orders.js';
import { createCatalogue } from '../domain/products.js';
import { createRebalancer } from '../domain/rebalancer.js';
import { createRedisRebuilder } from '../domain/redis-rebuild.js';
import { createSoldOutCache } from '../domain/sold-out-cache.js';
import { withEnvFile } from '../env-file.js';
import { createRedisClock } from '../redis/clock.js';
import { createRedisCommands } from '../redis/commands.js';
import { clusterNodeList, connectRedis } from '../redis/connection.js';
import { settingsFrom } from '../settings.js';

/**
 * Exit codes of every `flashsale` command, for scripts: 0 done (and clean), 1 the command found a problem or
 * could not do its work (drift, a refusal, nothing by that id, a store unreachable), 2 the command line is wrong.
 */
export const EXIT = { OK: 0, PROBLEM: 1, USAGE: 2 } as const;

/** A command line the command cannot run: printed with its usage, exit 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** One `flashsale` command. */
export interface Command {
  /** Runs with the arguments after the command's name; resolves to the exit code. */
  run(args: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses a command's arguments strictly (unknown options are usage errors); null when --help was asked for,
 * after printing `usage`.
 */
export function parseCommand<O extends Options>(args: string[], usage: string, options: O) {
  const help = { type: 'boolean', short: 'h', default: false } as const;
  const parsed = parseArgs({
    args,
    options: { ...options, help } as O & { help: typeof help },
    strict: true,
    allowPositionals: true,
  });
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(`${usage.trim()}\n`);
    return null;
  }
  return parsed;
}

/** A product id as the API takes one (1 to 2^31 - 1, decimal digits), or a usage error naming `what`. */
export function productIdArg(text: string | undefined, what = 'product id'): number {
  if (text === undefined) throw new UsageError(`missing ${what}`);
  const id = /^[1-9]\d{0,9}$/.test(text) ? Number(text) : NaN;
  if (!(id <= 2_147_483_647)) throw new UsageError(`not a ${what}: ${text}`);
  return id;
}

/** The configuration a command runs with: the environment over `.env`, as the service reads it. */
export function commandConfig(): Config {
  return loadConfig(withEnvFile(process.env));
}

/**
 * The stores and the rules, as the service wires them (src/plugins/*), for a command to use and close. Logs go
 * to stderr, so stdout carries only the command's answer (`--json` output stays parseable).
 */
export async function openStores(config: Config = commandConfig()) {
  const log = pino({ level: config.LOG_LEVEL }, pino.destination(2));
  const settings = settingsFrom(config);
  const db = createDatabase({ url: config.DATABASE_URL, timeoutMs: config.DATABASE_TIMEOUT_MS, poolSize: 4 });
  let redis;
  try {
    // A command may read a product's whole holds hash: give it longer than a request gets.
    redis = await connectRedis({
      url: config.REDIS_URL,
      clusterNodes: clusterNodeList(config.REDIS_CLUSTER_NODES),
      commandTimeoutMs: Math.max(config.REDIS_COMMAND_TIMEOUT_MS, 10_000),
    });
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const clockNow = { read: Date.now };
  const commands = createRedisCommands(redis, settings, () => clockNow.read());
  const rebuilder = createRedisRebuilder({ db, commands, log });
  const soldOut = createSoldOutCache(0);
  const rebalancer = createRebalancer({ db, commands, log });
  const catalogue = createCatalogue({ db, commands, rebuilder, rebalancer, log, soldOut });
  const connected = redis;
  return {
    config,
    settings,
    log,
    db,
    redis: connected,
    commands,
    rebuilder,
    catalogue,
    /** The order desk, which reads Redis's clock (created on first use). */
    async orders() {
      const clock = await createRedisClock(commands.time);
      clockNow.read = clock.now;
      // The commands act as the admin; the desk still needs to know whether customers prove who they are.
      const trust = { tokens: config.CUSTOMER_TOKEN_SECRET !== '' };
      return createOrderDesk({ db, commands, rebuilder, clock, settings, soldOut, trust, log });
    },
    async close() {
      await db.destroy();
      await connected.quit().catch(() => connected.disconnect());
    },
  };
}

export type Stores = Awaited<ReturnType<typeof openStores>>;

/** Runs `work` with the stores open, and closes them after, whatever happens. */
export async function withStores<T>(work: (stores: Stores) => Promise<T>): Promise<T> {
  const stores = await openStores();
  try {
    return await work(stores);
  } finally {
    await stores.close();
  }
}

/** Rows as an aligned text table, for people; `--json` gives the same data for scripts. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((row) => row.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return cells
    .map((row) =>
      row
        .map((cell, i) => (typeof rows[0]?.[i] === 'number' ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Writes a command's answer: JSON for scripts, else the text for people. */
export function print(json: boolean, data: unknown, text: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(data, null, 2) : text()}\n`);
}
