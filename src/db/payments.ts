import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, OrderStatus, PaymentStatus } from './schema.js';

type Db = Kysely<Database> | Transaction<Database>;

/** Repository of payment webhook deliveries. Functions take `db` or a transaction: the caller owns it. */

export interface PaymentEvent {
  idempotencyKey: string;
  requestHash: string;
  orderId: number;
  eventType: string;
  /** The whole webhook body, kept as the payment's payload. */
  payload: unknown;
  signature: 'valid' | 'unsigned';
  /** The order's new state, written only when `changes` is set. */
  status: OrderStatus;
  paymentStatus: PaymentStatus;
  changes: boolean;
  responseStatus: number;
  responseBody: unknown;
}

/**
 * Records a delivery's idempotency key with its answer and, only if the key was new, applies its change to the
 * order and its payment and keeps the delivery: one statement, so one round trip. Returns whether the key was
 * new; if not, nothing was written and the stored answer is the one to give.
 */
export async function recordPaymentEvent(trx: Transaction<Database>, event: PaymentEvent): Promise<boolean> {
  const payload = JSON.stringify(event.payload);
  const responseBody = JSON.stringify(event.responseBody);
  const { rows } = await sql<{ fresh: number }>`
    WITH key AS (
      INSERT INTO processed_webhooks
        (idempotency_key, request_hash, order_id, event_type, payload, response_status, response_body)
      VALUES (${event.idempotencyKey}, ${event.requestHash}, ${event.orderId}, ${event.eventType}, ${payload}::jsonb,
              ${event.responseStatus}, ${responseBody}::jsonb)
      ON CONFLICT (idempotency_key) DO NOTHING
      RETURNING 1
    ), order_change AS (
      UPDATE orders SET status = ${event.status}, payment_status = ${event.paymentStatus}, updated_at = now()
      WHERE id = ${event.orderId} AND ${event.changes} AND EXISTS (SELECT 1 FROM key)
    ), payment_change AS (
      UPDATE payments SET status = ${event.paymentStatus}, payload = ${payload}::jsonb, updated_at = now()
      WHERE order_id = ${event.orderId} AND ${event.changes} AND EXISTS (SELECT 1 FROM key)
    ), delivery AS (
      INSERT INTO webhook_deliveries
        (idempotency_key, order_id, event_type, payload, signature, response_status, response_body, replayed)
      SELECT ${event.idempotencyKey}, ${event.orderId}, ${event.eventType}, ${payload}::jsonb, ${event.signature},
             ${event.responseStatus}, ${responseBody}::jsonb, false
      FROM key
    )
    SELECT count(*)::int AS fresh FROM key`.execute(trx);
  return (rows[0]?.fresh ?? 0) > 0;
}

/** The stored answer to an idempotency key, with the fingerprint of the request that first used it. */
export async function storedAnswer(db: Db, idempotencyKey: string) {
  return db
    .selectFrom('processed_webhooks')
    .select(['request_hash', 'response_status', 'response_body'])
    .where('idempotency_key', '=', idempotencyKey)
    .executeTakeFirst();
}

/** Keeps a delivery that changed nothing (a replay, a refusal), with its answer. */
export async function recordDelivery(
  db: Db,
  delivery: { idempotencyKey: string; orderId: number; eventType: string; payload: unknown; signature: 'valid' | 'unsigned'; responseStatus: number; responseBody: unknown; replayed: boolean },
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
