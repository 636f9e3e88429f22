import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Result } from 'ioredis';
import type { RedisClient } from './connection.js';

type ProductKeysArgs = [string, string, string, string, string];
type ConversionKeysArgs = [...ProductKeysArgs, string];
type RebuildKeysArgs = [...ConversionKeysArgs, movesOut: string, movesIn: string];

// The raw commands, one per script in lua/ (each file's header lists its keys, arguments and replies). Replies
// are `unknown` here on purpose: only src/redis/commands.ts calls these, and it checks each reply's shape.
declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** A batch of hold requests for one product: the key count, the keys, then the arguments. */
    reserveStock(keyCount: number, ...keysThenArgs: (string | number)[]): Result<unknown, Context>;
    releaseHold(...args: [...keys: ProductKeysArgs, holdId: string, retainMs: number]): Result<unknown, Context>;
    claimIdempotencyKey(claimKey: string, fingerprint: string, ttlMs: number): Result<unknown, Context>;
    releaseIdempotencyKey(claimKey: string, fingerprint: string): Result<unknown, Context>;
    /** A batch of rate-limit counts: the key count, the keys, then the arguments. */
    countRequests(keyCount: number, ...keysThenArgs: (string | number)[]): Result<unknown, Context>;
    releaseExpiredHolds(
      ...args: [...keys: ConversionKeysArgs, batch: number, retainMs: number, maxWaitMs: number, leaseMs: number]
    ): Result<unknown, Context>;
    claimHold(
      ...args: [...keys: ConversionKeysArgs, holdId: string, claimId: string, leaseMs: number, retainMs: number]
    ): Result<unknown, Context>;
    finishConversion(
      ...args: [...keys: ConversionKeysArgs, holdId: string, orderId: string, retainMs: number]
    ): Result<unknown, Context>;
    abandonClaim(
      ...args: [...keys: ConversionKeysArgs, holdId: string, claimId: string, retainMs: number]
    ): Result<unknown, Context>;
    returnSoldUnits(
      inventoryKey: string,
      holdsKey: string,
      customerUnitsKey: string,
      holdId: string,
    ): Result<unknown, Context>;
    adminFailures(failuresKey: string, windowMs: number, add: 0 | 1): Result<unknown, Context>;
    claimDueProducts(scheduleKey: string, limit: number, leaseMs: number): Result<unknown, Context>;
    getHold(holdsKey: string, inventoryKey: string, holdId: string): Result<unknown, Context>;
    rebuildProduct(
      ...args: [
        ...keys: RebuildKeysArgs,
        generation: number,
        stock: number,
        perCustomerLimit: number,
        priceCents: number,
        name: string,
        stockVersion: number,
        sold: number,
        customerUnitsJson: string,
        convertedHoldsJson: string,
        convertedRetainMs: number,
        buckets: number,
        totalStock: number,
      ]
    ): Result<unknown, Context>;
    moveStockOut(
      inventoryKey: string,
      movesOutKey: string,
      moveId: string,
      targetLabel: number,
      units: number,
    ): Result<unknown, Context>;
    moveStockIn(
      inventoryKey: string,
      movesInKey: string,
      moveId: string,
      units: number,
      generation: number,
      at: number,
      memoryMs: number,
    ): Result<unknown, Context>;
    setStock(
      ...args: [...keys: ProductKeysArgs, stock: number, version: number, inlineExpiryLimit: number, retainMs: number]
    ): Result<unknown, Context>;
    repairProduct(
      ...args: [
        ...keys: ConversionKeysArgs,
        stock: number,
        version: number,
        liveUnits: number,
        bought: string,
        inFlight: string,
      ]
    ): Result<unknown, Context>;
  }
}

const LUA_DIR = new URL('../../lua/', import.meta.url);
const INCLUDE = /^--- @include "([\w/.-]+)"$/gm;

/**
 * Reads a script from lua/ with its `--- @include "includes/x"` lines inlined (Redis has no includes). An
 * include may include others; each is inlined once, at its first mention, so it comes before what needs it.
 */
export function readScript(name: string, included: Set<string> = new Set()): string {
  const source = readFileSync(fileURLToPath(new URL(`${name}.lua`, LUA_DIR)), 'utf8');
  return source.replace(INCLUDE, (_line, include: string) => {
    if (included.has(include)) return '';
    included.add(include);
    return readScript(include, included).trimEnd();
  });
}

/**
 * The scripts, each file named `<command>-<number of keys>.lua`; a file without the number takes a variable
 * number of keys, given as the command's first argument.
 */
export const SCRIPT_FILES = [
  'reserveStock',
  'releaseHold-5',
  'getHold-2',
  'claimIdempotencyKey-1',
  'releaseIdempotencyKey-1',
  'countRequests',
  'releaseExpiredHolds-6',
  'claimHold-6',
  'finishConversion-6',
  'abandonClaim-6',
  'returnSoldUnits-3',
  'claimDueProducts-1',
  'rebuildProduct-8',
  'moveStockOut-2',
  'moveStockIn-2',
  'setStock-5',
  'repairProduct-6',
  'adminFailures-1',
] as const;

/** Told how long each script call took, from sending it to its reply (seconds). */
export type ScriptTimer = (script: string, seconds: number) => void;

/** The part of ioredis's Script (what `defineCommand` makes) that runs a call, on the client and its pipelines. */
interface ScriptRunner {
  execute(
    container: unknown,
    args: unknown[],
    options: unknown,
    callback?: (err: unknown, reply: unknown) => void,
  ): unknown;
}

/**
 * Registers every script as a command; ioredis sends EVALSHA and falls back to EVAL after a NOSCRIPT. With
 * `timer`, every call is timed: ioredis has no per-command hook, and its Script object is what both the client's
 * command and its pipelines' run, so timing it there covers every path (batches sent alone, pipelined, auto-
 * pipelined), the NOSCRIPT re-send included.
 */
export function defineScripts(redis: RedisClient, timer?: ScriptTimer): void {
  for (const file of SCRIPT_FILES) {
    const [name, keyCount] = file.split('-') as [string, string | undefined];
    redis.defineCommand(name, { lua: readScript(file), ...(keyCount ? { numberOfKeys: Number(keyCount) } : {}) });
    if (timer) timeScript((redis.scriptsSet as Record<string, ScriptRunner>)[name]!, name, timer);
  }
}

function timeScript(script: ScriptRunner, name: string, timer: ScriptTimer): void {
  const execute = script.execute.bind(script);
  script.execute = (container, args, options, callback) => {
    const started = performance.now();
    return execute(container, args, options, (err, reply) => {
      timer(name, (performance.now() - started) / 1000);
      callback?.(err, reply);
    });
  };
}
