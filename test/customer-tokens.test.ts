import { SignJWT, UnsecuredJWT } from 'jose';
import t from 'tap';
import { placeHold, productState } from './support/api.js';
import { admin, buildTestApp, createProduct, listen } from './support/app.js';
import { request } from './support/http.js';
import { asCustomer, CUSTOMER_SECRET, customerToken } from './support/tokens.js';

interface Body {
  code?: string;
  hold_id?: string;
  order_id?: number;
  customer_id?: string | null;
  status?: string;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** The service with customer tokens on. */
async function withTokens(t: Parameters<typeof buildTestApp>[0]) {
  const service = await buildTestApp(t, { CUSTOMER_TOKEN_SECRET: CUSTOMER_SECRET });
  return { ...service, base: await listen(service.app) };
}

t.test(
  'ten made-up customer ids cannot pass a per-customer limit of 2 when customers prove who they are',
  async (t) => {
    const { app, base } = await withTokens(t);
    const product = await createProduct(app, { stock: 100, per_customer_limit: 2 });

    for (let i = 0; i < 10; i++) {
      const claimed = await request<Body>(base, 'POST', '/api/holds', {
        product_id: product.id,
        qty: 2,
        customer_id: `made-up-${i}`,
      });
      t.equal(claimed.status, 401, `made-up-${i}: 401`);
      t.equal(claimed.body.code, 'CUSTOMER_TOKEN_REQUIRED');
    }
    const nameless = await request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 });
    t.equal(nameless.status, 401, 'a hold naming nobody on a limited product: 401');
    t.equal(nameless.body.code, 'CUSTOMER_TOKEN_REQUIRED');

    // A token of one's own does not let one buy for someone else, nor past one's own limit.
    const carol = await asCustomer('carol');
    const forged = await request<Body>(
      base,
      'POST',
      '/api/holds',
      { product_id: product.id, qty: 1, customer_id: 'dave' },
      carol,
    );
    t.equal(forged.status, 403);
    t.equal(forged.body.code, 'CUSTOMER_MISMATCH');
    const first = await request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 2 }, carol);
    t.equal(first.status, 201);
    t.equal(first.body.customer_id, 'carol', 'the hold is for the token’s customer');
    const same = await request<Body>(
      base,
      'POST',
      '/api/holds',
      { product_id: product.id, qty: 1, customer_id: 'carol' },
      carol,
    );
    t.equal(same.status, 409);
    t.equal(same.body.code, 'CUSTOMER_LIMIT_EXCEEDED');
    t.match(await productState(base, product.id), { held: 2, available_stock: 98 }, 'only carol’s 2 units are held');

    // The admin token keeps working alongside: back-office holds for a named customer.
    const backOffice = await request<Body>(
      base,
      'POST',
      '/api/holds',
      { product_id: product.id, qty: 1, customer_id: 'erin' },
      admin,
    );
    t.equal(backOffice.status, 201);
    t.equal(backOffice.body.customer_id, 'erin');
  },
);

t.test('expired, wrongly signed, unsigned or exp-less tokens are refused, and hold nothing', async (t) => {
  const { app, base } = await withTokens(t);
  const product = await createProduct(app, { stock: 10 });
  const secret = new TextEncoder().encode(CUSTOMER_SECRET);
  const tokens: Record<string, string> = {
    expired: await customerToken('mallory', { expiresIn: Math.floor(Date.now() / 1000) - 60 }),
    'signed with another secret': await customerToken('mallory', {
      secret: 'another-secret-of-at-least-32-characters!!',
    }),
    'alg none': new UnsecuredJWT({}).setSubject('mallory').setExpirationTime('10m').encode(),
    'no exp': await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('mallory').sign(secret),
    'no sub': await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(secret),
    'HS512 with the right secret': await new SignJWT({})
      .setProtectedHeader({ alg: 'HS512' })
      .setSubject('mallory')
      .setExpirationTime('10m')
      .sign(secret),
    'not a token': 'hello',
  };
  for (const [name, token] of Object.entries(tokens)) {
    const answer = await request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, bearer(token));
    t.equal(answer.status, 401, `${name}: 401`);
    t.equal(answer.body.code, 'INVALID_CUSTOMER_TOKEN', `${name}: INVALID_CUSTOMER_TOKEN`);
  }
  t.match(await productState(base, product.id), { held: 0, available_stock: 10 }, 'nothing was held');
});

