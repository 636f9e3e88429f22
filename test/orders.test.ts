import t from 'tap';
import { placeHold, productState } from './support/api.js';
import { admin, buildTestApp, createProduct, listen, type TestApp } from './support/app.js';
import { waitPastOnRedisClock } from './support/clock.js';
import { request, tally } from './support/http.js';
import { poll } from './support/wait.js';

interface OrderItem {
  product_id: number;
  qty: number;
  unit_price_cents: number;
  subtotal_cents: number;
}

interface OrderBody {
  order_id: number;
  hold_id: string;
  customer_id: string | null;
  status: string;
  payment_status: string;
  total_cents: number;
  payment_due_at: string;
  items: OrderItem[];
  code?: string;
}

interface HoldBody {
  hold_id: string;
  status: string;
  expires_at: string;
  code?: string;
  customer_units?: number;
}

interface PaymentOutcome {
  order_id: number;
  status: string;
  payment_status: string;
}

const placeOrder = (base: string, body: Record<string, unknown>) =>
  request<OrderBody>(base, 'POST', '/api/orders', body);

/** Orders Postgres has for a hold: the one source of truth for "no second order, ever". */
async function ordersOfHold({ app }: TestApp, holdId: string): Promise<number[]> {
  const rows = await app.db.selectFrom('orders').select('id').where('hold_id', '=', holdId).execute();
  return rows.map((r) => r.id);
}

t.test('cannot create order from expired hold', async (t) => {
  const service = await buildTestApp(t, { HOLD_TTL_SECONDS: 1 });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 3 });
  const held = await placeHold(base, { product_id: product.id, qty: 2 });
  t.match(await productState(base, product.id), { held: 2, available_stock: 1 });

  await waitPastOnRedisClock(service.redis, held.expires_at);
  // The sweeper is off: the order request itself must notice the hold is over.
  const late = await placeOrder(base, { hold_id: held.hold_id });
  t.equal(late.status, 410);
  t.equal(late.body.code, 'HOLD_EXPIRED');
  t.match(await productState(base, product.id), { held: 0, sold: 0, available_stock: 3 }, 'the units are back on sale');
  t.equal((await request<HoldBody>(base, 'GET', `/api/holds/${held.hold_id}`)).body.status, 'expired');

  const retry = await placeOrder(base, { hold_id: held.hold_id });
  t.equal(retry.status, 410, 'a retry is refused the same way');
  t.same(await ordersOfHold(service, held.hold_id), [], 'no order was made');
  t.match(
    await productState(base, product.id),
    { held: 0, sold: 0, available_stock: 3 },
    'its units are not given back twice',
  );
});

t.test('a hold becomes exactly one order: 201 the first time, 200 with the same order after', async (t) => {
  const service = await buildTestApp(t);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 10, price_cents: 2599 });
  const held = await placeHold(base, { product_id: product.id, qty: 3, customer_id: 'cust-17' });

  const before = Date.now();
  // payment_status is accepted as an alias of payment_method (older clients send it under that name).
  const first = await placeOrder(base, { hold_id: held.hold_id, payment_status: 'card' });
  const after = Date.now();
  t.equal(first.status, 201);
  t.match(first.body, {
    hold_id: held.hold_id,
    // A caller who proved nothing (no customer token, no admin token) is never shown a customer id.
    customer_id: null,
    status: 'pending_payment',
    payment_status: 'pending',
    total_cents: 3 * 2599,
  });
  t.same(first.body.items, [{ product_id: product.id, qty: 3, unit_price_cents: 2599, subtotal_cents: 3 * 2599 }]);
  t.type(first.body.order_id, 'number');
  // The default ORDER_PAYMENT_TTL_SECONDS is 900; a second either way for the clocks and the round trip.
  const dueAt = Date.parse(first.body.payment_due_at);
  t.ok(
    dueAt >= before + 899_000 && dueAt <= after + 901_000,
    `payment due 15 minutes after the order (${first.body.payment_due_at})`,
  );

  const payment = await service.app.db
    .selectFrom('payments')
    .select(['method', 'status', 'amount_cents'])
    .where('order_id', '=', first.body.order_id)
    .executeTakeFirst();
  t.same(
    payment,
    { method: 'card', status: 'pending', amount_cents: 3 * 2599 },
    'the alias is stored as the payment method',
  );

  const again = await placeOrder(base, { hold_id: held.hold_id, payment_method: 'card' });
  t.equal(again.status, 200, 'a retry answers 200');
  t.same(again.body, first.body, 'with the same order');
  t.same(await ordersOfHold(service, held.hold_id), [first.body.order_id], 'one order in the database');

  t.match(
    await productState(base, product.id),
    { held: 0, sold: 3, available_stock: 7 },
    'the units moved from held to sold',
  );
  t.equal((await request<HoldBody>(base, 'GET', `/api/holds/${held.hold_id}`)).body.status, 'converted');
  const release = await request<HoldBody>(base, 'DELETE', `/api/holds/${held.hold_id}`);
  t.equal(release.status, 409, 'a converted hold cannot be released');
  t.equal(release.body.code, 'HOLD_CONVERTED');
  t.match(
    await productState(base, product.id),
    { held: 0, sold: 3, available_stock: 7 },
    'the refused release changed nothing',
  );
});

