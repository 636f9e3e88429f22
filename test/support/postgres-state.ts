/** What the service keeps in Postgres about orders and conversions, read with plain SQL. */
import pg from 'pg';
import type { Test } from 'tap';
import { SOLD_ORDER_STATUSES } from '../../src/db/schema.js';

/** A connection pool of the test's own database (a ServiceWorld is one). */
export interface PostgresScope {
  db: Pick<pg.Pool, 'query'>;
}

/** An order of a hold with its one item. */
export interface OrderOfHold {
  id: number;
  hold_id: string;
  status: string;
  payment_status: string;
  units_released_at: Date | null;
  qty: number;
  product_id: number;
}

const ORDERS_WITH_ITEM = `SELECT o.id::int AS id, o.hold_id, o.status, o.payment_status, o.units_released_at, i.qty,
    i.product_id FROM orders o JOIN order_items i ON i.order_id = o.id`;

/** The orders of a hold, oldest first: exactly-once conversion means at most one. */
export async function ordersOfHold({ db }: PostgresScope, holdId: string): Promise<OrderOfHold[]> {
  const { rows } = await db.query<OrderOfHold>(`${ORDERS_WITH_ITEM} WHERE o.hold_id = $1 ORDER BY o.id`, [holdId]);
  return rows;
}

/** Every order of these products, oldest first. */
export async function ordersOfProducts({ db }: PostgresScope, productIds: readonly number[]): Promise<OrderOfHold[]> {
  const { rows } = await db.query<OrderOfHold>(`${ORDERS_WITH_ITEM} WHERE i.product_id = ANY($1) ORDER BY o.id`, [
    productIds,
  ]);
  return rows;
}

/** How many orders a hold has. */
export async function orderCount({ db }: PostgresScope, holdId: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM orders WHERE hold_id = $1', [holdId]);
  return rows[0]!.n;
}

/** The recorded outcomes of a hold's conversion claims, oldest first. */
export async function claimsOfHold(
  { db }: PostgresScope,
  holdId: string,
): Promise<{ claim_id: string; outcome: string }[]> {
  const { rows } = await db.query<{ claim_id: string; outcome: string }>(
    'SELECT claim_id, outcome FROM hold_claims WHERE hold_id = $1 ORDER BY created_at',
    [holdId],
  );
  return rows;
}

/** Units of the product's orders whose units count as sold (SOLD_ORDER_STATUSES): what Redis must count as sold. */
export async function unitsOrdered({ db }: PostgresScope, productId: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT coalesce(sum(i.qty), 0)::int AS n FROM order_items i JOIN orders o ON o.id = i.order_id
      WHERE i.product_id = $1 AND o.status = ANY($2)`,
    [productId, SOLD_ORDER_STATUSES],
  );
  return rows[0]!.n;
}

/** Whether the hold's order is past its payment deadline (by Postgres's clock). */
export async function isPastPaymentDeadline({ db }: PostgresScope, holdId: string): Promise<boolean> {
  const { rows } = await db.query('SELECT 1 FROM orders WHERE hold_id = $1 AND payment_due_at <= now()', [holdId]);
  return rows.length > 0;
}

/** A row held FOR UPDATE by another session, as a slow transaction would hold it. */
export interface RowLock {
  /**
   * Sessions of this database waiting for a lock. Asked outside the blocker's transaction: within one,
   * pg_stat_activity keeps the sessions it listed first, so a connection opened later would never be counted.
   */
  waiting(): Promise<number>;
  /** Commits the blocker's transaction: the row is free. */
  release(): Promise<void>;
}

/** Takes a product's row FOR UPDATE in a session of its own (ended when the test ends) until `release`. */
export function lockProductRow(
  t: Pick<Test, 'teardown'>,
  scope: PostgresScope,
  databaseUrl: string,
  productId: number,
): Promise<RowLock> {
  return lockRow(t, scope, databaseUrl, 'products', productId);
}

/** Takes an order's row FOR UPDATE in a session of its own (ended when the test ends) until `release`. */
export function lockOrderRow(
  t: Pick<Test, 'teardown'>,
  scope: PostgresScope,
  databaseUrl: string,
  orderId: number,
): Promise<RowLock> {
  return lockRow(t, scope, databaseUrl, 'orders', orderId);
}

async function lockRow(
  t: Pick<Test, 'teardown'>,
  { db }: PostgresScope,
  databaseUrl: string,
  table: 'products' | 'orders',
  id: number,
): Promise<RowLock> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  t.teardown(() => client.end());
  await client.query('BEGIN');
  await client.query(`SELECT id FROM ${table} WHERE id = $1 FOR UPDATE`, [id]);
  return {
    waiting: async () =>
      Number(
        (
          await db.query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
          )
        ).rows[0].n,
      ),
    release: async () => {
      await client.query('COMMIT');
    },
  };
}
