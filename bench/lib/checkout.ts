/**
 * The checkout request sequence, driven unchanged against the service (scenarios/checkout.ts) and against the
 * seed's design (the `seed checkout` reference): the two are measured with the same requests.
 */
import type autocannon from 'autocannon';
import { signPayload } from '../../src/domain/signatures.js';
import { JSON_HEADERS, runLoad, type LoadSummary } from './load.js';
import { holdRequest } from './scenario.js';

/** What one virtual user carries from one step of its checkout to the next. */
interface Checkout {
  holdId?: string;
  orderId?: number;
}

// autocannon starts a connection's sequence over when setupRequest returns nothing (its types do not say so):
// a user whose hold or order failed begins a new checkout instead of sending a request bound to fail.
const START_OVER = undefined as unknown as autocannon.Request;

export interface CheckoutLoadSpec {
  title: string;
  url: string;
  productId: number;
  /** Signs the webhooks; none: sent unsigned. */
  webhookSecret: string | undefined;
  connections: number;
  duration: number;
  pid?: number;
}

export interface CheckoutLoad {
  load: LoadSummary;
  /** Holds granted (201). */
  holds: number;
  /** Webhooks answered `paid`: complete checkouts. */
  paid: number;
  /** paid ÷ the load's wall time. */
  checkoutsPerSecond: number;
}

/**
 * Each virtual user (connection), over and over: hold one unit, turn the hold into an order, send the payment
 * provider's signed `success` webhook for it. A checkout is three requests.
 */
export async function runCheckouts(spec: CheckoutLoadSpec): Promise<CheckoutLoad> {
  const { webhookSecret: secret } = spec;
  const runTag = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  let holds = 0;
  let paid = 0;
  const load = await runLoad({
    title: spec.title,
    url: spec.url,
    connections: spec.connections,
    duration: spec.duration,
    expected: [200, 201],
    pid: spec.pid,
    requests: [
      {
        ...holdRequest(spec.productId),
        onResponse: (status, body, context: Checkout) => {
          context.holdId = undefined;
          if (status !== 201) return;
          holds++;
          context.holdId = (JSON.parse(body) as { hold_id: string }).hold_id;
        },
      },
      {
        method: 'POST',
        path: '/api/orders',
        headers: { ...JSON_HEADERS },
        setupRequest: (request, context: Checkout) =>
          context.holdId
            ? { ...request, body: JSON.stringify({ hold_id: context.holdId, payment_method: 'card' }) }
            : START_OVER,
        onResponse: (status, body, context: Checkout) => {
          context.orderId =
            status === 201 || status === 200 ? (JSON.parse(body) as { order_id: number }).order_id : undefined;
        },
      },
      {
        method: 'POST',
        path: '/api/webhooks/payment',
        setupRequest: (request, context: Checkout) => {
          if (context.orderId === undefined) return START_OVER;
          const body = JSON.stringify({
            idempotency_key: `bench-${runTag}-${context.orderId}`,
            order_id: context.orderId,
            event_type: 'success',
          });
          return {
            ...request,
            body,
            headers: secret ? { ...JSON_HEADERS, 'x-signature': signPayload(body, secret) } : { ...JSON_HEADERS },
          };
        },
        onResponse: (status, body) => {
          if (status === 200 && (JSON.parse(body) as { status?: string }).status === 'paid') paid++;
        },
      },
    ],
  });
  return { load, holds, paid, checkoutsPerSecond: paid / load.seconds };
}
