import type { Kysely } from 'kysely';
import * as productsRepo from '../db/products.js';
import type { Database, ProductRow } from '../db/schema.js';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import type { Inventory, RedisCommands } from '../redis/commands.js';
import { refusalError } from '../redis/finished-errors.js';
import type { NewProduct, Product } from '../schemas/product.js';
import { PRODUCT_LOAD_BATCH } from '../settings.js';
import type { SoldOutCache } from './sold-out-cache.js';

export type Catalogue = ReturnType<typeof createCatalogue>;

/**
 * Products: Postgres holds the catalogue (name, price, total stock); Redis holds the live counters that the hold
 * scripts change. Every write goes to Postgres first, inside a transaction that commits only once Redis agreed.
 */
export function createCatalogue(deps: {
  db: Kysely<Database>;
  commands: RedisCommands;
  log: Logger;
  soldOut?: SoldOutCache;
}) {
  const { db, commands, log, soldOut } = deps;

  /** Copies a product row into Redis unless Redis has it; `inSync`: Redis has Postgres's stock version. */
  async function loadIntoRedis(row: ProductRow, sold: number): Promise<{ loaded: boolean; inSync: boolean }> {
    const { loaded, version } = await commands.loadProduct({ ...row, sold });
    // A product the sweeper has never seen is looked at on its next pass, then on its own schedule.
    await commands.scheduleSweep(row.id, 0, 'new');
    return { loaded, inSync: version === row.stock_version };
  }

  /** Loads one product into Redis if Postgres has it (after a Redis restart without persistence, say). */
  async function ensureLoaded(id: number, trx: Kysely<Database> = db): Promise<boolean> {
    const row = await productsRepo.findProduct(trx, id);
    if (!row) return false;
    const sold = (await productsRepo.soldUnits(trx, [id])).get(id) ?? 0;
    const { loaded } = await loadIntoRedis(row, sold);
    if (loaded) log.warn({ product_id: id, sold }, 'product loaded into redis on demand');
    return true;
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
    // Not in Redis yet: nothing can be held or sold there, so Postgres's figures are the live ones.
    return rows.map((row, i) => {
      const inventory = inventories[i];
      return inventory ? toProduct(row.id, inventory) : fromRow(row);
    });
  }

  async function create(input: NewProduct): Promise<Product> {
    const row = await db.transaction().execute(async (trx) => {
      const inserted = await productsRepo.insertProduct(trx, {
        name: input.name,
        price_cents: input.price_cents,
        stock: input.stock,
        per_customer_limit: input.per_customer_limit ?? null,
      });
      await loadIntoRedis(inserted, 0);
      return inserted;
    });
    log.info({ product_id: row.id, stock: row.stock }, 'product created');
    return fromRow(row);
  }

  async function setStock(id: number, stock: number): Promise<Product> {
    const product = await db.transaction().execute(async (trx) => {
      const current = await productsRepo.lockProduct(trx, id);
      if (!current) throw errors.productNotFound(id);
      const updated = await productsRepo.updateStock(trx, id, stock);
      // Inside the transaction: one connection for the whole change.
      await ensureLoaded(id, trx);
      const change = await commands.setStock(id, stock, updated.stock_version);
      if (change.kind !== 'stockSet' && change.kind !== 'unchanged') throw refusalError(change, { productId: id });
      return toProduct(id, {
        ...updated,
        held: change.held,
        sold: change.sold,
        per_customer_limit: updated.per_customer_limit ?? 0,
      });
    });
    soldOut?.forget(id);
    log.info({ product_id: id, stock }, 'stock changed');
    return product;
  }

  /**
   * Run at start: loads every product Redis lacks, and re-applies Postgres's stock where a change reached Redis
   * but not Postgres (or the reverse) before a crash.
   */
  async function loadAll(): Promise<{ loaded: number; resynced: number }> {
    let loaded = 0;
    let resynced = 0;
    for (let afterId = 0; ;) {
      const rows = await productsRepo.listProducts(db, { limit: PRODUCT_LOAD_BATCH, afterId });
      if (rows.length === 0) break;
      const sold = await productsRepo.soldUnits(
        db,
        rows.map((r) => r.id),
      );
      for (const row of rows) {
        const result = await loadIntoRedis(row, sold.get(row.id) ?? 0);
        if (result.loaded) loaded++;
        else if (!result.inSync) {
          await resync(row.id);
          resynced++;
        }
      }
      afterId = rows[rows.length - 1]!.id;
    }
    // Also keeps every product on the sweeper's schedule, whatever happened to it.
    if (loaded || resynced) log.info({ loaded, resynced }, 'products loaded into redis');
    return { loaded, resynced };
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
  };
}
