/**
 * A full checkout per virtual user, over and over: hold one unit, turn the hold into an order, send a signed
 * success webhook for it. Against a running service:
 *
 *   BENCH_URL=http://127.0.0.1:3000 BENCH_PRODUCT_ID=4 WEBHOOK_SECRET=whsec_test \
 *     npx tsx bench/checkout.ts [--connections 100] [--duration 10]
 *
 * Each checkout is three requests; autocannon's figures are per request, the checkout rate is a third of them.
 */
import autocannon from 'autocannon';
import { parseArgs } from 'node:util';
import { signPayload } from '../src/domain/signatures.js';

const { values } = parseArgs({
  options: { connections: { type: 'string', default: '100' }, duration: { type: 'string', default: '10' } },
});
const url = process.env.BENCH_URL ?? 'http://127.0.0.1:3000';
const productId = Number(process.env.BENCH_PRODUCT_ID ?? 4);
const secret = (process.env.WEBHOOK_SECRET ?? '').split(',')[0] ?? '';
const json = { 'content-type': 'application/json' };

interface Checkout {
  holdId?: string;
  orderId?: number;
}

const result = await autocannon({
  url,
  connections: Number(values.connections),
  duration: Number(values.duration),
  requests: [
    {
      method: 'POST',
      path: '/api/holds',
      headers: json,
      body: JSON.stringify({ product_id: productId, qty: 1 }),
      onResponse: (status, body, context: Checkout) => {
        context.holdId = status === 201 ? (JSON.parse(body) as { hold_id: string }).hold_id : undefined;
      },
    },
    {
      method: 'POST',
      path: '/api/orders',
      headers: json,
      setupRequest: (request, context: Checkout) => ({ ...request, body: JSON.stringify({ hold_id: context.holdId ?? 'none' }) }),
      onResponse: (status, body, context: Checkout) => {
        context.orderId = status < 300 ? (JSON.parse(body) as { order_id: number }).order_id : undefined;
      },
    },
    {
      method: 'POST',
      path: '/api/webhooks/payment',
      setupRequest: (request, context: Checkout) => {
        const body = JSON.stringify({ idempotency_key: `bench-${context.orderId}`, order_id: context.orderId ?? 0, event_type: 'success' });
        return { ...request, body, headers: secret ? { ...json, 'x-signature': signPayload(body, secret) } : json };
      },
    },
  ],
});

const statuses = Object.entries(result.statusCodeStats ?? {}).map(([code, s]) => `${code}: ${s.count}`).join(', ');
process.stdout.write(
  `${autocannon.printResult(result)}\n` +
    `requests/s (mean ${result.requests.average}, median ${result.requests.p50}); ` +
    `checkouts/s ≈ ${(result.requests.average / 3).toFixed(0)}; ` +
    `latency per request p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms; status codes ${statuses}; ` +
    `errors ${result.errors}, timeouts ${result.timeouts}\n`,
);
