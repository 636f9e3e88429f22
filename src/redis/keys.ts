/**
 * Every Redis key the service uses is built here. All keys of one product share the hash tag `{p:<id>}` (of one
 * stock bucket, `{p:<id>:<label>}`), so each script touches a single Redis Cluster slot. The layout is documented
 * in the README, with where each key lives on a Redis Cluster and why (README "Redis Cluster").
 */

/** The keys of one product, in the order the product scripts take them as KEYS[1..5]. */
export interface ProductKeys {
  /** hash: stock, held, sold, per_customer_limit, price_cents, name, stock_version */
  inventory: string;
  /** zset: active hold id -> expires_at (ms) */
  holdExpiries: string;
  /** hash: hold id -> hold record (JSON) */
  holds: string;
  /** hash: customer id -> units held + bought (products with a per-customer limit) */
  customerUnits: string;
  /** zset: ended hold id -> time its record is purged (ms) */
  endedHolds: string;
  /** zset: hold id under conversion -> end of its claim's lease (ms) */
  conversions: string;
}

export function productTag(prefix: string, productId: number): string {
  return `${prefix}{p:${productId}}`;
}

/**
 * The hash tag of one stock bucket of a product: label 0 is the product's own tag `{p:<id>}` (a product of one
 * bucket has exactly the keys it always had), label L > 0 is `{p:<id>:<L>}`. Labels are picked by
 * `bucketLabels` so that a product's buckets hash to different parts of the slot space.
 */
export function bucketTag(prefix: string, productId: number, label: number): string {
  return label === 0 ? productTag(prefix, productId) : `${prefix}{p:${productId}:${label}}`;
}

export function productKeys(prefix: string, productId: number, label = 0): ProductKeys {
  const tag = bucketTag(prefix, productId, label);
  return {
    inventory: `${tag}:inventory`,
    holdExpiries: `${tag}:hold-expiries`,
    holds: `${tag}:holds`,
    customerUnits: `${tag}:customer-units`,
    endedHolds: `${tag}:ended-holds`,
    conversions: `${tag}:conversions`,
  };
}

/**
 * hash: move id -> a move of stock out of this bucket whose other half (into the target bucket) may not have run
 * yet (JSON: to, units, generation, at). Lives in the source bucket's slot, written by the same script that
 * takes the units out (lua/moveStockOut-2.lua).
 */
export function movesOutKey(prefix: string, productId: number, label: number): string {
  return `${bucketTag(prefix, productId, label)}:moves-out`;
}

/** zset: move id -> when it was applied (ms): the moves this bucket took in, so each is applied once. */
export function movesInKey(prefix: string, productId: number, label: number): string {
  return `${bucketTag(prefix, productId, label)}:moves-in`;
}

/** The number of Redis Cluster hash slots; a key's slot is CRC16 of its hash tag modulo this. */
export const CLUSTER_SLOTS = 16384;

/** The Redis Cluster slot of a hash tag's content (CRC16/XMODEM, as in the Redis Cluster specification). */
export function tagSlot(tag: string): number {
  let crc = 0;
  for (const byte of Buffer.from(tag, 'utf8')) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % CLUSTER_SLOTS;
}

const labelCache = new Map<string, readonly number[]>();
const FIRST_BUCKET_ONLY: readonly number[] = [0];

/**
 * The labels of a product's `buckets` stock buckets, bucket 0 first (label 0). The slot space is cut into
 * `buckets` equal ranges (the ranges `redis-cli --cluster create` gives to as many masters); bucket 0 lands in
 * whichever its tag hashes to, and each other range gets the smallest label whose tag hashes into it. So the
 * buckets sit on different slots, and on a cluster of that many masters made that way, on different masters.
 * Deterministic: every instance computes the same labels, and a hold id's label finds its keys without a lookup.
 */
