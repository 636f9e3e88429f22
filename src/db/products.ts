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

/** Units sold per product: the items of orders whose units count as sold (SOLD_ORDER_STATUSES). */
export async function soldUnits(db: Kysely<Database>, productIds: number[]): Promise<Map<number, number>> {
  if (productIds.length === 0) return new Map();
  const rows = await db
    .selectFrom('order_items')
    .innerJoin('orders', 'orders.id', 'order_items.order_id')
    .select(['order_items.product_id', sql<number>`sum(order_items.qty)::int`.as('units')])
    .where('order_items.product_id', 'in', productIds)
    .where('orders.status', 'in', SOLD_ORDER_STATUSES)
    .groupBy('order_items.product_id')
    .execute();
  return new Map(rows.map((r) => [r.product_id, r.units]));
}
