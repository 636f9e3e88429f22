import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import * as ordersRepo from '../db/orders.js';
import * as paymentsRepo from '../db/payments.js';
import type { Database, OrderRow, OrderStatus, PaymentStatus } from '../db/schema.js';
import { AppError, errors, type ErrorBody } from '../errors.js';
import type { Logger } from '../log.js';
import type { PaymentOutcome, PaymentWebhook } from '../schemas/order.js';
import type { OrderDesk } from './orders.js';

export interface PaymentDelivery {
  webhook: PaymentWebhook & Record<string, unknown>;
  signature: 'valid' | 'unsigned';
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
}

/** The one table of payment events against order states. */
function transition(order: OrderRow, event: 'success' | 'failure'): Transition {
  const same = { status: order.status, paymentStatus: order.payment_status, changes: false, releasesUnits: false };
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
 * Payment webhooks: each delivery's effect and answer are committed in one Postgres statement, keyed by the
 * provider's idempotency key, before anything is answered. A key seen before is answered from what was stored;
 * concurrent copies queue on the order's row lock and are answered the same way.
 */
export function createPaymentDesk(deps: { db: Kysely<Database>; orders: OrderDesk; log: Logger }) {
  const { db, orders, log } = deps;

  async function handle(delivery: PaymentDelivery): Promise<PaymentAnswer> {
    const { webhook } = delivery;
    const requestHash = fingerprint(webhook);
    let answer: PaymentAnswer;
    let recorded = false;
    let unitsToRelease: OrderRow | undefined;

    // Judged against the order as read, applied only if the order is still so (one statement); an order that
    // changed in between (a concurrent event, a cancellation) is read and judged again. An order changes state
    // at most twice, so a few rounds always suffice.
    const applyEvent = async (): Promise<PaymentAnswer> => {
      for (let round = 0; round < MAX_JUDGEMENTS; round++) {
        const order = await ordersRepo.findOrderRow(db, webhook.order_id);
        if (!order) {
          // Unknown order (the webhook came first): nothing is written, so the key stays unused.
          const stored = await paymentsRepo.storedAnswer(db, webhook.idempotency_key);
          throw stored ? errors.idempotencyKeyReused() : errors.orderNotFound(webhook.order_id);
        }
        const next = transition(order, webhook.event_type);
        const body: PaymentAnswer['body'] =
          next.statusCode === 200
            ? { order_id: order.id, status: next.status, payment_status: next.paymentStatus }
            : errors.orderAlreadyFinal(order.id, order.status).body();
        const { matched, fresh } = await paymentsRepo.recordPaymentEvent(db, {
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
        if (next.releasesUnits) unitsToRelease = order;
        logEvent(webhook, order, next);
        return { statusCode: next.statusCode, body, replayed: false };
      }
      throw errors.unavailable('the payment event (the order kept changing)');
    };

    try {
      answer = await applyEvent();
    } catch (err) {
      if (!(err instanceof AppError) || err.statusCode >= 500) throw err;
      answer = { statusCode: err.statusCode, body: err.body(), replayed: false };
    }

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
        .releaseUnits(unitsToRelease)
        .catch((err: unknown) =>
          log.warn({ order_id: unitsToRelease?.id, err }, 'units of a failed payment left to order settlement'),
        );
    }
    if (!recorded) await recordDelivery(delivery, answer);
    return answer;
  }

  function logEvent(webhook: PaymentWebhook, order: OrderRow, next: Transition): void {
    const ids = { idempotency_key: webhook.idempotency_key, order_id: order.id, hold_id: order.hold_id };
    if (next.status === 'refund_required' && order.status === 'cancelled') {
      log.warn({ ...ids }, 'late payment for a cancelled order: refund required');
    } else if (next.releasesUnits) {
      log.info({ ...ids }, 'payment failed: order cancelled');
    } else if (next.statusCode === 409) {
      log.warn({ ...ids, status: order.status }, 'payment failure for an order already final: recorded, no change');
    }
  }

  /** Keeps a delivery that changed nothing (replay, refusal), with its answer, for ops. Never fails the request. */
  async function recordDelivery(delivery: PaymentDelivery, answer: PaymentAnswer): Promise<void> {
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

  return { handle };
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
