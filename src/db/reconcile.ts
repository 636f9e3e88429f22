import { sql, type Kysely } from 'kysely';
import { RETURNED_ORDER_STATUSES, SOLD_ORDER_STATUSES, type Database, type OrderStatus } from './schema.js';

/** What Postgres says one product's Redis state must be: the reconciliation's expected values. */
export interface ProductLedger {
  stock: number;
  stock_version: number;
  per_customer_limit: number | null;
  /** Units of the product's orders whose units count as sold (SOLD_ORDER_STATUSES). */
  liveUnits: number;
  /** The ledger's own count of them (product_sales, kept by triggers): equal to liveUnits unless it drifted. */
  countedUnits: number;
  /** Those units per customer (orders without a customer are left out: only limited products count them). */
  liveUnitsByCustomer: Map<string, number>;
  /**
   * The orders whose units may be between the stores: those of the holds asked about (the holds Redis has as
   * converting), and every cancelled order whose units are not returned yet. By hold id.
   */
  ordersInFlight: Map<string, { status: OrderStatus; live: boolean; qty: number }>;
}

const LIVE = new Set<OrderStatus>(SOLD_ORDER_STATUSES);

/** Product ids in id order, after `afterId`, at most `limit`. */
export async function productIdsAfter(db: Kysely<Database>, afterId: number, limit: number): Promise<number[]> {
  const rows = await db
    .selectFrom('products')
    .select('id')
    .where('id', '>', afterId)
    .orderBy('id')
    .limit(limit)
    .execute();
  return rows.map((row) => row.id);
}

/**
 * The ledgers of some products, by id; a product Postgres does not have is absent. `convertingHoldIds`: the
 * holds Redis has under conversion, whose orders (if committed) are looked up. Three statements for any number
 * of products.
 */
export async function productLedgers(
  db: Kysely<Database>,
  productIds: readonly number[],
  convertingHoldIds: readonly string[],
): Promise<Map<number, ProductLedger>> {
  const ledgers = new Map<number, ProductLedger>();
  if (productIds.length === 0) return ledgers;
  const ids = [...productIds];
  const [products, byCustomer, inFlight] = await Promise.all([
    db
      .selectFrom('products')
      .leftJoin('product_sales', 'product_sales.product_id', 'products.id')
      .select(['id', 'stock', 'stock_version', 'per_customer_limit', 'product_sales.sold_units'])
      .where('id', 'in', ids)
      .execute(),
    db
      .selectFrom('order_items')
      .innerJoin('orders', 'orders.id', 'order_items.order_id')
      .select(['order_items.product_id', 'orders.customer_id', sql<number>`sum(order_items.qty)::int`.as('units')])
      .where('order_items.product_id', 'in', ids)
      .where('orders.status', 'in', SOLD_ORDER_STATUSES)
      .groupBy(['order_items.product_id', 'orders.customer_id'])
      .execute(),
    db
      .selectFrom('order_items')
      .innerJoin('orders', 'orders.id', 'order_items.order_id')
      .select(['order_items.product_id', 'orders.hold_id', 'orders.status', 'order_items.qty'])
      .where('order_items.product_id', 'in', ids)
      .where((eb) =>
        eb.or([
          eb.and([eb('orders.status', 'in', RETURNED_ORDER_STATUSES), eb('orders.units_released_at', 'is', null)]),
          ...(convertingHoldIds.length > 0 ? [eb('orders.hold_id', 'in', [...convertingHoldIds])] : []),
        ]),
      )
      .execute(),
  ]);
  for (const product of products) {
    ledgers.set(product.id, {
      stock: product.stock,
      // bigint: a string on a pool that did not come from ./connection.ts (the bench's).
      stock_version: Number(product.stock_version),
      per_customer_limit: product.per_customer_limit,
      liveUnits: 0,
      // A product without a row (none since the migration that made the table) counts as drift.
      countedUnits: product.sold_units ?? -1,
      liveUnitsByCustomer: new Map(),
      ordersInFlight: new Map(),
    });
  }
  for (const row of byCustomer) {
    const ledger = ledgers.get(row.product_id);
    if (!ledger) continue;
    ledger.liveUnits += row.units;
    if (row.customer_id !== null) ledger.liveUnitsByCustomer.set(row.customer_id, row.units);
  }
  for (const row of inFlight) {
    ledgers
      .get(row.product_id)
      ?.ordersInFlight.set(row.hold_id, { status: row.status, live: LIVE.has(row.status), qty: row.qty });
  }
  return ledgers;
}

/** The ledger of one product, or undefined when Postgres does not have it. */
export async function productLedger(
  db: Kysely<Database>,
  productId: number,
  convertingHoldIds: readonly string[],
): Promise<ProductLedger | undefined> {
  return (await productLedgers(db, [productId], convertingHoldIds)).get(productId);
}
