/**
 * What the service keeps in Redis, read directly: tests check the counters against the records behind them.
 * Every key comes from src/redis/keys.ts, the one module that builds them.
 */
import { productOfHold as productOfHoldId } from '../../src/domain/hold-ids.js';
import type { RedisClient } from '../../src/redis/connection.js';
import type { HoldRecord } from '../../src/redis/hold-record.js';
import { productKeys, sweepScheduleKey, type ProductKeys } from '../../src/redis/keys.js';

export type { HoldRecord };

/** The product a hold id names (`<product id>-<random>`). */
export function productOfHold(holdId: string): number {
  const productId = productOfHoldId(holdId);
  if (productId === null) throw new Error(`not a hold id: ${holdId}`);
  return productId;
}

/** A Redis client and the key prefix of the service under test (a TestApp is one). */
export interface RedisScope {
  redis: RedisClient;
  prefix: string;
}

/** The keys of one product under the scope's prefix. */
export function keysOf(scope: RedisScope, productId: number): ProductKeys {
  return productKeys(scope.prefix, productId);
}

/** The product's stock, held and sold counters (0 where a field is missing). */
export async function inventory(
  scope: RedisScope,
  productId: number,
): Promise<{ stock: number; held: number; sold: number }> {
  const [stock, held, sold] = await scope.redis.hmget(keysOf(scope, productId).inventory, 'stock', 'held', 'sold');
  return { stock: Number(stock), held: Number(held), sold: Number(sold) };
}

/** One hold's record, or null when there is none. */
export async function holdRecord(scope: RedisScope, holdId: string): Promise<HoldRecord | null> {
  const raw = await scope.redis.hget(keysOf(scope, productOfHold(holdId)).holds, holdId);
  return raw === null ? null : (JSON.parse(raw) as HoldRecord);
}

/** Every hold record of the product, whatever its status. */
export async function holdRecords(scope: RedisScope, productId: number): Promise<HoldRecord[]> {
  return (await scope.redis.hvals(keysOf(scope, productId).holds)).map((raw) => JSON.parse(raw) as HoldRecord);
}

/** Units of the product's records that are held: what the `held` counter must say. */
export async function heldUnits(scope: RedisScope, productId: number): Promise<number> {
  return (await holdRecords(scope, productId)).filter((r) => r.status === 'held').reduce((sum, r) => sum + r.qty, 0);
}

/** How many holds of the product are in its expiry index (the active ones). */
export async function indexedHolds(scope: RedisScope, productId: number): Promise<number> {
  return scope.redis.zcard(keysOf(scope, productId).holdExpiries);
}

/** A hold's expiry as its product's expiry index has it (ms, as Redis returns it), or null when not active. */
export async function indexedExpiry(scope: RedisScope, holdId: string): Promise<string | null> {
  return scope.redis.zscore(keysOf(scope, productOfHold(holdId)).holdExpiries, holdId);
}

/** Hold ids of the product under conversion (claimed, not yet decided). */
export async function conversions(scope: RedisScope, productId: number): Promise<string[]> {
  return scope.redis.zrange(keysOf(scope, productId).conversions, '0', '-1');
}

/** The sweeper's schedule: product id, then when it is next due (ms, Redis clock), and so on. */
export async function sweepSchedule(scope: RedisScope): Promise<string[]> {
  return scope.redis.zrange(sweepScheduleKey(scope.prefix), '0', '-1', 'WITHSCORES');
}

/** When the sweeper next looks at the product (ms, Redis clock): 0 for a new product, null when unscheduled. */
export async function nextSweepOf(scope: RedisScope, productId: number): Promise<number | null> {
  const score = await scope.redis.zscore(sweepScheduleKey(scope.prefix), String(productId));
  return score === null ? null : Number(score);
}

/** Makes the products due for a sweep at once, as a product is when it is new. */
export async function makeDueForSweep(scope: RedisScope, productIds: number[]): Promise<void> {
  for (const id of productIds) await scope.redis.zadd(sweepScheduleKey(scope.prefix), 0, String(id));
}
