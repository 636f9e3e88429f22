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
 * Applies payment events in one statement, so in one round trip and one commit: for each event, locks its order
 * row if it is still in the state the event was judged against, records the delivery's idempotency key with its
 * answer and, only if the key was new, applies the change to the order and its payment and keeps the delivery. A
 * concurrent event that changed an order first makes its lock find nothing (Postgres re-checks the row once it
 * gets the lock), so nothing is written for that event and the caller judges it again against the new state; the
 * other events of the statement are not affected. A mismatched success changes nothing but the payment's
 * `mismatch`. Each idempotency key and each order at most once per call (one statement cannot change a row
 * twice): src/db/payment-batches.ts makes the batches so. Answers in the order of `events`.
 */
export async function recordPaymentEvents(
  db: Kysely<Database>,
  events: readonly PaymentEvent[],
): Promise<RecordedPaymentEvent[]> {
  const column = <T>(pick: (event: PaymentEvent) => T) => events.map(pick);
  const { rows } = await sql<{ idempotency_key: string; matched: boolean; fresh: boolean }>`
    WITH input AS (
      SELECT * FROM unnest(
        ${column((e) => e.idempotencyKey)}::text[], ${column((e) => e.requestHash)}::text[],
        ${column((e) => e.orderId)}::bigint[], ${column((e) => e.expectedStatus)}::text[],
        ${column((e) => e.expectedPaymentStatus)}::text[], ${column((e) => e.eventType)}::text[],
        ${column((e) => JSON.stringify(e.payload))}::text[], ${column((e) => e.signature)}::text[],
        ${column((e) => e.status)}::text[], ${column((e) => e.paymentStatus)}::text[],
        ${column((e) => e.changes)}::bool[],
        ${column((e) => (e.mismatch === null ? null : JSON.stringify(e.mismatch)))}::text[],
        ${column((e) => e.responseStatus)}::int[], ${column((e) => JSON.stringify(e.responseBody))}::text[]
      ) AS i(idempotency_key, request_hash, order_id, expected_status, expected_payment_status, event_type, payload,
             signature, status, payment_status, changes, mismatch, response_status, response_body)
    ), locked AS (
      -- In id order: two statements locking orders of each other's batches would otherwise deadlock.
      SELECT o.id FROM orders o JOIN input i ON i.order_id = o.id
      WHERE o.status = i.expected_status AND o.payment_status = i.expected_payment_status
      ORDER BY o.id
      FOR UPDATE OF o
    ), key AS (
      -- In key order, for the same reason: a statement waits on a key another one inserted until it commits.
      INSERT INTO processed_webhooks
        (idempotency_key, request_hash, order_id, event_type, payload, response_status, response_body)
      SELECT i.idempotency_key, i.request_hash, i.order_id, i.event_type, i.payload::jsonb, i.response_status,
             i.response_body::jsonb
      FROM input i JOIN locked l ON l.id = i.order_id
      ORDER BY i.idempotency_key
      ON CONFLICT (idempotency_key) DO NOTHING
      RETURNING idempotency_key
    ), fresh AS (
      SELECT i.* FROM input i JOIN key USING (idempotency_key)
    ), order_change AS (
      UPDATE orders o SET status = f.status, payment_status = f.payment_status, updated_at = now()
      FROM fresh f WHERE o.id = f.order_id AND f.changes
    ), payment_change AS (
      -- A change and a mismatch never come together (a mismatched success changes nothing): one update each.
      UPDATE payments p SET
        status = CASE WHEN f.changes THEN f.payment_status ELSE p.status END,
        payload = CASE WHEN f.changes THEN f.payload::jsonb ELSE p.payload END,
        mismatch = COALESCE(f.mismatch::jsonb, p.mismatch),
        updated_at = now()
      FROM fresh f WHERE p.order_id = f.order_id AND (f.changes OR f.mismatch IS NOT NULL)
    ), delivery AS (
      INSERT INTO webhook_deliveries
        (idempotency_key, order_id, event_type, payload, signature, response_status, response_body, replayed)
      SELECT idempotency_key, order_id, event_type, payload::jsonb, signature, response_status, response_body::jsonb,
             false
      FROM fresh
    )
    SELECT i.idempotency_key, l.id IS NOT NULL AS matched, k.idempotency_key IS NOT NULL AS fresh
    FROM input i LEFT JOIN locked l ON l.id = i.order_id LEFT JOIN key k USING (idempotency_key)`.execute(db);
  const byKey = new Map(rows.map((row) => [row.idempotency_key, row]));
  return events.map((event) => {
    const row = byKey.get(event.idempotencyKey);
    return { matched: row?.matched ?? false, fresh: row?.fresh ?? false };
  });
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