export function bucketLabels(productId: number, buckets: number): readonly number[] {
  if (buckets <= 1) return FIRST_BUCKET_ONLY;
  const cacheKey = `${productId}/${buckets}`;
  const cached = labelCache.get(cacheKey);
  if (cached) return cached;
  const range = (slot: number) => Math.floor((slot * buckets) / CLUSTER_SLOTS);
  const taken = new Map<number, number>([[range(tagSlot(`p:${productId}`)), 0]]);
  for (let label = 1; taken.size < buckets; label++) {
    const r = range(tagSlot(`p:${productId}:${label}`));
    if (!taken.has(r)) taken.set(r, label);
  }
  const labels = [...taken.values()].sort((a, b) => a - b);
  labelCache.set(cacheKey, labels);
  return labels;
}

/**
 * The index (into `bucketLabels`) of a customer's or an Idempotency-Key's home bucket among `buckets`: the same
 * for every instance, every time.
 */
export function homeBucket(key: string, buckets: number): number {
  return tagSlot(key) % buckets;
}

/** The five product keys as a script's KEYS list. */
export function productScriptKeys(keys: ProductKeys): [string, string, string, string, string] {
  return [keys.inventory, keys.holdExpiries, keys.holds, keys.customerUnits, keys.endedHolds];
}

/** The five product keys and the conversion index, as the conversion scripts' KEYS list. */
export function conversionScriptKeys(keys: ProductKeys): [string, string, string, string, string, string] {
  return [...productScriptKeys(keys), keys.conversions];
}

/** string: the decision made for an Idempotency-Key on this product (lives in the product's slot). */
export function holdIdempotencyKey(prefix: string, productId: number, idempotencyKey: string, label = 0): string {
  return `${bucketTag(prefix, productId, label)}:idempotency:${idempotencyKey}`;
}

/**
 * string: the fingerprint of the request that first used an Idempotency-Key. It lives outside any product's
 * slot, so a key reused for another product is caught too. Untagged: on a Cluster the claims spread by key.
 */
export function idempotencyClaimKey(prefix: string, idempotencyKey: string): string {
  return `${prefix}idempotency:${idempotencyKey}`;
}

/**
 * Hash tags the rate-limit counters are spread over: a caller's counters always live under the same one, so each
 * count stays exact, while the callers as a whole are spread over the cluster's masters rather than all on one
 * (one `{rate}` tag would put every request's count on a single shard). On one server a batch is still one
 * script call; on a Cluster one per tag in it, pipelined per node (src/redis/request-counts.ts).
 */
export const RATE_COUNTER_TAGS = 16;

/**
 * string: requests one caller (`subject`: `a:<address>` or `c:<customer id>`) made to a limited route in the
 * current window, under the tag `{rate:<n>}` of its subject (RATE_COUNTER_TAGS).
 */
export function requestCounterKey(prefix: string, route: string, subject: string): string {
  return `${prefix}{rate:${counterTagOf(subject)}}:${route}:${subject}`;
}

/** FNV-1a of the subject, reduced to one of RATE_COUNTER_TAGS: cheap, stable, and even enough for addresses. */
function counterTagOf(subject: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < subject.length; i++) hash = Math.imul(hash ^ subject.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % RATE_COUNTER_TAGS;
}

/**
 * string: present while this Redis still has the copies the service made. A restart without persistence or a
 * FLUSHALL removes it with everything else, and the loss watcher then checks every product at once
 * (src/domain/redis-rebuild.ts); a loss of part of the data (one Cluster shard) is found product by product.
 * On a Cluster it lives on the one master its slot is on: only that master's loss is seen at once.
 */
export function copyMarkerKey(prefix: string): string {
  return `${prefix}copy-marker`;
}

/**
 * zset: product id -> when the sweeper next needs to look at it (ms, Redis clock). One key, so on a Cluster one
 * master: it is touched per sweep pass and per conversion, never per hold, so it is no hot key at these rates.
 */
export function sweepScheduleKey(prefix: string): string {
  return `${prefix}sweep-schedule`;
}

/**
 * string: wrong admin tokens one client address presented in the current window (lua/adminFailures-1.lua).
 * Untagged: spread by address on a Cluster.
 */
export function adminFailuresKey(prefix: string, address: string): string {
  return `${prefix}admin-failures:${address}`;
}