t.test('another customer’s token can neither read, release nor convert a hold, nor read its order', async (t) => {
  const { app, base } = await withTokens(t);
  const product = await createProduct(app, { stock: 10, per_customer_limit: 3 });
  const alice = await asCustomer('alice');
  const bob = await asCustomer('bob');
  const held = await request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 2 }, alice);
  t.equal(held.status, 201);
  const holdId = held.body.hold_id!;

  const asBob = [
    await request<Body>(base, 'GET', `/api/holds/${holdId}`, undefined, bob),
    await request<Body>(base, 'DELETE', `/api/holds/${holdId}`, undefined, bob),
    await request<Body>(base, 'POST', '/api/orders', { hold_id: holdId }, bob),
  ];
  t.same(
    asBob.map((a) => [a.status, a.body.code]),
    Array(3).fill([403, 'NOT_YOUR_HOLD']),
    'bob: read, release, convert refused',
  );
  const anonymous = [
    await request<Body>(base, 'GET', `/api/holds/${holdId}`),
    await request<Body>(base, 'DELETE', `/api/holds/${holdId}`),
    await request<Body>(base, 'POST', '/api/orders', { hold_id: holdId }),
  ];
  t.same(
    anonymous.map((a) => [a.status, a.body.code]),
    Array(3).fill([401, 'CUSTOMER_TOKEN_REQUIRED']),
    'a stolen hold id alone: refused',
  );
  t.match(await productState(base, product.id), { held: 2, sold: 0 }, 'the hold is untouched');

  const own = await request<Body>(base, 'GET', `/api/holds/${holdId}`, undefined, alice);
  t.match(own, { status: 200, body: { customer_id: 'alice', status: 'held' } });
  const byAdmin = await request<Body>(base, 'GET', `/api/holds/${holdId}`, undefined, admin);
  t.match(byAdmin, { status: 200, body: { customer_id: 'alice' } }, 'the admin reads any hold');

  const order = await request<Body>(base, 'POST', '/api/orders', { hold_id: holdId, payment_method: 'card' }, alice);
  t.equal(order.status, 201);
  t.equal(order.body.customer_id, 'alice');
  const orderId = order.body.order_id!;
  for (const reference of [String(orderId), holdId]) {
    const read = (headers?: Record<string, string>) =>
      request<Body>(base, 'GET', `/api/orders/${reference}`, undefined, headers);
    t.match(
      await read(alice),
      { status: 200, body: { order_id: orderId, customer_id: 'alice' } },
      `alice: ${reference}`,
    );
    t.match(
      await read(admin),
      { status: 200, body: { order_id: orderId, customer_id: 'alice' } },
      `admin: ${reference}`,
    );
    t.match(await read(bob), { status: 404, body: { code: 'ORDER_NOT_FOUND' } }, `bob: ${reference}`);
  }
  t.match(await request<Body>(base, 'GET', `/api/orders/${orderId}`), { status: 404 }, 'anonymous, by number: 404');
  t.match(
    await request<Body>(base, 'GET', `/api/orders/${holdId}`),
    { status: 401, body: { code: 'CUSTOMER_TOKEN_REQUIRED' } },
    'anonymous, by hold id: a customer’s order needs its token',
  );
  const releaseConverted = await request<Body>(base, 'DELETE', `/api/holds/${holdId}`, undefined, bob);
  t.equal(releaseConverted.status, 403, 'bob cannot even learn that the hold was converted');
});

t.test(
  'without a token secret the seed’s token-less flows work, and no customer id is shown to anyone anonymous',
  async (t) => {
    const service = await buildTestApp(t);
    const base = await listen(service.app);
    const product = await createProduct(service.app, { stock: 5, per_customer_limit: 2 });

    const released = await placeHold(base, { product_id: product.id, qty: 1, customer_id: 'cust-17' });
    t.equal(released.customer_id, 'cust-17', 'the answer to a hold names the customer it was asked for');
    t.match(await request<Body>(base, 'GET', `/api/holds/${released.hold_id}`), {
      status: 200,
      body: { customer_id: null, status: 'held' },
    });
    t.match(await request<Body>(base, 'GET', `/api/holds/${released.hold_id}`, undefined, admin), {
      body: { customer_id: 'cust-17' },
    });
    t.match(await request<Body>(base, 'DELETE', `/api/holds/${released.hold_id}`), {
      status: 200,
      body: { status: 'released', customer_id: null },
    });

    const held = await placeHold(base, { product_id: product.id, qty: 2, customer_id: 'cust-17' });
    const order = await request<Body>(base, 'POST', '/api/orders', { hold_id: held.hold_id, payment_status: 'card' });
    t.equal(order.status, 201);
    t.equal(order.body.customer_id, null);
    t.match(await request<Body>(base, 'GET', `/api/orders/${held.hold_id}`), {
      status: 200,
      body: { order_id: order.body.order_id, customer_id: null },
    });
    t.match(await request<Body>(base, 'GET', `/api/orders/${order.body.order_id}`), {
      status: 404,
      body: { code: 'ORDER_NOT_FOUND' },
    });
    t.match(await request<Body>(base, 'GET', `/api/orders/${order.body.order_id}`, undefined, admin), {
      status: 200,
      body: { customer_id: 'cust-17' },
    });
    // A customer token means nothing without a secret to check it: the caller is anonymous.
    const ignored = await request<Body>(
      base,
      'GET',
      `/api/holds/${held.hold_id}`,
      undefined,
      await asCustomer('cust-17'),
    );
    t.match(ignored, { status: 200, body: { customer_id: null } });
    const limit = await request<Body>(base, 'POST', '/api/holds', {
      product_id: product.id,
      qty: 1,
      customer_id: 'cust-17',
    });
    t.match(limit, { status: 409, body: { code: 'CUSTOMER_LIMIT_EXCEEDED' } }, 'self-declared ids still count');
  },
);
