import type { Kysely, Transaction } from 'kysely';
import * as productsRepo from '../db/products.js';
import type { Database, ProductRow } from '../db/schema.js';
import type { Logger } from '../log.js';
import type { RedisCommands } from '../redis/commands.js';
import { PRODUCT_LOAD_BATCH } from '../settings.js';

/**
 * Redis is a fast, fenced copy of part of the ledger (docs/redis-loss.md). Each product's copy carries a
 * generation, a number Postgres hands out under the product's row lock and remembers in
 * `products.redis_generation`. A copy that is missing while Postgres says it was made (generation > 0), or that
 * carries another generation (a replica that missed writes), was lost: it is rebuilt from Postgres under a new
 * generation, and every order insert must match the generation its hold was made in (src/db/orders.ts), so no
 * conversion from the old copy can commit after the rebuild counted the sold units.
 */
export type RedisRebuilder = ReturnType<typeof createRedisRebuilder>;

export type CopyState = 'present' | 'rebuilt' | 'absent';

export function createRedisRebuilder(deps: { db: Kysely<Database>; commands: RedisCommands; log: Logger }) {
  const { db, commands, log } = deps;
  // Rebuilds in progress in this instance, one per product: what /readyz reports, and what callers join.
  const inProgress = new Map<number, Promise<CopyState>>();

  /**
   * Makes sure Redis has this product's copy under Postgres's generation, rebuilding it when it does not.
   * `absent`: no such product. Concurrent calls for one product share one rebuild.
   */
  function ensure(productId: number, reason: string): Promise<CopyState> {
    let running = inProgress.get(productId);
    if (!running) {
      running = rebuild(productId, reason).finally(() => inProgress.delete(productId));
      inProgress.set(productId, running);
    }
    return running;
  }

  function rebuild(productId: number, reason: string): Promise<CopyState> {
    return db.transaction().execute(async (trx) => {
      // The row lock fences the rebuild from stock changes, other rebuilds and order inserts (which take the row
      // FOR KEY SHARE and check the generation): an order either committed before, and is counted below, or waits
      // and then finds the generation changed.
      const row = await productsRepo.lockProduct(trx, productId);
      if (!row) return 'absent';
      return ensureLocked(trx, row, reason);
    });
  }

  /**
   * `ensure` for a caller that holds the product's row lock in `trx` (creating it, changing its stock): the copy
   * is rebuilt under that lock, from `row` as the transaction sees it.
   */
  async function ensureLocked(trx: Transaction<Database>, row: ProductRow, reason: string): Promise<CopyState> {
    const productId = row.id;
    const [copy] = await commands.inventories([productId]);
    if (copy && copy.generation === row.redis_generation) return 'present';
    const generation = await productsRepo.nextRedisGeneration(trx, productId);
    const ledger = await productsRepo.salesLedger(trx, productId);
    const returned = await productsRepo.markReturnedByRebuild(trx, productId);
    const result = await commands.rebuildProduct(row, generation, ledger);
    const figures = {
      product_id: productId,
      reason,
      generation,
      previous_generation: row.redis_generation,
      sold: ledger.sold,
      customers: ledger.customerUnits.length,
      converted_holds: ledger.convertedHolds.length,
      cancelled_orders_returned: returned,
    };
    if (row.redis_generation === 0 && !copy) {
      log.debug(figures, 'product loaded into redis');
    } else {
      // What was lost: the holds of the old copy (Redis-only, gone with it); their units are on sale again.
      log.error(
        {
          ...figures,
          lost_copy: copy ? 'stale' : 'missing',
          held_units_lost: copy ? copy.held : 'unknown (the copy is gone)',
          hold_records_dropped: result.droppedRecords,
        },
        'redis lost a product: rebuilt from postgres; its active holds are gone',
      );
    }
    return 'rebuilt';
  }

  /**
   * One pass of the loss watcher: compares every product's generation in Postgres with its copy in Redis and
   * rebuilds those lost, so a loss is found within a pass whether or not anyone asks for the product.
   */
  async function checkAll(): Promise<{ checked: number; rebuilt: number; more: boolean }> {
    let checked = 0;
    let rebuilt = 0;
    for (let afterId = 0; ;) {
      const rows = await productsRepo.listGenerations(db, { limit: PRODUCT_LOAD_BATCH, afterId });
      if (rows.length === 0) break;
      const copies = await commands.inventories(rows.map((r) => r.id));
      for (const [i, row] of rows.entries()) {
        const copy = copies[i];
        if (!copy || copy.generation !== row.redis_generation) {
          if ((await ensure(row.id, copy ? 'stale generation' : 'missing in redis')) === 'rebuilt') rebuilt++;
        }
      }
      checked += rows.length;
      afterId = rows[rows.length - 1]!.id;
    }
    return { checked, rebuilt, more: false };
  }

  return {
    ensure,
    ensureLocked,
    checkAll,
    /** Products being rebuilt right now in this instance. */
    rebuilding: (): number[] => [...inProgress.keys()],
    isRebuilding: (productId: number): boolean => inProgress.has(productId),
  };
}
