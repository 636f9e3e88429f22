import { sql, type Kysely, type Transaction } from 'kysely';
import { RETURNED_ORDER_STATUSES, type Database, type OrderRow } from './schema.js';

/**
 * Repository of orders, their items and payments. Each function takes a `Kysely<Database>` first: the app's
 * handle or a transaction (which is one), so the caller owns the transaction. Those that lock rows, or must run
 * under such a lock, take a Transaction: a lock outside one would end with its statement.
 */

export interface OrderWithItems extends OrderRow {
  items: { product_id: number; qty: number; unit_price_cents: number; subtotal_cents: number }[];
}

async function withItems(db: Kysely<Database>, order: OrderRow | undefined): Promise<OrderWithItems | undefined> {
  if (!order) return undefined;
  const items = await db
    .selectFrom('order_items')
    .select(['product_id', 'qty', 'unit_price_cents', 'subtotal_cents'])
    .where('order_id', '=', order.id)
    .orderBy('id')
    .execute();
  return { ...order, items };
}

export async function findOrder(db: Kysely<Database>, id: number): Promise<OrderWithItems | undefined> {
  return withItems(db, await db.selectFrom('orders').selectAll().where('id', '=', id).executeTakeFirst());
}

export async function findOrderByHold(db: Kysely<Database>, holdId: string): Promise<OrderWithItems | undefined> {
  return withItems(db, await db.selectFrom('orders').selectAll().where('hold_id', '=', holdId).executeTakeFirst());
}

export interface NewOrder {
  claimId: string;
  holdId: string;
  customerId: string | null;
  productId: number;
  qty: number;
  unitPriceCents: number;
  paymentMethod: string | null;
  paymentTtlSeconds: number;
  /** The generation of the product's Redis copy the hold was claimed in (src/domain/redis-rebuild.ts). */
  redisGeneration: number;
}

/**
 * What became of one order of a batch: written; not written because its claim already has an outcome
 * (`claimOutcome` says which) or because the product's Redis copy was rebuilt since the hold was made (fenced:
 * `claimOutcome` finds none; the hold is lost); or refused because the product's live orders leave too few units
 * of its stock for it (its hold came from a Redis copy behind the ledger: a promoted replica that missed sales).
 */
export type OrderWrite = { kind: 'written'; order: OrderWithItems } | { kind: 'notWritten' } | { kind: 'beyondStock' };

/**
 * Records each claim as 'ordered' and inserts its order, the order's one item and its pending payment: every
 * order of the batch in one statement, so one round trip and one commit, atomic without an explicit
 * transaction. The answer has one entry per order asked, in order (see OrderWrite).
 * Each claim's primary key decides for that claim alone, and the ledger's count of each product's sold units
 * (product_sales, kept by triggers) for its stock: the orders of a product fit while their running total in
 * claim id order does. The statement fails as a whole only on an error (a unique hold id, a check, bad data),
 * which the caller retries order by order (src/db/order-batches.ts). The claim ids and the hold ids must each be
 * distinct within a batch. Payments are due `paymentTtlSeconds` from now, by Postgres's clock.
 */
