/**
 * Ids at and past the limits of their Postgres columns, wherever a client can put one: products.id is an int4
 * (at most 2147483647), orders.id an int8 of which the service accepts up to 10^16. Every one answers 4xx, never
 * 500: out of range is 400 VALIDATION_ERROR, like any other schema failure; in range but unknown is 404.
 */
import t from 'tap';
import { admin, buildTestApp, createProduct } from './support/app.js';

const INT4_MAX = 2_147_483_647;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

interface Answer {
  status: number;
  code: string;
}

t.test('product ids in paths and query strings: out of range is 400, unknown is 404, never 500', async (t) => {
  const { app } = await buildTestApp(t);
  const product = await createProduct(app, { stock: 5 });
  const other = await createProduct(app, { stock: 5 });
  const call = async (method: 'GET' | 'PUT', url: string, payload?: unknown): Promise<Answer> => {
    const response = await app.inject({ method, url, payload: payload as object, headers: payload ? admin : {} });
    return { status: response.statusCode, code: response.json<{ code?: string }>().code ?? '' };
  };
  const validation = { status: 400, code: 'VALIDATION_ERROR' };
  const notFound = { status: 404, code: 'PRODUCT_NOT_FOUND' };

  t.same(await call('GET', `/api/products/${INT4_MAX}`), notFound, 'the largest int4 is a product id no product has');
  for (const id of [String(INT4_MAX + 1), '9999999999', '99999999999999999999']) {
    t.same(await call('GET', `/api/products/${id}`), validation, `GET /api/products/${id}`);
    t.same(await call('PUT', `/api/products/${id}/stock`, { stock: 1 }), validation, `PUT /api/products/${id}/stock`);
  }
  t.same(
    await call('PUT', `/api/products/${INT4_MAX}/stock`, { stock: 1 }),
    notFound,
    'stock change of the largest int4 id',
  );

  // Only plain decimal digits are read as a number: no other spelling of an id reaches a store.
  for (const spelling of ['0x10', '1e3', `0${product.id}`, '%20' + product.id, `${product.id}.0`, '-1', '+1']) {
    t.same(await call('GET', `/api/products/${spelling}`), validation, `GET /api/products/${spelling}`);
  }
  t.match((await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json(), {
    id: product.id,
    stock: 5,
  });

  for (const afterId of [String(INT4_MAX + 1), '9999999999', '0x1', '1e1', '']) {
    t.same(await call('GET', `/api/products?after_id=${afterId}`), validation, `after_id=${afterId}`);
  }
  const after = await app.inject({ method: 'GET', url: `/api/products?after_id=${product.id}` });
  t.same(
    after.json<{ id: number }[]>().map((p) => p.id),
    [other.id],
    'after_id lists the products after it',
  );
  t.same(
    (await app.inject({ method: 'GET', url: `/api/products?after_id=${INT4_MAX}` })).json(),
    [],
    'nothing after the largest id',
  );

  for (const limit of ['5000', '1001', '0', '1e3', '10.0', '-1']) {
    t.same(await call('GET', `/api/products?limit=${limit}`), validation, `limit=${limit} is refused, not cut down`);
  }
  t.equal(
    (await app.inject({ method: 'GET', url: '/api/products?limit=1000' })).statusCode,
    200,
    'limit=1000 is the largest page',
  );
  t.same(
    (await app.inject({ method: 'GET', url: '/api/products?limit=1' })).json<{ id: number }[]>().map((p) => p.id),
    [product.id],
  );
  t.same(
    (await app.inject({ method: 'GET', url: '/api/products?limit=1&limit=2' })).statusCode,
    400,
    'a repeated limit is refused',
  );
});

t.test('hold ids naming a product past int4 are unknown holds (404), and reach no store with that id', async (t) => {
  const { app } = await buildTestApp(t);
  for (const holdId of [`${INT4_MAX + 1}-AAAAAAAAAAAA`, '9999999999-AAAAAAAAAAAA']) {
    for (const [method, url, payload] of [
      ['GET', `/api/holds/${holdId}`, undefined],
      ['DELETE', `/api/holds/${holdId}`, undefined],
      ['POST', '/api/orders', { hold_id: holdId }],
    ] as const) {
      const response = await app.inject({ method, url, payload });
      t.same(
        { status: response.statusCode, code: response.json().code },
        { status: 404, code: 'HOLD_NOT_FOUND' },
        `${method} ${url} ${holdId}`,
      );
    }
  }
  const body = { product_id: INT4_MAX + 1, qty: 1 };
  t.equal(
    (await app.inject({ method: 'POST', url: '/api/holds', payload: body })).statusCode,
    400,
    'a hold on a product past int4 is refused',
  );
});

t.test('order ids in paths and webhooks: past 10^16 is 400, unknown is 404, never 500', async (t) => {
  const { app } = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
  const product = await createProduct(app, { stock: 5 });
  const hold = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } });
  const order = await app.inject({ method: 'POST', url: '/api/orders', payload: { hold_id: hold.json().hold_id } });
  t.equal(order.statusCode, 201);
  const orderId = order.json<{ order_id: number }>().order_id;
  t.match((await app.inject({ method: 'GET', url: `/api/orders/${orderId}`, headers: admin })).json(), {
    order_id: orderId,
    status: 'pending_payment',
  });

  const read = async (id: string): Promise<Answer> => {
    const response = await app.inject({ method: 'GET', url: `/api/orders/${id}`, headers: admin });
    return { status: response.statusCode, code: response.json<{ code?: string }>().code ?? '' };
  };
  const pay = async (id: number): Promise<Answer> => {
    const payload = { idempotency_key: `pay-${id}`, order_id: id, event_type: 'success' };
    const response = await app.inject({ method: 'POST', url: '/api/webhooks/payment', payload });
    return { status: response.statusCode, code: response.json<{ code?: string }>().code ?? '' };
  };
  const notFound = { status: 404, code: 'ORDER_NOT_FOUND' };
  const validation = { status: 400, code: 'VALIDATION_ERROR' };
  for (const id of [INT4_MAX, INT4_MAX + 1, MAX_SAFE, MAX_SAFE + 1, 1e16]) {
    t.same(await read(String(id)), notFound, `GET /api/orders/${id}`);
    t.same(await pay(id), notFound, `webhook for order ${id}`);
  }
  t.same(await read('9999999999999999'), notFound, 'GET /api/orders/9999999999999999 (16 digits)');
  for (const id of [
    '10000000000000002',
    '9223372036854775807',
    '9223372036854775808',
    '99999999999999999999',
    '0x10',
    '1e3',
    '0',
  ]) {
    t.same(await read(id), validation, `GET /api/orders/${id}`);
  }
  for (const id of [1e16 + 2, 2 ** 63, 1e20]) t.same(await pay(id), validation, `webhook for order ${id}`);
  t.same(await pay(orderId), { status: 200, code: '' }, 'the real order is paid');
});
