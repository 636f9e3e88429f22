import type { RedisClient } from './connection.js';
import { rethrowRedisFailure } from './errors.js';
import { parseHoldRecord, type HoldRecord } from './hold-record.js';
import { bucketLabels, movesOutKey, productKeys } from './keys.js';

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
  /**
   * Of a product split into stock buckets, each bucket on its own (the fields above are then the buckets'
   * together: `inventory.stock` is the product's total, from its first bucket); undefined for a product not split.
   */
  buckets?: BucketCheck[];
}

/** One stock bucket's counters, as the reconciliation checks them against the bucket's own hold records. */
export interface BucketCheck {
  label: number;
  /** null: Redis lost this bucket. */
  counters: { stock: number; held: number; sold: number; generation: number } | null;
  /** Units of the bucket's held and converting hold records. */
  recordsHeld: number;
  /** Units of moves out of the bucket not finished yet (in no bucket's share for now). */
  movingOut: number;
}

// Above this many records, the holds hash is paged through rather than read in one reply that blocks Redis.
const ONE_READ_RECORDS = 2_000;

/** Reads one product's inventory, hold records, indexes and customer units (of every bucket, when it is split). */
export async function readProductState(
  redis: RedisClient,
  prefix: string,
  productId: number,
): Promise<RedisProductState> {
  const first = await readBucketState(redis, prefix, productId, 0);
  const buckets = first.buckets;
  if (buckets <= 1 || !first.state.inventory) return first.state;
  // The first bucket's own figures stay its own; the product's are the buckets' together.
  const merged: RedisProductState = {
    ...first.state,
    inventory: { ...first.state.inventory, stock: first.totalStock },
  };
  merged.buckets = [];
  for (const label of bucketLabels(productId, buckets)) {
    const { state, generation, movingOut } =
      label === 0 ? first : await readBucketState(redis, prefix, productId, label);
    let recordsHeld = 0;
    for (const record of state.records.values())
      if (record.status === 'held' || record.status === 'converting') recordsHeld += record.qty;
    const inventory = state.inventory;
    merged.buckets.push({
      label,
      counters: inventory && { stock: inventory.stock, held: inventory.held, sold: inventory.sold, generation },
      recordsHeld,
      movingOut,
    });
    if (label === 0) continue;
    if (inventory) {
      merged.inventory!.held += inventory.held;
      merged.inventory!.sold += inventory.sold;
    }
    for (const [holdId, record] of state.records) merged.records.set(holdId, record);
    merged.malformed.push(...state.malformed);
    for (const holdId of state.expiryIndex) merged.expiryIndex.add(holdId);
    for (const holdId of state.conversions) merged.conversions.add(holdId);
    for (const [customer, units] of state.customerUnits)
      merged.customerUnits.set(customer, (merged.customerUnits.get(customer) ?? 0) + units);
  }
  return merged;
}

/** One bucket's state (label 0: the product's own keys), with what only its first bucket keeps. */
async function readBucketState(
  redis: RedisClient,
  prefix: string,
  productId: number,
  label: number,
): Promise<{ state: RedisProductState; buckets: number; totalStock: number; generation: number; movingOut: number }> {
  const keys = productKeys(prefix, productId, label);
  const [inventory, holdCount, expiries, conversions, customerUnits, extra, journal] = await Promise.all([
    redis.hmget(keys.inventory, 'stock', 'held', 'sold', 'per_customer_limit', 'stock_version'),
    redis.hlen(keys.holds),
    redis.zrange(keys.holdExpiries, '0', '-1'),
    redis.zrange(keys.conversions, '0', '-1'),
    redis.hgetall(keys.customerUnits),
    redis.hmget(keys.inventory, 'buckets', 'total_stock', 'generation'),
    redis.hvals(movesOutKey(prefix, productId, label)),
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
  const movingOut = journal.reduce((units, json) => units + Number((JSON.parse(json) as { units: number }).units), 0);
  const state: RedisProductState = {
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
  return {
    state,
    buckets: Number(extra[0] ?? 1),
    totalStock: Number(extra[1] ?? stock ?? 0),
    generation: Number(extra[2] ?? 0),
    movingOut,
  };
}
