import type { Kysely } from 'kysely';
import * as productsRepo from '../db/products.js';
import type { Database, ProductRow } from '../db/schema.js';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import type { Inventory, RedisCommands } from '../redis/commands.js';
import { refusalError } from '../redis/finished-errors.js';
import type { NewProduct, Product } from '../schemas/product.js';
import { PRODUCT_LOAD_BATCH } from '../settings.js';
import type { RedisRebuilder } from './redis-rebuild.js';
import type { SoldOutCache } from './sold-out-cache.js';
import type { Rebalancer } from './rebalancer.js';
import { bucketLabels } from '../redis/keys.js';

export type Catalogue = ReturnType<typeof createCatalogue>;

/**
 * Products: Postgres holds the catalogue (name, price, total stock); Redis holds the live counters that the hold
 * scripts change. Every write goes to Postgres first, inside a transaction that commits only once Redis agreed.
 */
export function createCatalogue(deps: {
  db: Kysely<Database>;
  commands: RedisCommands;
  rebuilder: RedisRebuilder;
  rebalancer: Rebalancer;
  log: Logger;
  soldOut?: SoldOutCache;
}) {
  const { db, commands, rebuilder, rebalancer, log, soldOut } = deps;

  /** Makes sure Redis has the product's copy (rebuilt from Postgres if lost); false: no such product. */
  async function ensureLoaded(id: number): Promise<boolean> {
    const state = await rebuilder.ensure(id, 'missing in redis');
    if (state === 'absent') return false;
    await scheduleSweeps(id, (await commands.bucketRouting(id)).buckets);
    return true;
  }

  /** A product the sweeper has never seen is looked at on its next pass, then on its own schedule: each bucket. */
  async function scheduleSweeps(id: number, buckets: number): Promise<void> {
    for (const label of bucketLabels(id, buckets)) await commands.scheduleSweep(id, 0, 'new', label);
  }

  /** A product's live state from Redis, loading it from Postgres first when Redis lacks it. */
  async function get(id: number): Promise<Product> {
    let [inventory] = await commands.inventories([id]);
    if (!inventory) {
      if (!(await ensureLoaded(id))) throw errors.productNotFound(id);
      [inventory] = await commands.inventories([id]);
      if (!inventory) throw errors.unavailable('the product (Redis lost it again)');
    }
    return toProduct(id, inventory);
  }

  async function list(page: { limit: number; afterId: number }): Promise<Product[]> {
    const rows = await productsRepo.listProducts(db, page);
    if (rows.length === 0) return [];
    const inventories = await commands.inventories(rows.map((row) => row.id));
    const products: Product[] = [];
    for (const [i, row] of rows.entries()) {
      let inventory = inventories[i];
      // Missing in Redis (lost, or never loaded): rebuilt from Postgres first, never shown as if nothing sold.
      if (!inventory && (await ensureLoaded(row.id))) [inventory] = await commands.inventories([row.id]);
      if (!inventory) throw errors.rebuilding(row.id);
      products.push(toProduct(row.id, inventory));
    }
    return products;
  }

  /** `requestLog`: the logger of the request that asked, so its line carries the request's id. */
  async function create(input: NewProduct, requestLog: Logger = log): Promise<Product> {
    const row = await db.transaction().execute(async (trx) => {
      const inserted = await productsRepo.insertProduct(trx, {
        name: input.name,
        price_cents: input.price_cents,
        stock: input.stock,
        per_customer_limit: input.per_customer_limit ?? null,
        buckets: input.buckets ?? 1,
      });
      // Loaded under a first generation before the commit: a product Redis refused is not created.
      await rebuilder.ensureLocked(trx, inserted, 'created');
      await scheduleSweeps(inserted.id, inserted.buckets);
      return inserted;
    });
    requestLog.info({ product_id: row.id, stock: row.stock }, 'product created');
    return fromRow(row);
  }

  async function setStock(id: number, stock: number, requestLog: Logger = log): Promise<Product> {
    const product = await db.transaction().execute(async (trx) => {
      const current = await productsRepo.lockProduct(trx, id);
      if (!current) throw errors.productNotFound(id);
      // The ledger's count first: no order commits meanwhile (they wait for this lock), and Redis's own check
      // below cannot see sales a copy behind Postgres missed.
      const sold = await productsRepo.countedSoldUnits(trx, id);
      if (stock < sold) throw errors.stockBelowCommitted(stock, 0, sold);
      const updated = await productsRepo.updateStock(trx, id, stock);
      // A copy Redis lost is rebuilt first, under this lock (it then has the new stock already).
      await rebuilder.ensureLocked(trx, current, 'stock change on a product missing in redis');
      let change = await commands.setStock(id, stock, updated.stock_version);
      // A bucketed product's change lands in its first bucket, which may not have the units a cut needs: they are
      // moved there from the others first (a move never makes units: src/domain/rebalancer.ts), then it is tried
      // once more.
      if (change.kind === 'stockBelowCommitted' && current.buckets > 1 && stock < current.stock) {
        await rebalancer.gather(id, current.buckets, current.stock - stock);
        change = await commands.setStock(id, stock, updated.stock_version);
      }
      if (change.kind === 'stockBelowCommitted' && current.buckets > 1) {
        // The refusal reports the product's units, not those of its first bucket.
        const [inventory] = await commands.inventories([id]);
        if (inventory) change = { ...change, held: inventory.held, sold: inventory.sold };
      }
      if (change.kind !== 'stockSet' && change.kind !== 'unchanged') throw refusalError(change, { productId: id });
      if (current.buckets > 1) {
        const [inventory] = await commands.inventories([id]);
        if (!inventory) throw errors.unavailable('the product (Redis lost it again)');
        return toProduct(id, inventory);
      }
      return toProduct(id, {
        ...updated,
        held: change.held,
        sold: change.sold,
        per_customer_limit: updated.per_customer_limit ?? 0,
        generation: updated.redis_generation,
      });
    });
    soldOut?.forget(id);
    requestLog.info({ product_id: id, stock }, 'stock changed');
    return product;
  }

  /**
   * Run at start: rebuilds every product whose copy Redis lacks or holds under another generation, and
   * re-applies Postgres's stock where a change reached Redis but not Postgres (or the reverse) before a crash.
   */
  async function loadAll(): Promise<{ loaded: number; resynced: number }> {
    const { rebuilt } = await rebuilder.checkAll();
    let resynced = 0;
    for (let afterId = 0; ;) {
      const rows = await productsRepo.listProducts(db, { limit: PRODUCT_LOAD_BATCH, afterId });
      if (rows.length === 0) break;
      const copies = await commands.inventories(rows.map((r) => r.id));
      for (const [i, row] of rows.entries()) {
        // Also keeps every product on the sweeper's schedule, whatever happened to it.
        await scheduleSweeps(row.id, row.buckets);
        if (copies[i] && copies[i]!.stock_version !== row.stock_version) {
          await resync(row.id);
          resynced++;
        }
      }
      afterId = rows[rows.length - 1]!.id;
    }
    if (rebuilt || resynced) log.info({ loaded: rebuilt, resynced }, 'products loaded into redis');
    return { loaded: rebuilt, resynced };
  }

  async function resync(id: number): Promise<void> {
    try {
      const row = await productsRepo.findProduct(db, id);
      if (!row) return;
      await setStock(id, row.stock);
      log.warn({ product_id: id, stock: row.stock }, 'stock re-applied from postgres');
    } catch (err) {
      log.error({ product_id: id, err }, 'stock in redis differs from postgres and could not be re-applied');
    }
  }

  /**
   * A product as the API shows it. Available stock is shown as it is, never clamped: a negative value means
   * the invariant broke, and hiding it as 0 would hide the bug.
   */
  function toProduct(id: number, inventory: Inventory): Product {
    const available = inventory.stock - inventory.held - inventory.sold;
    if (available < 0)
      log.error({ product_id: id, ...inventory }, 'invariant broken: more units held and sold than stock');
    return {
      id,
      name: inventory.name,
      price_cents: inventory.price_cents,
      stock: inventory.stock,
      held: inventory.held,
      sold: inventory.sold,
      available_stock: available,
      per_customer_limit: inventory.per_customer_limit > 0 ? inventory.per_customer_limit : null,
      buckets: inventory.buckets,
    };
  }

  return { get, list, create, setStock, loadAll, ensureLoaded };
}

function fromRow(row: ProductRow): Product {
  return {
    id: row.id,
    name: row.name,
    price_cents: row.price_cents,
    stock: row.stock,
    available_stock: row.stock,
    held: 0,
    sold: 0,
    per_customer_limit: row.per_customer_limit,
    buckets: row.buckets,
  };
}
