import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Redis, Result } from 'ioredis';

/** Codes the Lua scripts answer with (see each script's header); negative ones are refusals. */
export enum ScriptCode {
  Ok = 1,
  Unchanged = 0,
  ProductNotFound = -1,
  InsufficientStock = -2,
  CustomerLimitExceeded = -3,
  HoldNotFound = -4,
  HoldConverted = -5,
  StockBelowCommitted = -6,
  IdempotencyKeyReused = -7,
  CustomerIdRequired = -8,
  DeadlinePassed = -9,
  HoldExpired = -10,
  HoldReleased = -11,
  HoldConverting = -12,
  WrongHoldState = -13,
  ClaimJoined = 2,
}

type ProductKeysArgs = [string, string, string, string, string];
type ConversionKeysArgs = [...ProductKeysArgs, string];

/** reserveStock's answer to one request of its batch: code, hold id, a, b, replayed (0|1). */
export type ReserveReply = [number, string, number, number, number];
/** releaseHold / getHold reply: code, hold record JSON. */
export type HoldRecordReply = [number, string];
/** releaseExpiredHolds reply: expired, purged, next sweep at (ms), then pairs of hold id and claim id. */
export type SweepReply = [number, number, number, ...string[]];
/** claimHold reply: code, claim id, hold record JSON. */
export type ClaimReply = [number, string, string];
/** finishConversion / abandonClaim / returnSoldUnits reply: code, hold status. */
export type HoldStateReply = [number, string];
/** setStock reply: code, stock, held, sold. */
export type SetStockReply = [number, number, number, number];
/** loadProduct reply: loaded (1|0), stock version in Redis. */
export type LoadProductReply = [number, number];

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** A batch of hold requests for one product: the key count, the keys, then the arguments (lua/reserveStock.lua). */
    reserveStock(keyCount: number, ...keysThenArgs: (string | number)[]): Result<string, Context>;
    releaseHold(...args: [...keys: ProductKeysArgs, holdId: string, retainMs: number]): Result<HoldRecordReply, Context>;
    getHold(holdsKey: string, holdId: string): Result<HoldRecordReply, Context>;
    releaseExpiredHolds(
      ...args: [...keys: ConversionKeysArgs, batch: number, retainMs: number, maxWaitMs: number, leaseMs: number]
    ): Result<SweepReply, Context>;
    claimHold(
      ...args: [...keys: ConversionKeysArgs, holdId: string, claimId: string, leaseMs: number, retainMs: number]
    ): Result<ClaimReply, Context>;
    finishConversion(
      ...args: [...keys: ConversionKeysArgs, holdId: string, orderId: string, retainMs: number]
    ): Result<HoldStateReply, Context>;
    abandonClaim(
      ...args: [...keys: ConversionKeysArgs, holdId: string, claimId: string, retainMs: number]
    ): Result<HoldStateReply, Context>;
    returnSoldUnits(
      inventoryKey: string, holdsKey: string, customerUnitsKey: string, holdId: string,
    ): Result<HoldStateReply, Context>;
    claimDueProducts(scheduleKey: string, limit: number, leaseMs: number): Result<string[], Context>;
    loadProduct(
      inventoryKey: string, stock: number, perCustomerLimit: number, priceCents: number, name: string, version: number, sold: number,
    ): Result<LoadProductReply, Context>;
    setStock(
      ...args: [...keys: ProductKeysArgs, stock: number, version: number, inlineExpiryLimit: number, retainMs: number]
    ): Result<SetStockReply, Context>;
  }
}

const LUA_DIR = new URL('../../lua/', import.meta.url);
const INCLUDE = /^--- @include "([\w/.-]+)"$/gm;

/** Reads a script from lua/, inlining its `--- @include "includes/x"` lines (Redis has no includes). */
export function readScript(name: string): string {
  const source = readFileSync(fileURLToPath(new URL(`${name}.lua`, LUA_DIR)), 'utf8');
  return source.replace(INCLUDE, (_line, include: string) => readScript(include).trimEnd());
}

/**
 * The scripts, each file named `<command>-<number of keys>.lua`; a file without the number takes a variable
 * number of keys, given as the command's first argument.
 */
const SCRIPT_FILES = [
  'reserveStock',
  'releaseHold-5',
  'getHold-1',
  'releaseExpiredHolds-6',
  'claimHold-6',
  'finishConversion-6',
  'abandonClaim-6',
  'returnSoldUnits-3',
  'claimDueProducts-1',
  'loadProduct-1',
  'setStock-5',
] as const;

/** Registers every script as a typed command; ioredis sends EVALSHA and falls back to EVAL after a NOSCRIPT. */
export function defineScripts(redis: Redis): void {
  for (const file of SCRIPT_FILES) {
    const [name, keyCount] = file.split('-') as [string, string | undefined];
    redis.defineCommand(name, { lua: readScript(file), ...(keyCount ? { numberOfKeys: Number(keyCount) } : {}) });
  }
}
