import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import { productIdsAfter } from '../db/reconcile.js';
import type { Database } from '../db/schema.js';
import { reconcile } from '../domain/reconcile.js';

/**
 * The sampled check behind flashsale_invariant_drift: each pass compares a few products' Redis figures with
 * Postgres, with the reconciliation's own rules (src/domain/reconcile.ts `reconcile`, read only), walking the
 * catalogue in id order a sample at a time. The reads are not one snapshot, so an order between the stores can
 * look like drift once; a product counts only when two checks in a row find it drifting: one that drifts is
 * checked again in the next pass, ahead of the sample, and counted then if it still drifts.
 */
export function createDriftCheck(deps: {
  db: Kysely<Database>;
  redis: Redis;
  prefix: string;
  /** Products compared a pass, besides those found drifting in the last one. */
  sample: number;
  /** Told, after each pass, how many products drifted in it and in the one before. */
  report: (driftingProducts: number) => void;
}) {
  const { db, redis, prefix, sample, report } = deps;
  let cursor = 0;
  let suspects = new Set<number>();

  /** One pass of the check. */
  return async function checkSample(): Promise<{ checked: number; drifting: number; more: false }> {
    const page = await productIdsAfter(db, cursor, sample);
    cursor = page.length < sample ? 0 : page[page.length - 1]!;
    const productIds = [...new Set([...suspects, ...page])];
    const found =
      productIds.length === 0
        ? []
        : (await reconcile({ db, redis, prefix, productIds })).drifts.map((d) => d.product_id);
    const drifting = new Set(found);
    const confirmed = [...drifting].filter((id) => suspects.has(id)).length;
    suspects = drifting;
    report(confirmed);
    return { checked: productIds.length, drifting: confirmed, more: false };
  };
}
