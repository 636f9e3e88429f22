import { randomBytes } from 'node:crypto';

// `<product id>-<12 random base64url chars>`, or `<product id>.<bucket label>-<...>` for a hold in a stock
// bucket other than the product's first (src/redis/keys.ts bucketLabels); the product id as the API's are.
const HOLD_ID = /^([1-9][0-9]{0,9})(?:\.([1-9][0-9]{0,5}))?-[A-Za-z0-9_-]{12}$/;
const MAX_PRODUCT_ID = 2_147_483_647;

// Random bytes drawn 4 KiB at a time: one randomBytes call per hold cost ~8% of a hold's CPU (profiled).
const RANDOM_POOL_SIZE = 4096;
const HOLD_ID_RANDOM_BYTES = 9;
let randomPool = randomBytes(RANDOM_POOL_SIZE);
let randomOffset = 0;

/**
 * A hold id carries its product and its stock bucket, so its keys are found without a lookup:
 * `<product id>-<12 random chars>` in bucket 0, `<product id>.<label>-<12 random chars>` in another.
 */
export function newHoldId(productId: number, label = 0): string {
  if (randomOffset + HOLD_ID_RANDOM_BYTES > RANDOM_POOL_SIZE) {
    randomPool = randomBytes(RANDOM_POOL_SIZE);
    randomOffset = 0;
  }
  const random = randomPool.toString('base64url', randomOffset, randomOffset + HOLD_ID_RANDOM_BYTES);
  randomOffset += HOLD_ID_RANDOM_BYTES;
  return `${holdIdPrefix(productId, label)}${random}`;
}

/** What every hold id of one bucket starts with. */
export function holdIdPrefix(productId: number, label: number): string {
  return label === 0 ? `${productId}-` : `${productId}.${label}-`;
}

/** The product of a well-formed hold id, or null (also for a product id no product can have). */
export function productOfHold(holdId: string): number | null {
  const match = HOLD_ID.exec(holdId);
  if (!match) return null;
  const productId = Number(match[1]);
  return productId <= MAX_PRODUCT_ID ? productId : null;
}

/** The stock bucket label of a hold id (0: the product's first bucket, and for a malformed id). */
export function bucketOfHold(holdId: string): number {
  const match = HOLD_ID.exec(holdId);
  return match?.[2] === undefined ? 0 : Number(match[2]);
}
