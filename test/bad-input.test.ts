import t from 'tap';
import { buildTestApp, createProduct, admin, scanKeys } from './support/app.js';

interface BadRequest {
  name: string;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: string;
  payload?: string;
  headers?: Record<string, string>;
  status: number;
  code: string;
}

t.test('every kind of bad input answers its 4xx code and changes nothing', async (t) => {
  const { app, redis, config } = await buildTestApp(t, { MAX_QTY_PER_HOLD: 10, BODY_LIMIT_BYTES: 1024 });
  const product = await createProduct(app, { stock: 5 });
  const limited = await createProduct(app, { stock: 5, per_customer_limit: 1 });
  const json = { 'content-type': 'application/json' };
  const hold = (body: unknown, headers: Record<string, string> = {}) =>
    ({ method: 'POST', url: '/api/holds', payload: JSON.stringify(body), headers: { ...json, ...headers } }) as const;
  const p = product.id;

  const cases: BadRequest[] = [
    {
      name: 'malformed JSON',
      method: 'POST',
      url: '/api/holds',
      payload: '{"product_id": 1,',
      headers: json,
      status: 400,
      code: 'INVALID_JSON',
    },
    {
      name: 'empty JSON body',
      method: 'POST',
      url: '/api/holds',
      payload: '',
      headers: json,
      status: 400,
      code: 'INVALID_JSON',
    },
    { name: 'JSON null', ...hold(null), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'JSON array', ...hold([p, 1]), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'missing qty', ...hold({ product_id: p }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'missing product', ...hold({ qty: 1 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'qty as text', ...hold({ product_id: p, qty: '1' }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'product id as text', ...hold({ product_id: String(p), qty: 1 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'qty zero', ...hold({ product_id: p, qty: 0 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'qty negative', ...hold({ product_id: p, qty: -3 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'qty fractional', ...hold({ product_id: p, qty: 1.5 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'qty above MAX_QTY_PER_HOLD', ...hold({ product_id: p, qty: 11 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'qty huge', ...hold({ product_id: p, qty: 1e20 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'qty boolean', ...hold({ product_id: p, qty: true }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'product id zero', ...hold({ product_id: 0, qty: 1 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'product id negative', ...hold({ product_id: -1, qty: 1 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'product id beyond int4', ...hold({ product_id: 2 ** 31, qty: 1 }), status: 400, code: 'VALIDATION_ERROR' },
    { name: 'unknown field', ...hold({ product_id: p, qty: 1, price: 0 }), status: 400, code: 'VALIDATION_ERROR' },
    {
      name: 'empty customer id',
      ...hold({ product_id: p, qty: 1, customer_id: '' }),
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'customer id with spaces',
      ...hold({ product_id: p, qty: 1, customer_id: 'a b' }),
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'customer id too long',
      ...hold({ product_id: p, qty: 1, customer_id: 'c'.repeat(129) }),
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'customer id a number',
      ...hold({ product_id: p, qty: 1, customer_id: 42 }),
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'Idempotency-Key too long',
      ...hold({ product_id: p, qty: 1 }, { 'idempotency-key': 'k'.repeat(256) }),
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    { name: 'unknown product', ...hold({ product_id: 999_999, qty: 1 }), status: 404, code: 'PRODUCT_NOT_FOUND' },
    {
      name: 'limited product without customer',
      ...hold({ product_id: limited.id, qty: 1 }),
      status: 400,
      code: 'CUSTOMER_ID_REQUIRED',
    },
    {
      name: 'body over the limit',
      ...hold({ product_id: p, qty: 1, customer_id: 'x'.repeat(2000) }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: 'form content type',
      method: 'POST',
      url: '/api/holds',
      payload: `product_id=${p}&qty=1`,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    {
      name: 'text content type',
      method: 'POST',
      url: '/api/holds',
      payload: JSON.stringify({ product_id: p, qty: 1 }),
      headers: { 'content-type': 'text/plain' },
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    { name: 'malformed hold id', method: 'GET', url: '/api/holds/not-a-hold', status: 404, code: 'HOLD_NOT_FOUND' },
    {
      name: 'unknown hold id',
      method: 'GET',
      url: `/api/holds/${p}-AAAAAAAAAAAA`,
      status: 404,
      code: 'HOLD_NOT_FOUND',
    },
    {
      name: 'release of an unknown hold',
      method: 'DELETE',
      url: `/api/holds/${p}-AAAAAAAAAAAA`,
      status: 404,
      code: 'HOLD_NOT_FOUND',
    },
    {
      name: 'hold id of an unknown product',
      method: 'DELETE',
      url: '/api/holds/424242-AAAAAAAAAAAA',
      status: 404,
      code: 'HOLD_NOT_FOUND',
    },
    { name: 'product id not a number', method: 'GET', url: '/api/products/abc', status: 400, code: 'VALIDATION_ERROR' },
    { name: 'product id zero in path', method: 'GET', url: '/api/products/0', status: 400, code: 'VALIDATION_ERROR' },
    {
      name: 'unknown product in path',
      method: 'GET',
      url: '/api/products/999999',
      status: 404,
      code: 'PRODUCT_NOT_FOUND',
    },
    {
      name: 'list limit not a number',
      method: 'GET',
      url: '/api/products?limit=abc',
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'list limit too large',
      method: 'GET',
      url: '/api/products?limit=100000',
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'product without a name',
      method: 'POST',
      url: '/api/products',
      payload: JSON.stringify({ price_cents: 1, stock: 1 }),
      headers: { ...json, ...admin },
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'product with negative stock',
      method: 'POST',
      url: '/api/products',
      payload: JSON.stringify({ name: 'x', price_cents: 1, stock: -1 }),
      headers: { ...json, ...admin },
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'product with fractional price',
      method: 'POST',
      url: '/api/products',
      payload: JSON.stringify({ name: 'x', price_cents: 9.99, stock: 1 }),
      headers: { ...json, ...admin },
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'product with zero customer limit',
      method: 'POST',
      url: '/api/products',
      payload: JSON.stringify({ name: 'x', price_cents: 1, stock: 1, per_customer_limit: 0 }),
      headers: { ...json, ...admin },
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'stock as text',
      method: 'PUT',
      url: `/api/products/${p}/stock`,
      payload: JSON.stringify({ stock: '9' }),
      headers: { ...json, ...admin },
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'negative stock change',
      method: 'PUT',
      url: `/api/products/${p}/stock`,
      payload: JSON.stringify({ stock: -1 }),
      headers: { ...json, ...admin },
      status: 400,
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'stock change of unknown product',
      method: 'PUT',
      url: '/api/products/999999/stock',
      payload: JSON.stringify({ stock: 1 }),
      headers: { ...json, ...admin },
      status: 404,
      code: 'PRODUCT_NOT_FOUND',
    },
    { name: 'unknown route', method: 'GET', url: '/api/nothing-here', status: 404, code: 'NOT_FOUND' },
  ];

  // Rate-limit counters ({rate:<n>}) count every request that reaches a limited route, refused or not: one short-lived
  // key per route and client address, which is what bounds the rest. Everything else must stay as it was.
  const stateKeys = async () =>
    (await scanKeys(redis, `${config.REDIS_KEY_PREFIX}*`)).filter((key) => !key.includes('{rate:'));
  const before = await stateKeys();
  for (const c of cases) {
    const response = await app.inject({ method: c.method, url: c.url, payload: c.payload, headers: c.headers });
    const body = response.json<{ code: string; message: string }>();
    t.equal(response.statusCode, c.status, `${c.name}: ${c.status}`);
    t.equal(body.code, c.code, `${c.name}: ${c.code}`);
    t.type(body.message, 'string', `${c.name}: has a message`);
  }

  const after = await stateKeys();
  t.same(after.sort(), before.sort(), 'no Redis key was created by a refused request');
  const counters = await scanKeys(redis, `${config.REDIS_KEY_PREFIX}{rate:*`);
  t.ok(counters.length <= 2, `at most one rate counter per limited route for the one client (${counters.join(', ')})`);
  for (const id of [product.id, limited.id]) {
    t.match(
      (await app.inject({ method: 'GET', url: `/api/products/${id}` })).json(),
      { stock: 5, held: 0, available_stock: 5 },
      `product ${id} unchanged`,
    );
  }
  t.equal((await app.db.selectFrom('products').select('id').execute()).length, 2, 'no product was created');
});
