import t from 'tap';
import { productState } from './support/api.js';
import { admin, buildTestApp, createProduct, listen } from './support/app.js';
import { manualClock } from './support/clock.js';
import { request, tally } from './support/http.js';
import { heldUnits } from './support/redis-state.js';

interface HoldBody {
  hold_id: string;
  qty: number;
  status: string;
  code?: string;
  available_stock?: number;
}

// Hundreds of requests at once from one address: what these tests race is the stock, not the rate limits.
const UNLIMITED = { RATE_LIMIT: 'off' } as const;

const hold = (base: string, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
  request<HoldBody>(base, 'POST', '/api/holds', body, headers);

t.test('two buyers race for the last unit: exactly one wins', async (t) => {
  const service = await buildTestApp(t, UNLIMITED);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 1 });
  // Repeated a few times: one lucky interleaving would prove little.
  for (let round = 0; round < 5; round++) {
    if (round > 0) await request(base, 'PUT', `/api/products/${product.id}/stock`, { stock: round + 1 }, admin);
    const answers = await Promise.all(
      [1, 2].map((buyer) => hold(base, { product_id: product.id, qty: 1, customer_id: `buyer-${buyer}` })),
    );
    const statuses = answers.map((a) => a.status).sort();
    t.same(statuses, [201, 409], `round ${round}: one hold granted, one refused`);
    const refused = answers.find((a) => a.status === 409)!;
    t.equal(refused.body.code, 'INSUFFICIENT_STOCK');
    t.equal(refused.body.available_stock, 0);
    t.equal((await productState(base, product.id)).available_stock, 0);
  }
});

t.test(
  'stock 100, 1,000 concurrent holds of one unit: exactly 100 granted, and releasing them all restores 100',
  async (t) => {
    const service = await buildTestApp(t, UNLIMITED);
    const base = await listen(service.app);
    const product = await createProduct(service.app, { stock: 100 });

    const answers = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => hold(base, { product_id: product.id, qty: 1, customer_id: `c${i}` })),
    );
    const statuses = tally(answers.map((a) => a.status));
    t.equal(statuses.get(201), 100, '100 holds granted');
    t.equal(statuses.get(409), 900, '900 refused as insufficient stock');
    t.equal(statuses.size, 2, 'no other answer');
    t.match(await productState(base, product.id), { stock: 100, available_stock: 0, held: 100, sold: 0 });
    t.equal(await heldUnits(service, product.id), 100, 'hold records agree with the counters');

    const granted = answers.filter((a) => a.status === 201).map((a) => a.body.hold_id);
    t.equal(new Set(granted).size, 100, 'every granted hold has its own id');
    const releases = await Promise.all(granted.map((id) => request<HoldBody>(base, 'DELETE', `/api/holds/${id}`)));
    t.ok(
      releases.every((r) => r.status === 200 && r.body.status === 'released'),
      'every release answered 200 released',
    );
    t.match(await productState(base, product.id), { available_stock: 100, held: 0 });
  },
);

t.test('random quantities racing across two service instances never grant more than the stock', async (t) => {
  // Two instances share one Redis and one database, as two pods behind a load balancer would.
  const first = await buildTestApp(t, UNLIMITED);
  const second = await buildTestApp(t, {
    ...UNLIMITED,
    DATABASE_URL: first.config.DATABASE_URL,
    REDIS_KEY_PREFIX: first.config.REDIS_KEY_PREFIX,
  });
  const bases = [await listen(first.app), await listen(second.app)];
  const stock = 250;
  const product = await createProduct(first.app, { stock });

  const requests = Array.from({ length: 400 }, (_, i) => ({ qty: 1 + ((i * 7919) % 10), base: bases[i % 2]! }));
  const answers = await Promise.all(requests.map((r) => hold(r.base, { product_id: product.id, qty: r.qty })));

  const grantedUnits = answers.filter((a) => a.status === 201).reduce((sum, a) => sum + a.body.qty, 0);
  t.ok(
    answers.every((a) => a.status === 201 || (a.status === 409 && a.body.code === 'INSUFFICIENT_STOCK')),
    'only 201 or 409',
  );
  t.ok(grantedUnits <= stock, `granted ${grantedUnits} units of ${stock}`);
  // The refusals come when what is left is below the request, so nearly all stock goes.
  t.ok(grantedUnits > stock - 10, 'stock is not left unsold while smaller requests could fit');
  const state = await productState(bases[1]!, product.id);
  t.equal(state.held, grantedUnits, 'held counter equals the units granted');
  t.equal(state.available_stock, stock - grantedUnits);
  t.equal(await heldUnits(first, product.id), grantedUnits, 'hold records sum to the held counter');
});

