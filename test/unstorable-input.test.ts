import { sql } from 'kysely';
import t from 'tap';
import { signPayload } from '../src/domain/signatures.js';
import { admin, buildTestApp, createProduct, scanKeys, type TestApp } from './support/app.js';

const SECRET = 'whsec_unstorable';
const LONE = '\\ud800'; // as JSON writes it: what reaches the parser
const NUL = '\\u0000';

/** Rows of every table and the keys under the app's prefix: a refusal changes neither. */
async function stores({ app, redis, prefix }: TestApp) {
  const tables = ['products', 'orders', 'payments', 'processed_webhooks', 'webhook_deliveries'];
  const { rows } = await sql
    .raw(`SELECT ${tables.map((table) => `(SELECT count(*)::int FROM ${table}) AS ${table}`).join(', ')}`)
    .execute(app.db);
  return { rows, keys: (await scanKeys(redis, `${prefix}*`)).sort() };
}

t.test('lone surrogates, NULs and deep nesting in any field of any route are a 400, never a 500', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
  const { app } = service;
  const product = await createProduct(app, { stock: 5 });
  const hold = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } });
  const holdId = hold.json<{ hold_id: string }>().hold_id;
  const order = await app.inject({ method: 'POST', url: '/api/orders', payload: { hold_id: holdId } });
  const orderId = order.json<{ order_id: number }>().order_id;
  const before = await stores(service);

  const deep = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
  const deepObject = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
  const webhook = (extra: string, key = '"evt_bad"') =>
    `{"idempotency_key":${key},"order_id":${orderId},"event_type":"success"${extra}}`;
  const cases: { name: string; method: 'POST' | 'PUT'; url: string; body: string; signed?: boolean }[] = [
    {
      name: 'product name',
      method: 'POST',
      url: '/api/products',
      body: `{"name":"a${LONE}b","price_cents":1,"stock":1}`,
    },
    {
      name: 'product name, low half',
      method: 'POST',
      url: '/api/products',
      body: `{"name":"\\udc00","price_cents":1,"stock":1}`,
    },
    {
      name: 'product name NUL',
      method: 'POST',
      url: '/api/products',
      body: `{"name":"a${NUL}","price_cents":1,"stock":1}`,
    },
    {
      name: 'product field name',
      method: 'POST',
      url: '/api/products',
      body: `{"${LONE}":1,"name":"a","price_cents":1,"stock":1}`,
    },
    {
      name: 'product deep',
      method: 'POST',
      url: '/api/products',
      body: `{"name":${deep(5000)},"price_cents":1,"stock":1}`,
    },
    { name: 'stock deep', method: 'PUT', url: `/api/products/${product.id}/stock`, body: deepObject(2500) },
    {
      name: 'hold customer',
      method: 'POST',
      url: '/api/holds',
      body: `{"product_id":${product.id},"qty":1,"customer_id":"${LONE}"}`,
    },
    {
      name: 'hold field name',
      method: 'POST',
      url: '/api/holds',
      body: `{"product_id":${product.id},"qty":1,"x${LONE}":1}`,
    },
    { name: 'hold deep', method: 'POST', url: '/api/holds', body: deep(5000) },
    { name: 'order hold id', method: 'POST', url: '/api/orders', body: `{"hold_id":"${LONE}"}` },
    {
      name: 'order payment method',
      method: 'POST',
      url: '/api/orders',
      body: `{"hold_id":"${holdId}","payment_method":"c${LONE}"}`,
    },
    { name: 'order deep', method: 'POST', url: '/api/orders', body: deepObject(2500) },
    {
      name: 'webhook extra field',
      method: 'POST',
      url: '/api/webhooks/payment',
      body: webhook(`,"note":"${LONE}"`),
      signed: true,
    },
    {
      name: 'webhook extra key',
      method: 'POST',
      url: '/api/webhooks/payment',
      body: webhook(`,"${LONE}":1`),
      signed: true,
    },
    {
      name: 'webhook nested field',
      method: 'POST',
      url: '/api/webhooks/payment',
      body: webhook(`,"meta":{"a":["${LONE}"]}`),
      signed: true,
    },
    {
      name: 'webhook NUL',
      method: 'POST',
      url: '/api/webhooks/payment',
      body: webhook(`,"note":"${NUL}"`),
      signed: true,
    },
    {
      name: 'webhook key',
      method: 'POST',
      url: '/api/webhooks/payment',
      body: webhook('', `"k${LONE}"`),
      signed: true,
    },
    {
      name: 'webhook 5000 deep',
      method: 'POST',
      url: '/api/webhooks/payment',
      body: webhook(`,"x":${deep(5000)}`),
      signed: true,
    },
    {
      name: 'webhook 33 deep',
      method: 'POST',
      url: '/api/webhooks/payment',
      body: webhook(`,"x":${deep(32)}`),
      signed: true,
    },
  ];
  for (const c of cases) {
    const headers: Record<string, string> = { 'content-type': 'application/json', ...admin };
    if (c.signed) headers['x-signature'] = signPayload(c.body, SECRET);
    const answer = await app.inject({ method: c.method, url: c.url, payload: c.body, headers });
    t.equal(answer.statusCode, 400, `${c.name}: 400`);
    t.equal(answer.json().code, 'VALIDATION_ERROR', `${c.name}: VALIDATION_ERROR`);
  }
  t.same(await stores(service), before, 'nothing was written');

  // Valid Unicode (a surrogate pair) and nesting within the bound are kept as sent.
  const emoji = await app.inject({
    method: 'POST',
    url: '/api/products',
    headers: admin,
    payload: { name: 'caf\u00e9 \ud83d\ude00', price_cents: 1, stock: 1 },
  });
  t.equal(emoji.statusCode, 201);
  t.equal(emoji.json().name, 'caf\u00e9 \ud83d\ude00');
  const nested = webhook(`,"x":${deep(30)},"y":"\\ud83d\\ude00"`, '"evt_nested"');
  const paid = await app.inject({
    method: 'POST',
    url: '/api/webhooks/payment',
    payload: nested,
    headers: { 'content-type': 'application/json', 'x-signature': signPayload(nested, SECRET) },
  });
  t.equal(paid.statusCode, 200, 'a signed body nested 31 deep with an emoji pays');
});

