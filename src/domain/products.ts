import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import type { Logger } from '../log.js';
import type { Config } from '../config.js';
import * as productsRepo from '../db/products.js';
import type { Database, ProductRow } from '../db/schema.js';
import { errors } from '../errors.js';
import { productKeys, productScriptKeys, sweepScheduleKey } from '../redis/keys.js';
import { ScriptCode } from '../redis/scripts.js';
import type { NewProduct, Product } from '../schemas/product.js';
import type { SoldOutCache } from './sold-out-cache.js';

const INVENTORY_FIELDS = ['name', 'price_cents', 'stock', 'held', 'sold', 'per_customer_limit'] as const;
// Due holds a stock change releases before it judges what is committed.
const INLINE_EXPIRY_LIMIT = 100;

export type Catalogue = ReturnType<typeof createCatalogue>;

/**
 * Products: Postgres holds the catalogue (name, price, total stock); Redis holds the live counters that the hold
 * scripts change. Every write goes to Postgres first, inside a transaction that commits only once Redis agreed.
 */
export function createCatalogue(deps: {
  db: Kysely<Database>;
  redis: Redis;
  config: Config;
  log: Logger;
  soldOut?: SoldOutCache;
}) {
  const { db, redis, config, log, soldOut } = deps;
  const prefix = config.REDIS_KEY_PREFIX;
  const retainMs = config.HOLD_RETAIN_SECONDS * 1000;

  /** Copies a product row into Redis unless Redis has it; returns whether Redis's stock version differs. */
  async function loadIntoRedis(row: ProductRow, sold: number): Promise<{ loaded: boolean; inSync: boolean }> {
    const keys = productKeys(prefix, row.id);
    const [loaded, version] = await redis.loadProduct(
      keys.inventory, row.stock, row.per_customer_limit ?? 0, row.price_cents, row.name, row.stock_version, sold,
    );
    // A product the sweeper has never seen is looked at on its next pass, then on its own schedule.
    await redis.zadd(sweepScheduleKey(prefix), 'NX', 0, String(row.id));
    return { loaded: loaded === 1, inSync: version === row.stock_version };
  }

  /** Reads a product's live state from Redis, loading it from Postgres first when Redis lacks it. */
  async function get(id: number): Promise<Product> {
    const fields = await redis.hmget(productKeys(prefix, id).inventory, ...INVENTORY_FIELDS);
    if (fields[0] !== null) return toProduct(id, fields);
    if (!(await ensureLoaded(id))) throw errors.productNotFound(id);
    return toProduct(id, await redis.hmget(productKeys(prefix, id).inventory, ...INVENTORY_FIELDS));
  }

  /** Loads one product into Redis if Postgres has it (after a Redis restart without persistence, say). */
  async function ensureLoaded(id: number): Promise<boolean> {
    const row = await productsRepo.findProduct(db, id);
    if (!row) return false;
    const sold = (await productsRepo.soldUnits(db, [id])).get(id) ?? 0;
    const { loaded } = await loadIntoRedis(row, sold);
    if (loaded) log.warn({ product_id: id, sold }, 'product loaded into redis on demand');
    return true;
  }

  async function list(page: { limit: number; afterId: number }): Promise<Product[]> {
    const rows = await productsRepo.listProducts(db, page);
    if (rows.length === 0) return [];
    const pipeline = redis.pipeline();
    for (const row of rows) pipeline.hmget(productKeys(prefix, row.id).inventory, ...INVENTORY_FIELDS);
    const replies = (await pipeline.exec()) ?? [];
    const products: Product[] = [];
    for (const [i, row] of rows.entries()) {
      const [err, fields] = replies[i] ?? [new Error('no reply')];
      if (err) throw err;
      const values = fields as (string | null)[];
      // Not in Redis yet: nothing can be held or sold there, so Postgres's figures are the live ones.
      products.push(values[0] === null ? fromRow(row) : toProduct(row.id, values));
    }
    return products;
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
      await ensureLoaded(id);
      const [code, , held, sold] = await redis.setStock(
        ...productScriptKeys(productKeys(prefix, id)), stock, updated.stock_version, INLINE_EXPIRY_LIMIT, retainMs,
      );
      if (code === ScriptCode.StockBelowCommitted) throw errors.stockBelowCommitted(stock, held, sold);
      if (code !== ScriptCode.Ok) throw new Error(`setStock answered ${code} for product ${id}`);
      return { ...fromRow(updated), held, sold, available_stock: Math.max(0, stock - held - sold) };
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
    for (let afterId = 0; ; ) {
      const rows = await productsRepo.listProducts(db, { limit: 500, afterId });
      if (rows.length === 0) break;
      const sold = await productsRepo.soldUnits(db, rows.map((r) => r.id));
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
      const row = await db.selectFrom('products').select('stock').where('id', '=', id).executeTakeFirstOrThrow();
      await setStock(id, row.stock);
      log.warn({ product_id: id, stock: row.stock }, 'stock re-applied from postgres');
    } catch (err) {
      log.error({ product_id: id, err }, 'stock in redis differs from postgres and could not be re-applied');
    }
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

function toProduct(id: number, fields: (string | null)[]): Product {
  const [name, price, stock, held, sold, limit] = fields;
  const units = { stock: Number(stock), held: Number(held), sold: Number(sold) };
  return {
    id,
    name: name ?? '',
    price_cents: Number(price),
    ...units,
    available_stock: Math.max(0, units.stock - units.held - units.sold),
    per_customer_limit: Number(limit) > 0 ? Number(limit) : null,
  };
}