t.test('20 concurrent POST /api/orders for one hold: one order, all answers carry its id', async (t) => {
  const service = await buildTestApp(t);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 9, price_cents: 1250 });
  // A few rounds, each on a fresh hold: one lucky interleaving would prove little.
  for (let round = 1; round <= 3; round++) {
    const held = await placeHold(base, { product_id: product.id, qty: 2, customer_id: `buyer-${round}` });
    const answers = await Promise.all(Array.from({ length: 20 }, () => placeOrder(base, { hold_id: held.hold_id })));

    const statuses = tally(answers.map((a) => a.status));
    t.equal(statuses.get(201), 1, `round ${round}: exactly one answer created the order`);
    t.equal(statuses.get(200), 19, `round ${round}: nineteen answered with the existing order`);
    t.equal(new Set(answers.map((a) => a.body.order_id)).size, 1, `round ${round}: every answer names the same order`);
    t.equal(
      new Set(answers.map((a) => JSON.stringify(a.body))).size,
      1,
      `round ${round}: every answer is the same order body`,
    );
    t.same(await ordersOfHold(service, held.hold_id), [answers[0]!.body.order_id], `round ${round}: one row in orders`);
    t.match(
      await productState(base, product.id),
      { held: 0, sold: 2 * round, available_stock: 9 - 2 * round },
      `round ${round}: the hold's units sold once`,
    );
  }
});

t.test('a released hold cannot become an order', async (t) => {
  const service = await buildTestApp(t);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 4 });
  const held = await placeHold(base, { product_id: product.id, qty: 2 });
  t.equal((await request(base, 'DELETE', `/api/holds/${held.hold_id}`)).status, 200);

  const answer = await placeOrder(base, { hold_id: held.hold_id });
  t.equal(answer.status, 409);
  t.equal(answer.body.code, 'HOLD_RELEASED');
  t.same(await ordersOfHold(service, held.hold_id), []);
  t.match(await productState(base, product.id), { held: 0, sold: 0, available_stock: 4 });
  t.equal((await request<HoldBody>(base, 'GET', `/api/holds/${held.hold_id}`)).body.status, 'released');
});

t.test('an unknown or malformed hold id is not found, and a bad body is refused', async (t) => {
  const service = await buildTestApp(t);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 4 });

  const notFound = [`${product.id}-AAAAAAAAAAAA`, '424242-AAAAAAAAAAAA', 'not-a-hold', `${product.id}-short`];
  for (const holdId of notFound) {
    const answer = await placeOrder(base, { hold_id: holdId });
    t.equal(answer.status, 404, `${holdId}: 404`);
    t.equal(answer.body.code, 'HOLD_NOT_FOUND', `${holdId}: HOLD_NOT_FOUND`);
  }
  const invalid: Record<string, unknown>[] = [
    {},
    { hold_id: '' },
    { hold_id: 42 },
    { hold_id: `${product.id}-AAAAAAAAAAAA`, price_cents: 0 },
  ];
  for (const body of invalid) {
    const answer = await placeOrder(base, body);
    t.equal(answer.status, 400, `${JSON.stringify(body)}: 400`);
    t.equal(answer.body.code, 'VALIDATION_ERROR');
  }
  const count = await service.app.db
    .selectFrom('orders')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  t.equal(Number(count.n), 0, 'no order was made');
  t.match(await productState(base, product.id), { held: 0, sold: 0, available_stock: 4 });
});

t.test('an order is read by its id; an unknown id is 404, a non-numeric one 400', async (t) => {
  const service = await buildTestApp(t);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 4, price_cents: 700 });
  const held = await placeHold(base, { product_id: product.id, qty: 1, customer_id: 'reader' });
  const placed = await placeOrder(base, { hold_id: held.hold_id, payment_method: 'paypal' });
  t.equal(placed.status, 201);

  // By its hold id (unguessable) anyone may read it, without its customer; by its number only the admin.
  const byHold = await request<OrderBody>(base, 'GET', `/api/orders/${held.hold_id}`);
  t.equal(byHold.status, 200);
  t.same(byHold.body, placed.body, 'the order as it was placed');
  const read = await request<OrderBody>(base, 'GET', `/api/orders/${placed.body.order_id}`, undefined, admin);
  t.equal(read.status, 200);
  t.same(read.body, { ...placed.body, customer_id: 'reader' }, 'the admin sees its customer');
  const anonymous = await request<OrderBody>(base, 'GET', `/api/orders/${placed.body.order_id}`);
  t.equal(anonymous.status, 404, 'an order number alone reads nothing');

  for (const id of ['999999', '9999999999999999']) {
    const missing = await request<OrderBody>(base, 'GET', `/api/orders/${id}`);
    t.equal(missing.status, 404, `order ${id}: 404`);
    t.equal(missing.body.code, 'ORDER_NOT_FOUND');
  }
  for (const id of ['abc', '0', '-1', '1.5', '1e3']) {
    const bad = await request<OrderBody>(base, 'GET', `/api/orders/${id}`);
    t.equal(bad.status, 400, `order id ${id}: 400`);
    t.equal(bad.body.code, 'VALIDATION_ERROR');
  }
});