t.test('every id at its limit is read, one past it is a 400', async (t) => {
  const { app } = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
  const product = await createProduct(app, { stock: 5 });
  const status = async (method: 'GET' | 'POST', url: string, payload?: unknown, headers = {}) =>
    (await app.inject({ method, url, payload: payload as object, headers })).statusCode;
  t.equal(await status('GET', `/api/holds/${'h'.repeat(64)}`), 404, 'hold id of 64: looked up');
  t.equal(await status('GET', `/api/holds/${'h'.repeat(65)}`), 400, 'hold id of 65: refused');
  t.equal(await status('POST', '/api/orders', { hold_id: 'h'.repeat(64) }), 404);
  t.equal(await status('POST', '/api/orders', { hold_id: 'h'.repeat(65) }), 400);
  const hold = (key: string) =>
    status('POST', '/api/holds', { product_id: product.id, qty: 1 }, { 'idempotency-key': key });
  t.equal(await hold('k'.repeat(255)), 201, 'Idempotency-Key of 255: taken');
  t.equal(await hold('k'.repeat(256)), 400, 'Idempotency-Key of 256: refused');
  const holdFor = (customer: string) =>
    status('POST', '/api/holds', { product_id: product.id, qty: 1, customer_id: customer });
  t.equal(await holdFor('c'.repeat(128)), 201, 'customer id of 128: taken');
  t.equal(await holdFor('c'.repeat(129)), 400, 'customer id of 129: refused');
  const pay = (key: string, orderId: number) =>
    status('POST', '/api/webhooks/payment', { idempotency_key: key, order_id: orderId, event_type: 'success' });
  t.equal(await pay('k'.repeat(255), 1e16), 404, 'webhook key of 255 and order id 10^16: judged (no such order)');
  t.equal(await pay('k'.repeat(256), 1), 400, 'webhook key of 256: refused');
  t.equal(await pay('k', 1e16 + 2), 400, 'order id past 10^16: refused');
  t.equal(await status('GET', '/api/products/2147483647'), 404, 'product id at int4: looked up');
  t.equal(await status('GET', '/api/products/2147483648'), 400, 'product id past int4: refused');
  t.equal(await status('GET', '/api/orders/10000000000000000'), 404, 'order id 10^16: looked up');
  // 10000000000000001 reads as 10^16 (past 2^53 a number is inexact, src/schemas/order.ts): the next one is past it.
  t.equal(await status('GET', '/api/orders/10000000000000002'), 400, 'order id past 10^16: refused');
  t.equal(
    await status('GET', `/api/orders/${'9'.repeat(400)}`),
    400,
    'an order id of 400 digits: 400 (the router reads no parameter past 100 characters: src/plugins/errors.ts)',
  );
});
