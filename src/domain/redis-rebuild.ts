import type { Kysely, Transaction } from 'kysely';
import * as productsRepo from '../db/products.js';
import type { Database, ProductRow } from '../db/schema.js';
import type { Logger } from '../log.js';
import { noMetrics, type MetricsRecorder } from '../observability/metrics.js';
import type { BucketRebuild, RedisCommands } from '../redis/commands.js';
import { bucketLabels } from '../redis/keys.js';
import type { SalesLedger } from '../db/products.js';
import { bucketOfHold } from './hold-ids.js';
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

// Rebuilds one watcher pass runs at once (each holds a Postgres connection for a few statements).
const PARALLEL_REBUILDS = 8;

export function createRedisRebuilder(deps: {
  db: Kysely<Database>;
  commands: RedisCommands;
  log: Logger;
  events?: MetricsRecorder;
}) {
  const { db, commands, log, events = noMetrics } = deps;
  // Rebuilds in progress in this instance, one per product: what /readyz reports, and what callers join.
  const inProgress = new Map<number, Promise<CopyState>>();

  /**
   * Makes sure Redis has this product's copy under Postgres's generation, rebuilding it when it does not.
   * `absent`: no such product. Concurrent calls for one product share one rebuild; a caller that joined one
   * looks again afterwards, since it may have read the copy just before Redis lost it again (two losses in a
   * row), and checks afresh if the copy is missing.
   */
  function ensure(productId: number, reason: string): Promise<CopyState> {
    const running = inProgress.get(productId);
    if (!running) return start(productId, reason);
    return running.then(async (state) => {
      if (state === 'absent') return state;
      const [copy] = await commands.inventories([productId]);
      return copy ? state : ensure(productId, reason);
    });
  }

  function start(productId: number, reason: string, distrusted = false): Promise<CopyState> {
    const running = rebuild(productId, reason, distrusted).finally(() => inProgress.delete(productId));
    inProgress.set(productId, running);
    return running;
  }

  /**
   * Rebuilds the product's copy whatever it looks like: Postgres proved it wrong (it granted a hold the ledger
   * has no units for, which a copy that is only behind in its holds never does). Joins a rebuild in progress.
   */
  function distrust(productId: number, reason: string): Promise<CopyState> {
    return inProgress.get(productId) ?? start(productId, reason, true);
  }

  function rebuild(productId: number, reason: string, distrusted: boolean): Promise<CopyState> {
    const rebuilding = db.transaction().execute(async (trx) => {
      // The row lock fences the rebuild from stock changes, other rebuilds and order inserts (which take the row
      // FOR KEY SHARE and check the generation): an order either committed before, and is counted below, or waits
      // and then finds the generation changed.
      const row = await productsRepo.lockProduct(trx, productId);
      if (!row) return 'absent';
      return ensureLocked(trx, row, reason, distrusted);
    });
    // A rebuild that fails (a store away) is tried again by the next caller or watcher pass.
    rebuilding.catch(() => events.redisRebuild('failed'));
    return rebuilding;
  }

  /**
   * `ensure` for a caller that holds the product's row lock in `trx` (creating it, changing its stock): the copy
   * is rebuilt under that lock, from `row` as the transaction sees it.
   */
  async function ensureLocked(
    trx: Transaction<Database>,
    row: ProductRow,
    reason: string,
    distrusted = false,
  ): Promise<CopyState> {
    const productId = row.id;
    const [copy] = await commands.inventories([productId]);
    const trusted = copy && !distrusted && copy.generation === row.redis_generation;
    if (trusted && !(await missedSales(trx, productId, copy))) {
      return 'present';
    }
    const generation = await productsRepo.nextRedisGeneration(trx, productId);
    const ledger = await productsRepo.salesLedger(trx, productId);
    const returned = await productsRepo.markReturnedByRebuild(trx, productId);
    // A bucketed product is rebuilt whole, every bucket under the new generation, even when only one shard lost
    // its bucket: the shares are counted afresh from the ledger, and no hold or move of the old copy counts.
    let result = { droppedRecords: 0 };
    for (const { bucket, share } of bucketLedgers(row, ledger)) {
      const rebuilt = await commands.rebuildProduct(row, generation, share, bucket);
      result = { droppedRecords: result.droppedRecords + rebuilt.droppedRecords };
      // The sweep schedule is a key of its own, lost with the copy in a FLUSHALL or an empty restart: without this
      // a product rebuilt by the loss watcher (before any hold asks for it) would never be swept again, and its
      // holds would stay held past their expiry until a later hold on it released them.
      await commands.scheduleSweep(productId, 0, 'new', bucket.label);
    }
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
      events.redisDataLoss();
      events.redisRebuild('rebuilt');
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
   * A copy of the right generation that holds and sold fewer units than Postgres has in live orders: a replica
   * promoted before it got the master's last sales (replication is asynchronous; the generation only changes on a
   * rebuild). Every unit of a live order is in the copy's `held` (its conversion not finished in Redis yet) or
   * `sold`, so a healthy copy never has fewer. Read after the copy and under the row lock, which no order insert
   * passes: a cancellation meanwhile only lowers Postgres's figure, so a healthy copy is never taken for a stale
   * one. (A replica that missed only holds is not stale in this sense: those holds are lost, their units on sale.)
   */
  async function missedSales(
    trx: Transaction<Database>,
    productId: number,
    copy: { held: number; sold: number },
  ): Promise<boolean> {
    return copy.held + copy.sold < (await productsRepo.liveUnits(trx, productId));
  }

  /** Compares one page of products (ids after `afterId`) with Redis and rebuilds those lost. */
  async function checkPage(afterId: number): Promise<{ checked: number; rebuilt: number; lastId: number }> {
    const rows = await productsRepo.listGenerations(db, { limit: PRODUCT_LOAD_BATCH, afterId });
    if (rows.length === 0) return { checked: 0, rebuilt: 0, lastId: 0 };
    const copies = await commands.inventories(rows.map((r) => r.id));
    const lost = rows.flatMap((row, i) => {
      const copy = copies[i];
      if (!copy) return [{ id: row.id, reason: 'missing in redis' }];
      if (copy.generation !== row.redis_generation) return [{ id: row.id, reason: 'stale generation' }];
      // Read before the copy and without the lock, so only a suspicion: the rebuild checks again under the lock.
      if (copy.held + copy.sold < row.live_units) return [{ id: row.id, reason: 'missed sales' }];
      return [];
    });
    let rebuilt = 0;
    // A few at a time: a whole catalogue lost at once is rebuilt in parallel, within the pool's size.
    for (let i = 0; i < lost.length; i += PARALLEL_REBUILDS) {
      const states = await Promise.all(
        lost.slice(i, i + PARALLEL_REBUILDS).map(({ id, reason }) => ensure(id, reason)),
      );
      rebuilt += states.filter((state) => state === 'rebuilt').length;
    }
    return { checked: rows.length, rebuilt, lastId: rows[rows.length - 1]!.id };
  }

  /** Compares every product's generation in Postgres with its copy in Redis and rebuilds those lost. */
  async function checkAll(): Promise<{ checked: number; rebuilt: number; more: boolean }> {
    await commands.markCopies();
    let checked = 0;
    let rebuilt = 0;
    for (let afterId = 0; ;) {
      const page = await checkPage(afterId);
      if (page.checked === 0) break;
      checked += page.checked;
      rebuilt += page.rebuilt;
      afterId = page.lastId;
    }
    return { checked, rebuilt, more: false };
  }

  // Where the watcher's round of the catalogue stands.
  let cursor = 0;

  /**
   * One pass of the loss watcher. A missing copy marker (Redis restarted empty, FLUSHALL) checks the whole
   * catalogue at once; otherwise one page is checked, the next one on the next pass, so a loss of part of the data
   * (a shard, a stale replica) is found within a round whatever the catalogue's size, at a page's cost a pass.
   */
  async function watch(): Promise<{ checked: number; rebuilt: number; more: boolean }> {
    if (await commands.markCopies()) {
      log.warn('redis copy marker missing: checking every product against postgres');
      cursor = 0;
      return checkAll();
    }
    const page = await checkPage(cursor);
    cursor = page.lastId;
    return { checked: page.checked, rebuilt: page.rebuilt, more: false };
  }

  return {
    ensure,
    distrust,
    ensureLocked,
    checkAll,
    watch,
    /** Products being rebuilt right now in this instance. */
    rebuilding: (): number[] => [...inProgress.keys()],
    isRebuilding: (productId: number): boolean => inProgress.has(productId),
  };
}

