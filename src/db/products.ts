import { sql, type Kysely, type Transaction } from 'kysely';
import { SOLD_ORDER_STATUSES, type Database, type NewProductRow, type ProductRow } from './schema.js';

/**
 * Repository of products. Each function takes a `Kysely<Database>` first: the app's handle or a transaction
 * (which is one), so the caller owns the transaction. Those that lock the row, or must run under that lock, take
 * a Transaction: a lock outside one would end with its statement.
 */

export async function insertProduct(db: Kysely<Database>, product: NewProductRow): Promise<ProductRow> {
  return db.insertInto('products').values(product).returningAll().executeTakeFirstOrThrow();
}

export async function findProduct(db: Kysely<Database>, id: number): Promise<ProductRow | undefined> {
  return db.selectFrom('products').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The product row locked until the transaction ends, so stock changes to one product run one at a time. */
export async function lockProduct(trx: Transaction<Database>, id: number): Promise<ProductRow | undefined> {
  return trx.selectFrom('products').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}

/** Sets the stock under a new version, never handed out before (a sequence does not roll back). */
export async function updateStock(trx: Transaction<Database>, id: number, stock: number): Promise<ProductRow> {
  return trx
    .updateTable('products')
    .set({ stock, stock_version: sql<number>`nextval('stock_version_seq')`, updated_at: new Date() })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** One page of products in id order, after `afterId`. */
export async function listProducts(
  db: Kysely<Database>,
  page: { limit: number; afterId: number },
): Promise<ProductRow[]> {
  return db.selectFrom('products').selectAll().where('id', '>', page.afterId).orderBy('id').limit(page.limit).execute();
}

/** The ledger's count of a product's units in live orders (product_sales, kept by triggers). */
export async function countedSoldUnits(db: Kysely<Database>, id: number): Promise<number> {
  const row = await db.selectFrom('product_sales').select('sold_units').where('product_id', '=', id).executeTakeFirst();
  return row?.sold_units ?? 0;
}

/** A new generation for the product's copy in Redis, taken under its row lock (never handed out before). */
export async function nextRedisGeneration(trx: Transaction<Database>, id: number): Promise<number> {
  const row = await trx
    .updateTable('products')
    .set({ redis_generation: sql<number>`nextval('redis_generation_seq')` })
    .where('id', '=', id)
    .returning('redis_generation')
    .executeTakeFirstOrThrow();
  return row.redis_generation;
}

/** What Postgres knows of a product's sales: everything a rebuild of its Redis copy needs. */
export interface SalesLedger {
  sold: number;
  /** Units in live orders per customer (the per-customer limit counts them). */
  customerUnits: { customer_id: string; units: number }[];
  /** The holds of live orders: a later cancellation returns their units through these records. */
  convertedHolds: {
    hold_id: string;
    order_id: number;
    customer_id: string | null;
    qty: number;
    unit_price_cents: number;
  }[];
}

/**
 * Live orders of a product (SOLD_ORDER_STATUSES), read under its row lock so no order commits in between, and
 * locked FOR SHARE until the caller commits: a cancellation (which takes the order's row) then waits for the
 * rebuild and returns its units from the rebuilt copy. Unlocked, an order cancelled between this read and the
 * copy's write had its units counted as sold in the new copy while its return found no copy: lost for sale.
 */
export async function salesLedger(trx: Transaction<Database>, productId: number): Promise<SalesLedger> {
  const rows = await trx
    .selectFrom('order_items')
    .innerJoin('orders', 'orders.id', 'order_items.order_id')
    .select([
      'orders.id as order_id',
      'orders.hold_id',
      'orders.customer_id',
      'order_items.qty',
      'order_items.unit_price_cents',
    ])
    .where('order_items.product_id', '=', productId)
    .where('orders.status', 'in', SOLD_ORDER_STATUSES)
    // In id order, as a batch of payment events locks its orders (recordPaymentEvents): neither waits on the other
    // while holding an order the other waits for.
    .orderBy('orders.id')
    .forShare('orders')
    .execute();
  const perCustomer = new Map<string, number>();
  let sold = 0;
  for (const row of rows) {
    sold += row.qty;
    if (row.customer_id !== null) perCustomer.set(row.customer_id, (perCustomer.get(row.customer_id) ?? 0) + row.qty);
  }
  return {
    sold,
    customerUnits: [...perCustomer].map(([customer_id, units]) => ({ customer_id, units })),
    convertedHolds: rows,
  };
}

/**
 * Cancelled orders of a product whose units a crash left to return: a rebuild counts only live orders as sold,
 * so their units are back on sale by the rebuild itself.
 */
export async function markReturnedByRebuild(trx: Transaction<Database>, productId: number): Promise<number> {
  const result = await sql`
    UPDATE orders SET units_released_at = now()
    WHERE status IN ('cancelled', 'refund_required') AND units_released_at IS NULL
      AND id IN (SELECT order_id FROM order_items WHERE product_id = ${productId})`.execute(trx);
  return Number(result.numAffectedRows ?? 0);
}

/**
 * Every product's id, Redis generation and units in live orders, a page at a time: what the loss watcher compares
 * with Redis.
 */
export async function listGenerations(
  db: Kysely<Database>,
  page: { limit: number; afterId: number },
): Promise<{ id: number; redis_generation: number; live_units: number }[]> {
  const rows = await db
    .selectFrom('products')
    .select((eb) => [
      'products.id',
      'products.redis_generation',
      eb
        .selectFrom('order_items')
        .innerJoin('orders', 'orders.id', 'order_items.order_id')
        .select(sql<string>`coalesce(sum(order_items.qty), 0)`.as('units'))
        .whereRef('order_items.product_id', '=', 'products.id')
        .where('orders.status', 'in', SOLD_ORDER_STATUSES)
        .as('live_units'),
    ])
    .where('products.id', '>', page.afterId)
    .orderBy('products.id')
    .limit(page.limit)
    .execute();
  return rows.map((row) => ({
    id: row.id,
    redis_generation: row.redis_generation,
    live_units: Number(row.live_units),
  }));
}

/** Units in a product's live orders (SOLD_ORDER_STATUSES). */
export async function liveUnits(db: Kysely<Database>, productId: number): Promise<number> {
  const row = await db
    .selectFrom('order_items')
    .innerJoin('orders', 'orders.id', 'order_items.order_id')
    .select(sql<string>`coalesce(sum(order_items.qty), 0)`.as('units'))
    .where('order_items.product_id', '=', productId)
    .where('orders.status', 'in', SOLD_ORDER_STATUSES)
    .executeTakeFirstOrThrow();
  return Number(row.units);
}
