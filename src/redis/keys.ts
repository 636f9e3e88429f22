/**
 * Every Redis key the service uses is built here. All keys of one product share the hash tag `{p:<id>}`, so
 * each script touches a single Redis Cluster slot. The layout is documented in the README.
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

export function productKeys(prefix: string, productId: number): ProductKeys {
  const tag = productTag(prefix, productId);
  return {
    inventory: `${tag}:inventory`,
    holdExpiries: `${tag}:hold-expiries`,
    holds: `${tag}:holds`,
    customerUnits: `${tag}:customer-units`,
    endedHolds: `${tag}:ended-holds`,
    conversions: `${tag}:conversions`,
  };
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
export function holdIdempotencyKey(prefix: string, productId: number, idempotencyKey: string): string {
  return `${productTag(prefix, productId)}:idempotency:${idempotencyKey}`;
}

/**
 * string: the fingerprint of the request that first used an Idempotency-Key. It lives outside any product's
 * slot, so a key reused for another product is caught too.
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
 */
export function copyMarkerKey(prefix: string): string {
  return `${prefix}copy-marker`;
}

/** zset: product id -> when the sweeper next needs to look at it (ms, Redis clock). */
export function sweepScheduleKey(prefix: string): string {
  return `${prefix}sweep-schedule`;
}

/** string: wrong admin tokens one client address presented in the current window (lua/adminFailures-1.lua). */
export function adminFailuresKey(prefix: string, address: string): string {
  return `${prefix}admin-failures:${address}`;
}