/**
 * A product's ledger cut into its stock buckets: each bucket gets the live orders of its own holds (a hold id
 * names its bucket) and a share of the stock that covers them, the units still for sale spread evenly.
 */
export function bucketLedgers(
  row: Pick<ProductRow, 'id' | 'stock' | 'buckets'>,
  ledger: SalesLedger,
): { bucket: BucketRebuild; share: SalesLedger }[] {
  const labels = bucketLabels(row.id, row.buckets);
  if (labels.length === 1) return [{ bucket: { label: 0, buckets: 1, share: row.stock }, share: ledger }];
  const shares = new Map(
    labels.map((label) => [
      label,
      { sold: 0, units: new Map<string, number>(), holds: [] as SalesLedger['convertedHolds'] },
    ]),
  );
  for (const hold of ledger.convertedHolds) {
    // An order of a hold whose label is not one of the product's (none is made so) counts in the first bucket.
    const share = shares.get(bucketOfHold(hold.hold_id)) ?? shares.get(0)!;
    share.sold += hold.qty;
    share.holds.push(hold);
    if (hold.customer_id !== null)
      share.units.set(hold.customer_id, (share.units.get(hold.customer_id) ?? 0) + hold.qty);
  }
  const forSale = Math.max(0, row.stock - ledger.sold);
  return labels.map((label, i) => {
    const share = shares.get(label)!;
    const spread = Math.floor(forSale / labels.length) + (i < forSale % labels.length ? 1 : 0);
    return {
      bucket: { label, buckets: labels.length, share: share.sold + spread },
      share: {
        sold: share.sold,
        customerUnits: [...share.units].map(([customer_id, units]) => ({ customer_id, units })),
        convertedHolds: share.holds,
      },
    };
  });
}
