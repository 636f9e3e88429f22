import type { RedisClient } from './connection.js';
import { rethrowRedisFailure } from './errors.js';
import { parseHoldRecord, type HoldRecord } from './hold-record.js';
import { productKeys } from './keys.js';

/**
 * Everything Redis keeps about one product, read for the reconciliation (src/domain/reconcile.ts). The reads are
 * not one snapshot: under live traffic a hold can change between two of them, which is why the repair recomputes
 * what depends on the hold records inside its script.
 */
export interface RedisProductState {
  /** null: Redis does not have the product. */
  inventory: {
    stock: number;
    held: number;
    sold: number;
    /** 0: none. */
    per_customer_limit: number;
    stock_version: number;
  } | null;
  records: Map<string, HoldRecord>;
  /** Hold records that do not parse, by hold id: a bug or a foreign write. */
  malformed: string[];
  /** Members of the expiry index. */
  expiryIndex: Set<string>;
  /** Members of the conversion index. */
  conversions: Set<string>;
  customerUnits: Map<string, number>;
}

// Above this many records, the holds hash is paged through rather than read in one reply that blocks Redis.
const ONE_READ_RECORDS = 2_000;

/** Reads one product's inventory, hold records, indexes and customer units. */
export async function readProductState(
  redis: RedisClient,
  prefix: string,
  productId: number,
): Promise<RedisProductState> {
  const keys = productKeys(prefix, productId);
  const [inventory, holdCount, expiries, conversions, customerUnits] = await Promise.all([
    redis.hmget(keys.inventory, 'stock', 'held', 'sold', 'per_customer_limit', 'stock_version'),
    redis.hlen(keys.holds),
    redis.zrange(keys.holdExpiries, '0', '-1'),
    redis.zrange(keys.conversions, '0', '-1'),
    redis.hgetall(keys.customerUnits),
  ]).catch(rethrowRedisFailure);

  const records = new Map<string, HoldRecord>();
  const malformed: string[] = [];
  const add = (holdId: string, json: string) => {
    try {
      records.set(holdId, parseHoldRecord(holdId, json));
    } catch {
      malformed.push(holdId);
    }
  };
  if (holdCount <= ONE_READ_RECORDS) {
    const all = await redis.hgetall(keys.holds).catch(rethrowRedisFailure);
    for (const [holdId, json] of Object.entries(all)) add(holdId, json);
  } else {
    let cursor = '0';
    do {
      const [next, flat] = await redis.hscan(keys.holds, cursor, 'COUNT', 1000).catch(rethrowRedisFailure);
      cursor = next;
      for (let i = 0; i < flat.length; i += 2) add(flat[i]!, flat[i + 1]!);
    } while (cursor !== '0');
  }

  const [stock, held, sold, limit, version] = inventory;
  return {
    inventory:
      stock === null || stock === undefined
        ? null
        : {
            stock: Number(stock),
            held: Number(held ?? 0),
            sold: Number(sold ?? 0),
            per_customer_limit: Number(limit ?? 0),
            stock_version: Number(version ?? 0),
          },
    records,
    malformed,
    expiryIndex: new Set(expiries),
    conversions: new Set(conversions),
    customerUnits: new Map(Object.entries(customerUnits).map(([customer, units]) => [customer, Number(units)])),
  };
}
