import { sql, type Kysely } from 'kysely';
import type { Database, OrderStatus, PaymentStatus } from './schema.js';

/**
 * Repository of payment webhook deliveries. Each function takes a `Kysely<Database>` first: the app's handle or a
 * transaction (which is one), so the caller owns the transaction.
 */

export interface PaymentEvent {
  idempotencyKey: string;
  requestHash: string;
  orderId: number;
  /** The order's state the event was judged against: nothing is written unless the order is still in it. */
  expectedStatus: OrderStatus;
  expectedPaymentStatus: PaymentStatus;
  eventType: string;
  /** The whole webhook body, kept as the payment's payload. */
  payload: unknown;
  signature: 'valid' | 'unsigned';
  /** The order's new state, written only when `changes` is set. */
  status: OrderStatus;
  paymentStatus: PaymentStatus;
  changes: boolean;
  /** A success that does not pay the order (amount or currency differ): kept on its payment, nothing else changes. */
  mismatch: unknown;
  responseStatus: number;
  responseBody: unknown;
}

export interface RecordedPaymentEvent {
  /** The order was in the expected state (false: it changed meanwhile, and nothing was written). */
  matched: boolean;
  /** The idempotency key was new, and the event was applied and kept (false with matched: a key seen before). */
  fresh: boolean;
}

/**
 * Applies a payment event in one statement, so in one round trip and one commit: locks the order row if it is
 * still in the state the event was judged against, records the delivery's idempotency key with its answer and,
 * only if the key was new, applies the change to the order and its payment and keeps the delivery. A concurrent
 * event that changed the order first makes the lock find nothing (Postgres re-checks the row once it gets the
 * lock), so nothing is written and the caller judges the event again against the new state. A mismatched
 * success changes nothing but the payment's `mismatch`.
 */
export async function recordPaymentEvent(db: Kysely<Database>, event: PaymentEvent): Promise<RecordedPaymentEvent> {
  const payload = JSON.stringify(event.payload);
  const responseBody = JSON.stringify(event.responseBody);
  const mismatch = event.mismatch === null ? null : JSON.stringify(event.mismatch);
  const { rows } = await sql<{ matched: number; fresh: number }>`
    WITH locked AS (
      SELECT id FROM orders
      WHERE id = ${event.orderId} AND status = ${event.expectedStatus} AND payment_status = ${event.expectedPaymentStatus}
      FOR UPDATE
    ), key AS (
      INSERT INTO processed_webhooks
        (idempotency_key, request_hash, order_id, event_type, payload, response_status, response_body)
      SELECT ${event.idempotencyKey}, ${event.requestHash}, id, ${event.eventType}, ${payload}::jsonb,
             ${event.responseStatus}, ${responseBody}::jsonb
      FROM locked
      ON CONFLICT (idempotency_key) DO NOTHING
      RETURNING 1
    ), order_change AS (
      UPDATE orders SET status = ${event.status}, payment_status = ${event.paymentStatus}, updated_at = now()
      WHERE id = ${event.orderId} AND ${event.changes} AND EXISTS (SELECT 1 FROM key)
    ), payment_change AS (
      UPDATE payments SET status = ${event.paymentStatus}, payload = ${payload}::jsonb, updated_at = now()
      WHERE order_id = ${event.orderId} AND ${event.changes} AND EXISTS (SELECT 1 FROM key)
    ), payment_mismatch AS (
      UPDATE payments SET mismatch = ${mismatch}::jsonb, updated_at = now()
      WHERE order_id = ${event.orderId} AND ${mismatch}::jsonb IS NOT NULL AND EXISTS (SELECT 1 FROM key)
    ), delivery AS (
      INSERT INTO webhook_deliveries
        (idempotency_key, order_id, event_type, payload, signature, response_status, response_body, replayed)
      SELECT ${event.idempotencyKey}, ${event.orderId}, ${event.eventType}, ${payload}::jsonb, ${event.signature},
             ${event.responseStatus}, ${responseBody}::jsonb, false
      FROM key
    )
    SELECT (SELECT count(*) FROM locked)::int AS matched, (SELECT count(*) FROM key)::int AS fresh`.execute(db);
  return { matched: (rows[0]?.matched ?? 0) > 0, fresh: (rows[0]?.fresh ?? 0) > 0 };
}

/** The stored answer to an idempotency key, with the fingerprint of the request that first used it. */
export async function storedAnswer(db: Kysely<Database>, idempotencyKey: string) {
  return db
    .selectFrom('processed_webhooks')
    .select(['request_hash', 'response_status', 'response_body'])
    .where('idempotency_key', '=', idempotencyKey)
    .executeTakeFirst();
}

/** Keeps a delivery that changed nothing (a replay, a refusal), with its answer. */
export async function recordDelivery(
  db: Kysely<Database>,
  delivery: {
    idempotencyKey: string;
    orderId: number;
    eventType: string;
    payload: unknown;
    signature: 'valid' | 'unsigned';
    responseStatus: number;
    responseBody: unknown;
    replayed: boolean;
  },
): Promise<void> {
  await db
    .insertInto('webhook_deliveries')
    .values({
      idempotency_key: delivery.idempotencyKey,
      order_id: delivery.orderId,
      event_type: delivery.eventType,
      payload: JSON.stringify(delivery.payload),
      signature: delivery.signature,
      response_status: delivery.responseStatus,
      response_body: JSON.stringify(delivery.responseBody),
      replayed: delivery.replayed,
    })
    .execute();
}

/**
 * Deletes up to `limit` of the oldest deliveries received before `olderThanMs` ago for orders that do not exist
 * (webhooks that came before their order, or never had one), so anyone able to send them fills no table
 * forever. Returns how many were deleted.
 */
export async function purgeOrphanDeliveries(db: Kysely<Database>, olderThanMs: number, limit: number): Promise<number> {
  const { numAffectedRows } = await sql`
    DELETE FROM webhook_deliveries WHERE id IN (
      SELECT d.id FROM webhook_deliveries d
      WHERE d.received_at < now() - make_interval(secs => ${olderThanMs / 1000})
        AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = d.order_id)
      ORDER BY d.received_at
      LIMIT ${limit}
    )`.execute(db);
  return Number(numAffectedRows ?? 0);
}