t.test("a converted hold keeps counting in the customer's allowance until its payment fails", async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 10, per_customer_limit: 2 });
  const held = await placeHold(base, { product_id: product.id, qty: 2, customer_id: 'limited-buyer' });
  const order = await placeOrder(base, { hold_id: held.hold_id });
  t.equal(order.status, 201);

  // Bought units count like held ones: buying must not reopen the allowance.
  const more = await request<HoldBody>(base, 'POST', '/api/holds', {
    product_id: product.id,
    qty: 1,
    customer_id: 'limited-buyer',
  });
  t.equal(more.status, 409);
  t.equal(more.body.code, 'CUSTOMER_LIMIT_EXCEEDED');
  t.equal(more.body.customer_units, 2);
  t.equal(
    (await request(base, 'POST', '/api/holds', { product_id: product.id, qty: 2, customer_id: 'someone-else' })).status,
    201,
    'other customers are not affected',
  );

  const failed = await request<PaymentOutcome>(base, 'POST', '/api/webhooks/payment', {
    idempotency_key: 'pay-fail-1',
    order_id: order.body.order_id,
    event_type: 'failure',
  });
  t.same(failed.body, { order_id: order.body.order_id, status: 'cancelled', payment_status: 'failed' });
  // The cancelled order no longer counts: the customer may hold their two units again.
  const again = await request<HoldBody>(base, 'POST', '/api/holds', {
    product_id: product.id,
    qty: 2,
    customer_id: 'limited-buyer',
  });
  t.equal(again.status, 201, 'the allowance is back after the payment failed');
  t.match(await productState(base, product.id), { held: 4, sold: 0, available_stock: 6 });
});

t.test('payment deadline cancels unpaid orders by itself and returns their units', async (t) => {
  const service = await buildTestApp(t, {
    WEBHOOK_ALLOW_UNSIGNED: true,
    ORDER_PAYMENT_TTL_SECONDS: 1,
    RECOVERY_INTERVAL_MS: 100,
  });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 5, price_cents: 900 });
  const unpaidHold = await placeHold(base, { product_id: product.id, qty: 3, customer_id: 'slow-payer' });
  const paidHold = await placeHold(base, { product_id: product.id, qty: 1, customer_id: 'fast-payer' });
  // Paid within its second, straight after it is placed: the deadline must leave this one alone.
  const paid = await placeOrder(base, { hold_id: paidHold.hold_id });
  const payment = await request<PaymentOutcome>(base, 'POST', '/api/webhooks/payment', {
    idempotency_key: 'pay-in-time',
    order_id: paid.body.order_id,
    event_type: 'success',
  });
  t.equal(payment.body.status, 'paid');
  const unpaid = await placeOrder(base, { hold_id: unpaidHold.hold_id });
  t.equal(unpaid.status, 201);
  t.ok(Date.parse(unpaid.body.payment_due_at) - Date.now() <= 1500, 'payment due about a second from now');
  t.match(await productState(base, product.id), { held: 0, sold: 4, available_stock: 1 });

  const readOrder = async (id: number) =>
    (await request<OrderBody>(base, 'GET', `/api/orders/${id}`, undefined, admin)).body;
  const cancelled = await poll(
    () => readOrder(unpaid.body.order_id),
    (o) => o.status !== 'pending_payment',
    5000,
  );
  t.match(
    cancelled,
    { status: 'cancelled', payment_status: 'failed' },
    'the unpaid order was cancelled by the service',
  );
  const state = await poll(
    () => productState(base, product.id),
    (s) => s.sold !== 4,
    3000,
  );
  t.match(state, { held: 0, sold: 1, available_stock: 4 }, "the cancelled order's units are for sale again");
  t.match(
    await readOrder(paid.body.order_id),
    { status: 'paid', payment_status: 'completed' },
    'the paid order is untouched',
  );

  const late = await request<PaymentOutcome>(base, 'POST', '/api/webhooks/payment', {
    idempotency_key: 'pay-too-late',
    order_id: unpaid.body.order_id,
    event_type: 'success',
  });
  t.equal(late.status, 200);
  t.same(late.body, { order_id: unpaid.body.order_id, status: 'refund_required', payment_status: 'completed' });
  t.match(
    await productState(base, product.id),
    { held: 0, sold: 1, available_stock: 4 },
    'the late payment sells nothing',
  );
});
