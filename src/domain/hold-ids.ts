import { randomBytes } from 'node:crypto';

// `<product id>-<12 random base64url chars>`; the product id as the API's product ids are (src/schemas).
const HOLD_ID = /^([1-9][0-9]{0,9})-[A-Za-z0-9_-]{12}$/;
const MAX_PRODUCT_ID = 2_147_483_647;

// Random bytes drawn 4 KiB at a time: one randomBytes call per hold cost ~8% of a hold's CPU (profiled).
const RANDOM_POOL_SIZE = 4096;
const HOLD_ID_RANDOM_BYTES = 9;
let randomPool = randomBytes(RANDOM_POOL_SIZE);
let randomOffset = 0;

/** A hold id carries its product, so its keys are found without a lookup: `<product id>-<12 random chars>`. */
export function newHoldId(productId: number): string {
  if (randomOffset + HOLD_ID_RANDOM_BYTES > RANDOM_POOL_SIZE) {
    randomPool = randomBytes(RANDOM_POOL_SIZE);
    randomOffset = 0;
  }
  const random = randomPool.toString('base64url', randomOffset, randomOffset + HOLD_ID_RANDOM_BYTES);
  randomOffset += HOLD_ID_RANDOM_BYTES;
  return `${productId}-${random}`;
}

/** The product of a well-formed hold id, or null (also for a product id no product can have). */
export function productOfHold(holdId: string): number | null {
  const match = HOLD_ID.exec(holdId);
  if (!match) return null;
  const productId = Number(match[1]);
  return productId <= MAX_PRODUCT_ID ? productId : null;
}
