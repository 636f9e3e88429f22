import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, OrderRow } from './schema.js';

type Db = Kysely<Database> | Transaction<Database>;

/** Repository of orders, their items and payments. Functions take `db` or a transaction: the caller owns it. */

export interface OrderWithItems extends OrderRow {
  items: { product_id: number; qty: number; unit_price_cents: number; subtotal_cents: number }[];
}

async function withItems(db: Db, order: OrderRow | undefined): Promise<OrderWithItems | undefined> {
  if (!order) return undefined;
  const items = await db
    .selectFrom('order_items')
    .select(['product_id', 'qty', 'unit_price_cents', 'subtotal_cents'])
    .where('order_id', '=', order.id)
    .orderBy('id')
    .execute();
  return { ...order, items };
}

export async function findOrder(db: Db, id: number): Promise<OrderWithItems | undefined> {
  return withItems(db, await db.selectFrom('orders').selectAll().where('id', '=', id).executeTakeFirst());
}

export async function findOrderByHold(db: Db, holdId: string): Promise<OrderWithItems | undefined> {
  return withItems(db, await db.selectFrom('orders').selectAll().where('hold_id', '=', holdId).executeTakeFirst());
}

/** The order row locked until the transaction ends: payment events for one order apply one at a time. */
export async function lockOrder(trx: Transaction<Database>, id: number): Promise<OrderRow | undefined> {
  return trx.selectFrom('orders').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}

export interface NewOrder {
  holdId: string;
  customerId: string | null;
  productId: number;
  qty: number;
  unitPriceCents: number;
  paymentMethod: string | null;
  paymentTtlSeconds: number;
}

/** Inserts an order with its one item and its pending payment; the payment is due `paymentTtlSeconds` from now. */
export async function insertOrder(trx: Transaction<Database>, order: NewOrder): Promise<number> {
  const total = order.qty * order.unitPriceCents;
  const { id } = await trx
    .insertInto('orders')
    .values({
      hold_id: order.holdId,
      customer_id: order.customerId,
      status: 'pending_payment',
      payment_status: 'pending',
      total_cents: total,
      payment_due_at: sql<Date>`now() + make_interval(secs => ${order.paymentTtlSeconds})`,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  await trx
    .insertInto('order_items')
    .values({ order_id: id, product_id: order.productId, qty: order.qty, unit_price_cents: order.unitPriceCents, subtotal_cents: total })
    .execute();
  await trx
    .insertInto('payments')
    .values({ order_id: id, status: 'pending', amount_cents: total, method: order.paymentMethod })
    .execute();
  return id;
}

/**
 * Records a conversion claim's outcome unless one is recorded already, and returns the recorded one. Waits for a
 * transaction that is writing the same claim, so of 'ordered' and 'abandoned' exactly one is ever recorded.
 */
export async function recordClaimOutcome(
  db: Db,
  claim: { claimId: string; holdId: string; outcome: 'ordered' | 'abandoned' },
): Promise<{ recorded: 'ordered' | 'abandoned'; written: boolean }> {
  const written = await db
    .insertInto('hold_claims')
    .values({ claim_id: claim.claimId, hold_id: claim.holdId, outcome: claim.outcome })
    .onConflict((oc) => oc.column('claim_id').doNothing())
    .returning('claim_id')
    .executeTakeFirst();
  if (written) return { recorded: claim.outcome, written: true };
  const row = await db
    .selectFrom('hold_claims')
    .select('outcome')
    .where('claim_id', '=', claim.claimId)
    .executeTakeFirstOrThrow();
  return { recorded: row.outcome, written: false };
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
  return cancelOrders(trx, overdue.map((o) => o.id));
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

/** Cancelled orders whose units are not yet back on sale in Redis. */
export async function ordersWithUnitsToRelease(db: Db, limit: number): Promise<{ id: number; hold_id: string }[]> {
  return db
    .selectFrom('orders')
    .select(['id', 'hold_id'])
    .where('status', 'in', ['cancelled', 'refund_required'])
    .where('units_released_at', 'is', null)
    .orderBy('id')
    .limit(limit)
    .execute();
}

export async function markUnitsReleased(db: Db, id: number): Promise<void> {
  await sql`UPDATE orders SET units_released_at = now() WHERE id = ${id} AND units_released_at IS NULL`.execute(db);
}
