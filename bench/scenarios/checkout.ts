import type autocannon from 'autocannon';
import { signPayload } from '../../src/domain/signatures.js';
import { createProduct } from '../lib/api.js';
import { checkInvariants } from '../lib/invariants.js';
import { describeLoad, JSON_HEADERS, runLoad } from '../lib/load.js';
import { holdRequest, HUGE_STOCK, type Scenario } from '../lib/scenario.js';

/** What one virtual user carries from one step of its checkout to the next. */
interface Checkout {
  holdId?: string;
  orderId?: number;
}

// autocannon starts a connection's sequence over when setupRequest returns nothing (its types do not say so):
// a user whose hold or order failed begins a new checkout instead of sending a request bound to fail.
const START_OVER = undefined as unknown as autocannon.Request;

/**
 * Each virtual user (connection), over and over: hold one unit, turn the hold into an order, send the payment
 * provider's signed `success` webhook for it. A checkout is three requests; the table's requests/s and latencies
 * are per request, checkouts/s counts webhooks answered `paid`.
 */
export const checkout: Scenario = {
  name: 'checkout',
  summary: 'each user: hold → order → signed success webhook, repeated',
  async run({ settings, deployment, log }) {
    const productId = await createProduct(deployment.url, deployment.adminToken, {
      name: 'bench checkout',
      stock: HUGE_STOCK,
      price_cents: 4_999,
    });
    const secret = deployment.webhookSecret;
    const runTag = Date.now().toString(36);
    let holds = 0;
    let paid = 0;
    const load = await runLoad({
      title: 'checkout',
      url: deployment.url,
      connections: settings.connections,
      duration: settings.duration,
      expected: [200, 201],
      pid: deployment.pid,
      requests: [
        {
          ...holdRequest(productId),
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
    const checkoutsPerSecond = paid / load.seconds;
    log(`checkout: ${describeLoad(load)}; ${Math.round(checkoutsPerSecond)} checkouts/s`);
    const invariants = await checkInvariants(deployment, [productId], new Map([[productId, holds]]));
    return {
      name: 'checkout',
      load,
      figures: { checkoutsPerSecond, unitsGranted: holds },
      notes: [
        `${Math.round(checkoutsPerSecond).toLocaleString('en-US')} checkouts/s (${paid.toLocaleString('en-US')} paid of ${holds.toLocaleString('en-US')} holds; 3 requests each)`,
      ],
      invariants,
    };
  },
};
