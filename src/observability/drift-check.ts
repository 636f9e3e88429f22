import type { RedisClient } from '../redis/connection.js';
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
 *
 * The comparison reads every hold record of a product (150,000 records took ~0.5 s of CPU), so a pass leaves out
 * products with more than MAX_HOLD_RECORDS of them (a hot product of a running sale, until its ended holds are
 * purged) and says how many it left out: those are for `flashsale reconcile --check`.
 */
export const MAX_HOLD_RECORDS = 20_000;

export function createDriftCheck(deps: {
  db: Kysely<Database>;
  redis: RedisClient;
  prefix: string;
  /** Products compared a pass, besides those found drifting in the last one. */
  sample: number;
  /** Hold records of each product (src/redis/commands.ts holdRecordCounts). */
  holdRecordCounts: (productIds: number[]) => Promise<number[]>;
  /** Told, after each pass, how many products drifted in it and in the one before, and how many it left out. */
  report: (driftingProducts: number, uncheckedProducts: number) => void;
}) {
  const { db, redis, prefix, sample, holdRecordCounts, report } = deps;
  let cursor = 0;
  let suspects = new Set<number>();

  /** One pass of the check. */
  return async function checkSample(): Promise<{ checked: number; drifting: number; more: false }> {
    const page = await productIdsAfter(db, cursor, sample);
    cursor = page.length < sample ? 0 : page[page.length - 1]!;
    const sampled = [...new Set([...suspects, ...page])];
    const records = sampled.length === 0 ? [] : await holdRecordCounts(sampled);
    const productIds = sampled.filter((_id, i) => records[i]! <= MAX_HOLD_RECORDS);
    const found =
      productIds.length === 0
        ? []
        : (await reconcile({ db, redis, prefix, productIds })).drifts.map((d) => d.product_id);
    const drifting = new Set(found);
    const confirmed = [...drifting].filter((id) => suspects.has(id)).length;
    suspects = drifting;
    report(confirmed, sampled.length - productIds.length);
    return { checked: productIds.length, drifting: confirmed, more: false };
  };
}
