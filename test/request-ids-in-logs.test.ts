import t from 'tap';
import { buildTestApp, createProduct, listen } from './support/app.js';
import { request, sendRaw } from './support/http.js';
import { logLines } from './support/log-lines.js';
import { signPayload } from '../src/domain/signatures.js';

interface LogLine {
  level: number;
  msg: string;
  reqId?: string;
  hold_id?: string;
  order_id?: number;
  product_id?: number;
}

interface Body {
  hold_id?: string;
  order_id?: number;
  status?: string;
}

const SECRET = 'whsec_request_log';

t.test('the lines about a hold, an order and a payment carry the X-Request-Id the client sent', async (t) => {
  const { destination, lines } = logLines<LogLine>();
  const service = await buildTestApp(t, { LOG_LEVEL: 'info', WEBHOOK_SECRET: SECRET }, { logDestination: destination });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 3, price_cents: 2500 });
  const as = (id: string) => ({ 'x-request-id': id });
  const webhook = async (id: string, fields: Record<string, unknown>) => {
    const body = JSON.stringify(fields);
    return sendRaw<Body>(base, 'POST', '/api/webhooks/payment', body, {
      'content-type': 'application/json',
      'x-signature': signPayload(body, SECRET),
      ...as(id),
    });
  };

  const first = await request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, as('buyer-1.hold'));
  const second = await request<Body>(
    base,
    'POST',
    '/api/holds',
    { product_id: product.id, qty: 1 },
    as('buyer-2.hold'),
  );
  const third = await request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, as('buyer-3.hold'));
  t.same([first.status, second.status, third.status], [201, 201, 201]);
  const refused = await request(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, as('buyer-4.hold'));
  t.equal(refused.status, 409, 'sold out');
  t.equal(
    (await request(base, 'DELETE', `/api/holds/${third.body.hold_id}`, undefined, as('buyer-3.release'))).status,
    200,
  );

  const order = await request<Body>(base, 'POST', '/api/orders', { hold_id: first.body.hold_id }, as('buyer-1.order'));
  t.equal(order.status, 201);
  const short = await request<Body>(base, 'POST', '/api/orders', { hold_id: second.body.hold_id }, as('buyer-2.order'));
  t.equal(short.status, 201);
  const paid = await webhook('psp-delivery-1', {
    idempotency_key: 'evt_1',
    order_id: order.body.order_id,
    event_type: 'success',
    amount_cents: 2500,
  });
  t.equal(paid.body.status, 'paid');
  const mismatch = await webhook('psp-delivery-2', {
    idempotency_key: 'evt_2',
    order_id: short.body.order_id,
    event_type: 'success',
    amount_cents: 1,
  });
  t.not(mismatch.body.status, 'paid', 'one cent does not pay the order');
  const failed = await webhook('psp-delivery-3', {
    idempotency_key: 'evt_3',
    order_id: short.body.order_id,
    event_type: 'failure',
  });
  t.equal(failed.body.status, 'cancelled');

  const line = (msg: string | RegExp, reqId: string) =>
    lines.find((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)) && l.reqId === reqId);
  for (const [msg, reqId] of [
    ['hold created', 'buyer-1.hold'],
    ['insufficient stock', 'buyer-4.hold'],
    ['hold released', 'buyer-3.release'],
    ['order created from hold', 'buyer-1.order'],
    ['webhook processed', 'psp-delivery-1'],
    [/payment amount or currency differs/, 'psp-delivery-2'],
    ['payment failed: order cancelled', 'psp-delivery-3'],
    ['product created', undefined],
  ] as const) {
    if (reqId === undefined) {
      t.ok(
        lines.some((l) => l.msg === msg && typeof l.reqId === 'string' && l.reqId.length > 0),
        `${msg}: with the id made for a request that sent none`,
      );
    } else {
      t.ok(line(msg, reqId), `${String(msg)}: logged with reqId ${reqId}`);
    }
  }
  t.match(line('hold created', 'buyer-1.hold'), { hold_id: first.body.hold_id, product_id: product.id });
  t.match(line('order created from hold', 'buyer-1.order'), {
    hold_id: first.body.hold_id,
    order_id: order.body.order_id,
  });

  const aboutRequests = lines.filter((l) => l.hold_id !== undefined || l.order_id !== undefined);
  t.ok(aboutRequests.length >= 8, `${aboutRequests.length} lines name a hold or an order`);
  t.same(
    aboutRequests.filter((l) => l.reqId === undefined).map((l) => l.msg),
    [],
    'every one of them carries a request id',
  );
});

t.test('a request logs nothing of its own below LOG_LEVEL, and the lines it writes above it are whole', async (t) => {
  const { destination, lines } = logLines<LogLine>();
  const service = await buildTestApp(t, { LOG_LEVEL: 'warn' }, { logDestination: destination });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 1 });
  t.equal(
    (await request(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, { 'x-request-id': 'a' })).status,
    201,
  );
  t.equal(
    (await request(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, { 'x-request-id': 'b' })).status,
    409,
  );
  t.same(
    lines.filter((l) => l.reqId === 'a'),
    [],
    'no info line for the granted hold',
  );
  t.match(
    lines.find((l) => l.reqId === 'b'),
    { level: 40, msg: 'insufficient stock', product_id: product.id },
  );
});