t.test("per-customer limit holds under one customer's concurrent requests", async (t) => {
  const service = await buildTestApp(t, UNLIMITED);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 1000, per_customer_limit: 3 });

  const answers = await Promise.all(
    Array.from({ length: 50 }, () => hold(base, { product_id: product.id, qty: 1, customer_id: 'eager-buyer' })),
  );
  const statuses = tally(answers.map((a) => a.status));
  t.equal(statuses.get(201), 3, 'exactly the limit is granted');
  t.equal(statuses.get(409), 47);
  t.ok(answers.filter((a) => a.status === 409).every((a) => a.body.code === 'CUSTOMER_LIMIT_EXCEEDED'));
  t.equal((await productState(base, product.id)).held, 3);

  // Another customer is not affected; releasing gives the allowance back.
  t.equal((await hold(base, { product_id: product.id, qty: 3, customer_id: 'other-buyer' })).status, 201);
  const one = answers.find((a) => a.status === 201)!;
  t.equal((await request(base, 'DELETE', `/api/holds/${one.body.hold_id}`)).status, 200);
  t.equal(
    (await hold(base, { product_id: product.id, qty: 1, customer_id: 'eager-buyer' })).status,
    201,
    'a released unit can be held again',
  );
  t.equal((await hold(base, { product_id: product.id, qty: 1, customer_id: 'eager-buyer' })).status, 409);

  const anonymous = await hold(base, { product_id: product.id, qty: 1 });
  t.equal(anonymous.status, 400);
  t.equal(anonymous.body.code, 'CUSTOMER_ID_REQUIRED');
});

t.test('Idempotency-Key: 50 concurrent copies reserve once; another body with the key answers 422', async (t) => {
  const service = await buildTestApp(t, UNLIMITED);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 10 });
  const other = await createProduct(service.app, { stock: 10 });
  const body = { product_id: product.id, qty: 2, customer_id: 'c-1' };
  const key = { 'idempotency-key': 'checkout-7f3a' };

  const answers = await Promise.all(Array.from({ length: 50 }, () => hold(base, body, key)));
  t.ok(
    answers.every((a) => a.status === 201),
    'every copy answers 201',
  );
  t.equal(new Set(answers.map((a) => a.body.hold_id)).size, 1, 'every copy names the same hold');
  t.equal(
    answers.filter((a) => a.headers.get('idempotent-replayed') === 'true').length,
    49,
    'all but the first are replays',
  );
  t.match(await productState(base, product.id), { held: 2, available_stock: 8 });

  const otherQty = await hold(base, { ...body, qty: 3 }, key);
  t.equal(otherQty.status, 422);
  t.equal(otherQty.body.code, 'IDEMPOTENCY_KEY_REUSED');
  const otherProduct = await hold(base, { ...body, product_id: other.id }, key);
  t.equal(otherProduct.status, 422, 'the key is refused for another product too');
  t.match(await productState(base, other.id), { held: 0 }, 'nothing reserved on the other product');
  t.match(await productState(base, product.id), { held: 2 });

  // A refusal is remembered too: its retry answers the same, even after stock came back.
  await hold(base, { product_id: other.id, qty: 10 });
  const refusal = await hold(base, { product_id: other.id, qty: 5 }, { 'idempotency-key': 'late-buyer' });
  t.equal(refusal.status, 409);
  await request(base, 'PUT', `/api/products/${other.id}/stock`, { stock: 100 }, admin);
  const retried = await hold(base, { product_id: other.id, qty: 5 }, { 'idempotency-key': 'late-buyer' });
  t.equal(retried.status, 409);
  t.equal(retried.headers.get('idempotent-replayed'), 'true');
  t.same(retried.body, refusal.body, 'the first answer, replayed');
});

t.test(
  'an instance that saw a product sold out refuses it only for its cache time after units come back elsewhere',
  async (t) => {
    const first = await buildTestApp(t, { ...UNLIMITED, SOLD_OUT_CACHE_MS: 20 });
    // The second instance's cache reads a clock the test moves: the bound is on that clock, not on a busy machine's.
    const clock = manualClock();
    const second = await buildTestApp(
      t,
      {
        ...UNLIMITED,
        SOLD_OUT_CACHE_MS: 20,
        DATABASE_URL: first.config.DATABASE_URL,
        REDIS_KEY_PREFIX: first.config.REDIS_KEY_PREFIX,
      },
      { soldOutClock: clock },
    );
    const [a, b] = [await listen(first.app), await listen(second.app)];
    const product = await createProduct(first.app, { stock: 1 });
    const held = await hold(a, { product_id: product.id, qty: 1 });
    t.equal(held.status, 201);
    t.equal((await hold(b, { product_id: product.id, qty: 1 })).status, 409, 'the second instance sees it sold out');

    // The unit comes back through the first instance; the second learns of it when its cache time is up.
    t.equal((await request(a, 'DELETE', `/api/holds/${held.body.hold_id}`)).status, 200);
    t.equal(
      (await hold(b, { product_id: product.id, qty: 1 })).status,
      409,
      'until then the second instance refuses from its cache',
    );
    clock.advance(20);
    const granted = await hold(b, { product_id: product.id, qty: 1 });
    t.equal(
      granted.status,
      201,
      'the unit is sold again through the second instance, by the first request after its cache time',
    );
    t.match(await productState(a, product.id), { held: 1, available_stock: 0 }, 'and only once');
  },
);
