import { sql, type Kysely } from 'kysely';
import { RETURNED_ORDER_STATUSES, SOLD_ORDER_STATUSES, type Database, type OrderStatus } from './schema.js';

/** What Postgres says one product's Redis state must be: the reconciliation's expected values. */
export interface ProductLedger {
  stock: number;
  stock_version: number;
  per_customer_limit: number | null;
  /** Units of the product's orders whose units count as sold (SOLD_ORDER_STATUSES). */
  liveUnits: number;
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
 * The ledger of one product, or undefined when Postgres does not have it. `convertingHoldIds`: the holds Redis
 * has under conversion, whose orders (if committed) are looked up.
 */
export async function productLedger(
  db: Kysely<Database>,
  productId: number,
  convertingHoldIds: readonly string[],
): Promise<ProductLedger | undefined> {
  const product = await db
    .selectFrom('products')
    .select(['stock', 'stock_version', 'per_customer_limit'])
    .where('id', '=', productId)
    .executeTakeFirst();
  if (!product) return undefined;
  const [byCustomer, inFlight] = await Promise.all([
    db
      .selectFrom('order_items')
      .innerJoin('orders', 'orders.id', 'order_items.order_id')
      .select(['orders.customer_id', sql<number>`sum(order_items.qty)::int`.as('units')])
      .where('order_items.product_id', '=', productId)
      .where('orders.status', 'in', SOLD_ORDER_STATUSES)
      .groupBy('orders.customer_id')
      .execute(),
    db
      .selectFrom('order_items')
      .innerJoin('orders', 'orders.id', 'order_items.order_id')
      .select(['orders.hold_id', 'orders.status', 'order_items.qty'])
      .where('order_items.product_id', '=', productId)
      .where((eb) =>
        eb.or([
          eb.and([eb('orders.status', 'in', RETURNED_ORDER_STATUSES), eb('orders.units_released_at', 'is', null)]),
          ...(convertingHoldIds.length > 0 ? [eb('orders.hold_id', 'in', convertingHoldIds)] : []),
        ]),
      )
      .execute(),
  ]);
  const liveUnitsByCustomer = new Map<string, number>();
  let liveUnits = 0;
  for (const row of byCustomer) {
    liveUnits += row.units;
    if (row.customer_id !== null) liveUnitsByCustomer.set(row.customer_id, row.units);
  }
  return {
    stock: product.stock,
    // bigint: a string on a pool that did not come from ./connection.ts (the bench's).
    stock_version: Number(product.stock_version),
    per_customer_limit: product.per_customer_limit,
    liveUnits,
    liveUnitsByCustomer,
    ordersInFlight: new Map(
      inFlight.map((row) => [row.hold_id, { status: row.status, live: LIVE.has(row.status), qty: row.qty }]),
    ),
  };
}
