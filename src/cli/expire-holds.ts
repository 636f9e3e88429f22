import { releaseExpiredHolds, type ProductSweep } from '../domain/sweeper.js';
import { EXIT, parseCommand, print, table, UsageError, withStores, type Command } from './command.js';

const USAGE = `
usage: flashsale expire-holds [--json]
One sweep now of every product, as the service's sweeper makes them (src/domain/sweeper.ts), whenever its next
sweep was planned: releases the expired holds, purges records ended past their retention, hands conversion
claims past their lease to recovery, and prints what it did per product. Safe beside running instances: each
hold is released once, by whichever sweep reaches it first.
  --json   the per-product results as JSON`;

/** `flashsale expire-holds`: the sweeper's work, once, now. */
export const expireHolds: Command = {
  async run(args) {
    const parsed = parseCommand(args, USAGE, { json: { type: 'boolean', default: false } });
    if (!parsed) return EXIT.OK;
    if (parsed.positionals.length > 0) throw new UsageError(`unexpected argument: ${parsed.positionals[0]}`);
    return withStores(async (stores) => {
      const orders = await stores.orders();
      // Every product, not only those the schedule says are due: the holds of a product a run with a longer
      // HOLD_TTL_SECONDS swept last may have expired before its planned sweep.
      await stores.commands.makeEverySweepDue();
      const byProduct = new Map<number, ProductSweep>();
      // A pass yields after its time budget with products still due: run passes until none is.
      for (;;) {
        const pass = await releaseExpiredHolds(stores.commands, stores.settings, stores.log, orders.recoverClaim);
        for (const step of pass.byProduct) {
          const sum = byProduct.get(step.product_id) ?? {
            product_id: step.product_id,
            expired: 0,
            purged: 0,
            stale_claims: 0,
          };
          sum.expired += step.expired;
          sum.purged += step.purged;
          sum.stale_claims += step.stale_claims;
          byProduct.set(step.product_id, sum);
        }
        if (!pass.more) break;
      }
      const results = [...byProduct.values()].sort((a, b) => a.product_id - b.product_id);
      print(parsed.values.json, results, () =>
        results.length === 0
          ? 'nothing to release: no expired holds'
          : table(
              ['product', 'expired', 'purged', 'stale_claims'],
              results.map((r) => [r.product_id, r.expired, r.purged, r.stale_claims]),
            ),
      );
      return EXIT.OK;
    });
  },
};