export async function insertOrdersForClaims(db: Kysely<Database>, orders: readonly NewOrder[]): Promise<OrderWrite[]> {
  const column = <T>(pick: (order: NewOrder) => T) => orders.map(pick);
  const { rows } = await sql<OrderRow & { asked_hold_id: string; fits: boolean | null }>`
    WITH input AS (
      SELECT * FROM unnest(
        ${column((o) => o.claimId)}::text[], ${column((o) => o.holdId)}::text[],
        ${column((o) => o.customerId)}::text[], ${column((o) => o.productId)}::int[], ${column((o) => o.qty)}::int[],
        ${column((o) => o.unitPriceCents)}::bigint[], ${column((o) => o.paymentMethod)}::text[],
        ${column((o) => o.paymentTtlSeconds)}::float8[], ${column((o) => o.redisGeneration)}::bigint[]
      ) AS i(claim_id, hold_id, customer_id, product_id, qty, unit_price_cents, method, ttl_seconds, generation)
    ), fence AS (
      -- FOR KEY SHARE waits for a rebuild or a stock change holding a row FOR UPDATE, then reads the generation
      -- and the stock it wrote. In id order, so two batches (or a batch and a rebuild) lock in the same order.
      SELECT id, redis_generation, stock FROM products WHERE id IN (SELECT product_id FROM input)
      ORDER BY id FOR KEY SHARE
    ), sales AS (
      -- Locked until the commit: a batch of the same product waits, then reads the count this one's items left.
      SELECT product_id, sold_units FROM product_sales WHERE product_id IN (SELECT id FROM fence)
      ORDER BY product_id FOR UPDATE
    ), decided AS (
      SELECT i.*, f.stock - s.sold_units
               - sum(i.qty) OVER (PARTITION BY i.product_id ORDER BY i.claim_id ROWS UNBOUNDED PRECEDING) >= 0 AS fits
      FROM input i JOIN fence f ON f.id = i.product_id AND f.redis_generation = i.generation
      JOIN sales s ON s.product_id = i.product_id
    ), claim AS (
      -- In claim id order: two statements waiting on each other's claim ids would otherwise deadlock.
      INSERT INTO hold_claims (claim_id, hold_id, outcome)
      SELECT claim_id, hold_id, 'ordered' FROM decided WHERE fits
      ORDER BY claim_id
      ON CONFLICT (claim_id) DO NOTHING
      RETURNING claim_id
    ), new_order AS (
      INSERT INTO orders (hold_id, customer_id, status, payment_status, total_cents, payment_due_at)
      SELECT i.hold_id, i.customer_id, 'pending_payment', 'pending', i.qty * i.unit_price_cents,
             now() + make_interval(secs => i.ttl_seconds)
      FROM claim JOIN input i USING (claim_id)
      RETURNING *
    ), item AS (
      INSERT INTO order_items (order_id, product_id, qty, unit_price_cents, subtotal_cents)
      SELECT o.id, i.product_id, i.qty, i.unit_price_cents, o.total_cents FROM new_order o JOIN input i USING (hold_id)
    ), payment AS (
      INSERT INTO payments (order_id, status, amount_cents, method)
      SELECT o.id, 'pending', o.total_cents, i.method FROM new_order o JOIN input i USING (hold_id)
    )
    SELECT o.*, i.hold_id AS asked_hold_id, d.fits
    FROM input i LEFT JOIN decided d USING (claim_id) LEFT JOIN new_order o ON o.hold_id = i.hold_id`.execute(db);
  const byHold = new Map(rows.map((row) => [row.asked_hold_id, row]));
  return orders.map((order): OrderWrite => {
    const row = byHold.get(order.holdId);
    if (row?.fits === false) return { kind: 'beyondStock' };
    if (row?.id == null) return { kind: 'notWritten' };
    const { asked_hold_id: _asked, fits: _fits, ...written } = row;
    const item = {
      product_id: order.productId,
      qty: order.qty,
      unit_price_cents: order.unitPriceCents,
      subtotal_cents: written.total_cents,
    };
    return { kind: 'written', order: { ...written, items: [item] } };
  });
}

/** The outcome recorded for a conversion claim, if any. */
export async function claimOutcome(
  db: Kysely<Database>,
  claimId: string,
): Promise<'ordered' | 'abandoned' | undefined> {
  const row = await db.selectFrom('hold_claims').select('outcome').where('claim_id', '=', claimId).executeTakeFirst();
  return row?.outcome;
}

/**
 * Records a claim as abandoned unless it has an outcome already, and returns the outcome recorded. Waits for a
 * transaction writing the same claim, so of 'ordered' and 'abandoned' exactly one is ever recorded.
 */
export async function abandonClaim(
  db: Kysely<Database>,
  claim: { claimId: string; holdId: string },
): Promise<'ordered' | 'abandoned'> {
  await db
    .insertInto('hold_claims')
    .values({ claim_id: claim.claimId, hold_id: claim.holdId, outcome: 'abandoned' })
    .onConflict((oc) => oc.column('claim_id').doNothing())
    .execute();
  return (await claimOutcome(db, claim.claimId)) ?? 'abandoned';
}

/** Cancels orders whose payment is overdue (locking them, skipping ones another instance is handling). */
export async function cancelOverdueOrders(trx: Transaction<Database>, limit: number): Promise<OrderRow[]> {
  const overdue = await trx
    .selectFrom('orders')
    .select('id')
    .where('status', '=', 'pending_payment')
    .where('payment_due_at', '<=', sql<Date>`now()`)
    .orderBy('payment_due_at')
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
  if (overdue.length === 0) return [];
  return cancelOrders(
    trx,
    overdue.map((o) => o.id),
  );
}

/** Marks orders cancelled and their payments failed. */
export async function cancelOrders(trx: Transaction<Database>, ids: number[]): Promise<OrderRow[]> {
  const now = new Date();
  await trx
    .updateTable('payments')
    .set({ status: 'failed', updated_at: now })
    .where('order_id', 'in', ids)
    .where('status', 'in', ['pending', 'processing'])
    .execute();
  return trx
    .updateTable('orders')
    .set({ status: 'cancelled', payment_status: 'failed', updated_at: now })
    .where('id', 'in', ids)
    .returningAll()
    .execute();
}

/** Orders whose units go back on sale (cancelled, refund_required) and are not back yet in Redis. */
export async function ordersWithUnitsToRelease(
  db: Kysely<Database>,
  limit: number,
): Promise<{ id: number; hold_id: string }[]> {
  return db
    .selectFrom('orders')
    .select(['id', 'hold_id'])
    .where('status', 'in', RETURNED_ORDER_STATUSES)
    .where('units_released_at', 'is', null)
    .orderBy('id')
    .limit(limit)
    .execute();
}

export async function markUnitsReleased(db: Kysely<Database>, id: number): Promise<void> {
  await sql`UPDATE orders SET units_released_at = now() WHERE id = ${id} AND units_released_at IS NULL`.execute(db);
}
