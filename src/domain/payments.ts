import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import { createOrderReads } from '../db/order-reads.js';
import { createPaymentBatches } from '../db/payment-batches.js';
import * as paymentsRepo from '../db/payments.js';
import type { Database, OrderRow, OrderStatus, PaymentStatus } from '../db/schema.js';
import { AppError, errors, type ErrorBody, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import { noMetrics, type MetricsRecorder } from '../observability/metrics.js';
import type { Settings } from '../settings.js';
import type { PaymentOutcome, PaymentWebhook } from '../schemas/order.js';
import type { OrderDesk } from './orders.js';

export interface PaymentDelivery {
  webhook: PaymentWebhook & Record<string, unknown>;
  signature: 'valid' | 'unsigned';
  /** The request's logger (its lines carry the request id); the desk's own otherwise. */
  log?: Logger;
}

/** A success that does not pay its order: what it carried against what the order asks. */
export interface PaymentMismatch {
  amount_cents: number | null;
  currency: string | null;
  expected_amount_cents: number;
  expected_currency: string;
}

export interface PaymentAnswer {
  statusCode: number;
  body: PaymentOutcome | ErrorBody;
  replayed: boolean;
}

/** What a payment event does to an order in a given state. */
interface Transition {
  statusCode: 200 | 409;
  status: OrderStatus;
  paymentStatus: PaymentStatus;
  /** The order's row changes (false: the event is recorded and answered, nothing else). */
  changes: boolean;
  /** The order's units go back on sale after the commit. */
  releasesUnits: boolean;
  /** A success that pays nothing: recorded on the payment and answered 200 `applied: false`, nothing else. */
  mismatch?: PaymentMismatch;
}

/**
 * How a success's amount and currency differ from what `order` asks, or undefined when they do not (a field the
 * provider left out is not compared: the seed's deliveries carry neither).
 */
export function paymentMismatch(
  webhook: PaymentWebhook,
  order: Pick<OrderRow, 'total_cents'>,
  currency: string,
): PaymentMismatch | undefined {
  const amountDiffers = webhook.amount_cents !== undefined && webhook.amount_cents !== order.total_cents;
  const currencyDiffers = webhook.currency !== undefined && webhook.currency.toUpperCase() !== currency;
  if (!amountDiffers && !currencyDiffers) return undefined;
  return {
    amount_cents: webhook.amount_cents ?? null,
    currency: webhook.currency ?? null,
    expected_amount_cents: order.total_cents,
    expected_currency: currency,
  };
}

/** The one table of payment events against order states. */
function transition(order: OrderRow, event: 'success' | 'failure', mismatch?: PaymentMismatch): Transition {
  const same = { status: order.status, paymentStatus: order.payment_status, changes: false, releasesUnits: false };
  // Whatever the order's state: money that is not the order's price settles nothing, and is for ops to return.
  if (event === 'success' && mismatch) return { statusCode: 200, ...same, mismatch };
  if (event === 'success') {
    switch (order.status) {
      case 'pending_payment':
        return { statusCode: 200, status: 'paid', paymentStatus: 'completed', changes: true, releasesUnits: false };
      case 'cancelled': // paid after its deadline: its units may be sold again already, so the money goes back
        return {
          statusCode: 200,
          status: 'refund_required',
          paymentStatus: 'completed',
          changes: true,
          releasesUnits: false,
        };
      default: // paid, refund_required: the same news again
        return { statusCode: 200, ...same };
    }
  }
  switch (order.status) {
    case 'pending_payment':
      return { statusCode: 200, status: 'cancelled', paymentStatus: 'failed', changes: true, releasesUnits: true };
    case 'cancelled':
      return { statusCode: 200, ...same };
    default: // paid, refund_required: a failure cannot undo a completed payment
      return { statusCode: 409, ...same };
  }
}

export type PaymentDesk = ReturnType<typeof createPaymentDesk>;

// Rounds of reading an order and applying an event to it before giving up (see handle).
const MAX_JUDGEMENTS = 4;

/**
 * Payment webhooks: each delivery's effect and answer are committed in one Postgres statement (shared with the
 * deliveries judged in the same turn: src/db/payment-batches.ts), keyed by the provider's idempotency key, before
 * anything is answered. A key seen before is answered from what was stored;
 * concurrent copies queue on the order's row lock and are answered the same way.
 */
export function createPaymentDesk(deps: {
  db: Kysely<Database>;
  orders: OrderDesk;
  log: Logger;
  settings: Pick<Settings, 'currency' | 'webhookRetainMs' | 'maxPaymentBatch'>;
  events?: MetricsRecorder;
}) {
  const { db, orders, settings, events = noMetrics } = deps;
  const paymentBatches = createPaymentBatches(db, settings);
  const orderReads = createOrderReads(db, { maxBatch: settings.maxPaymentBatch });

  async function handle(delivery: PaymentDelivery): Promise<PaymentAnswer> {
    const { webhook } = delivery;
    const log = delivery.log ?? deps.log;
    const requestHash = fingerprint(webhook);
    let answer: PaymentAnswer;
    let recorded = false;
    let unitsToRelease: OrderRow | undefined;
    // What the delivery did, for flashsale_webhooks_total; set when it was judged afresh.
    let result: string | undefined;

    // Judged against the order as read, applied only if the order is still so (one statement); an order that
    // changed in between (a concurrent event, a cancellation) is read and judged again. An order changes state
    // at most twice, so a few rounds always suffice.
    const applyEvent = async (): Promise<PaymentAnswer> => {
      for (let round = 0; round < MAX_JUDGEMENTS; round++) {
        const order = await orderReads.find(webhook.order_id);
        if (!order) {
          // Unknown order (the webhook came first): nothing is written, so the key stays unused.
          const stored = await paymentsRepo.storedAnswer(db, webhook.idempotency_key);
          throw stored ? errors.idempotencyKeyReused() : errors.orderNotFound(webhook.order_id);
        }
        const next = transition(order, webhook.event_type, paymentMismatch(webhook, order, settings.currency));
        const body: PaymentAnswer['body'] =
          next.statusCode === 200
            ? { order_id: order.id, status: next.status, payment_status: next.paymentStatus, ...notApplied(next) }
            : errors.orderAlreadyFinal(order.id, order.status).body();
        const { matched, fresh } = await paymentBatches.record({
          idempotencyKey: webhook.idempotency_key,
          requestHash,
          orderId: order.id,
          expectedStatus: order.status,
          expectedPaymentStatus: order.payment_status,
          eventType: webhook.event_type,
          payload: webhook,
          signature: delivery.signature,
          status: next.status,
          paymentStatus: next.paymentStatus,
          changes: next.changes,
          mismatch: next.mismatch ? { idempotency_key: webhook.idempotency_key, ...next.mismatch } : null,
          responseStatus: next.statusCode,
          responseBody: body,
        });
        if (!matched) continue;
        if (!fresh) {
          // Copies of a delivery: the key's row tells the first from the rest.
          const stored = await paymentsRepo.storedAnswer(db, webhook.idempotency_key);
          if (!stored || stored.request_hash !== requestHash) throw errors.idempotencyKeyReused();
          return {
            statusCode: stored.response_status,
            body: stored.response_body as PaymentAnswer['body'],
            replayed: true,
          };
        }
        recorded = true;
        result = webhookResult(next);
        if (next.changes) events.orderStatusChanged(next.status);
        if (next.releasesUnits) unitsToRelease = order;
        logEvent(log, webhook, order, next);
        return { statusCode: next.statusCode, body, replayed: false };
      }
      throw errors.unavailable('the payment event (the order kept changing)');
    };

    try {
      answer = await applyEvent();
    } catch (err) {
      if (!(err instanceof AppError) || err.statusCode >= 500) throw err;
      answer = { statusCode: err.statusCode, body: err.body(), replayed: false };
      result = ERROR_RESULTS[err.code] ?? err.code.toLowerCase();
    }
    events.webhook(answer.replayed ? 'duplicate' : (result ?? 'unknown'));

    log.info(
      {
        idempotency_key: webhook.idempotency_key,
        order_id: webhook.order_id,
        event_type: webhook.event_type,
        result: answer.statusCode,
        replayed: answer.replayed,
      },
      'webhook processed',
    );
    if (unitsToRelease) {
      // Committed already; if Redis is away, order settlement returns the units later.
      await orders
        .releaseUnits(unitsToRelease, log)
        .catch((err: unknown) =>
          log.warn({ order_id: unitsToRelease?.id, err }, 'units of a failed payment left to order settlement'),
        );
    }
    if (!recorded) await recordDelivery(delivery, answer, log);
    return answer;
  }

  function logEvent(log: Logger, webhook: PaymentWebhook, order: OrderRow, next: Transition): void {
    const ids = { idempotency_key: webhook.idempotency_key, order_id: order.id, hold_id: order.hold_id };
    if (next.mismatch) {
      log.warn({ ...ids, ...next.mismatch }, 'payment amount or currency differs from the order: not applied');
    } else if (next.status === 'refund_required' && order.status === 'cancelled') {
      log.warn({ ...ids }, 'late payment for a cancelled order: refund required');
    } else if (next.releasesUnits) {
      log.info({ ...ids }, 'payment failed: order cancelled');
    } else if (next.statusCode === 409) {
      log.warn({ ...ids, status: order.status }, 'payment failure for an order already final: recorded, no change');
    }
  }

  /** Keeps a delivery that changed nothing (replay, refusal), with its answer, for ops. Never fails the request. */
  async function recordDelivery(delivery: PaymentDelivery, answer: PaymentAnswer, log: Logger): Promise<void> {
    const { webhook } = delivery;
    await paymentsRepo
      .recordDelivery(db, {
        idempotencyKey: webhook.idempotency_key,
        orderId: webhook.order_id,
        eventType: webhook.event_type,
        payload: webhook,
        signature: delivery.signature,
        responseStatus: answer.statusCode,
        responseBody: answer.body,
        replayed: answer.replayed,
      })
      .catch((err: unknown) =>
        log.warn({ idempotency_key: webhook.idempotency_key, err }, 'webhook delivery not recorded'),
      );
  }

  /**
   * One pass of delivery retention: deliveries for orders that do not exist are deleted once older than
   * WEBHOOK_RETAIN_SECONDS, a batch at a time (`more`: another batch is waiting).
   */
  async function purgeOrphanDeliveries(): Promise<{ more: boolean }> {
    const deleted = await paymentsRepo.purgeOrphanDeliveries(db, settings.webhookRetainMs, PURGE_BATCH);
    if (deleted > 0) deps.log.info({ deleted }, 'webhook deliveries for unknown orders purged');
    return { more: deleted === PURGE_BATCH };
  }

  return { handle, purgeOrphanDeliveries };
}

// Deliveries one retention step deletes: a short statement, however many are due.
const PURGE_BATCH = 500;

/** The result label of a delivery judged afresh: what it did to its order. */
function webhookResult(next: Transition): string {
  if (next.mismatch) return 'amount_mismatch';
  if (next.statusCode === 409) return 'already_final';
  return next.changes ? next.status : 'unchanged';
}

/** The result label of a refused delivery, by its error code (others: the code in lower case). */
const ERROR_RESULTS: Partial<Record<ErrorCode, string>> = {
  ORDER_NOT_FOUND: 'unknown_order',
  IDEMPOTENCY_KEY_REUSED: 'key_reused',
};

/** The fields of a 200 that recorded a delivery and changed nothing (a mismatched payment). */
function notApplied(next: Transition) {
  if (!next.mismatch) return {};
  const { amount_cents, currency, expected_amount_cents, expected_currency } = next.mismatch;
  return {
    applied: false as const,
    reason: 'PAYMENT_MISMATCH' as const,
    message:
      `paid ${amount_cents ?? '(no amount)'} ${currency ?? '(no currency)'}, the order is ` +
      `${expected_amount_cents} ${expected_currency}: recorded, the order is not paid`,
  };
}

/** The same delivery has the same fingerprint however its JSON was spaced or its keys ordered. */
function fingerprint(body: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
