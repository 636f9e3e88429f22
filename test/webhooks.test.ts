import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { checkSignature, signPayload } from '../src/domain/signatures.js';
import { productState } from './support/api.js';
import { admin, buildTestApp, createProduct, listen, type TestApp } from './support/app.js';
import { request, sendRaw, tally, type HttpAnswer } from './support/http.js';
import { poll } from './support/wait.js';

interface WebhookAnswer {
  order_id?: number;
  status?: string;
  payment_status?: string;
  code?: string;
  message?: string;
}

interface OrderBody {
  order_id: number;
  status: string;
  payment_status: string;
  payment_due_at: string;
}

const SECRET = 'whsec_4f9a1c0e7b';
const now = () => Math.floor(Date.now() / 1000);

/** Posts a webhook body exactly as given: signatures are over these bytes, so nothing may re-serialise them. */
async function deliver(
  base: string,
  rawBody: string,
  headers: Record<string, string> = {},
): Promise<HttpAnswer<WebhookAnswer>> {
  const answer = await sendRaw<WebhookAnswer | null>(base, 'POST', '/api/webhooks/payment', rawBody, {
    'content-type': 'application/json',
    ...headers,
  });
  return { ...answer, body: answer.body ?? {} };
}

/** An X-Signature header for a raw body, signed now (or at `timestamp`). */
const signed = (rawBody: string, secret = SECRET, timestamp = now()) => ({
  'x-signature': signPayload(rawBody, secret, timestamp),
});

const webhook = (fields: { idempotency_key: string; order_id: number; event_type: string } & Record<string, unknown>) =>
  JSON.stringify(fields);

/** A product, a hold on it and the order it became: what every payment needs first. */
async function pendingOrder(base: string, app: TestApp['app'], opts: { stock?: number; qty?: number } = {}) {
  const product = await createProduct(app, { stock: opts.stock ?? 5, price_cents: 1999 });
  const hold = await request<{ hold_id: string }>(base, 'POST', '/api/holds', {
    product_id: product.id,
    qty: opts.qty ?? 2,
  });
  const order = await request<OrderBody>(base, 'POST', '/api/orders', { hold_id: hold.body.hold_id });
  if (order.status !== 201) throw new Error(`order answered ${order.status}: ${JSON.stringify(order.body)}`);
  return { productId: product.id, orderId: order.body.order_id };
}

async function readOrder(base: string, id: number): Promise<OrderBody> {
  return (await request<OrderBody>(base, 'GET', `/api/orders/${id}`, undefined, admin)).body;
}

/** The order's and its payment's rows, with their update times: a replay must not touch them. */
async function orderRows({ app }: TestApp, orderId: number) {
  const order = await app.db
    .selectFrom('orders')
    .select(['status', 'payment_status', 'updated_at'])
    .where('id', '=', orderId)
    .executeTakeFirstOrThrow();
  const payment = await app.db
    .selectFrom('payments')
    .select(['status', 'updated_at'])
    .where('order_id', '=', orderId)
    .executeTakeFirstOrThrow();
  return { order, payment };
}

async function processedKeys({ app }: TestApp): Promise<{ idempotency_key: string; response_status: number }[]> {
  return app.db
    .selectFrom('processed_webhooks')
    .select(['idempotency_key', 'response_status'])
    .orderBy('idempotency_key')
    .execute();
}

async function deliveries({ app }: TestApp, key?: string) {
  let query = app.db
    .selectFrom('webhook_deliveries')
    .select(['idempotency_key', 'payload', 'signature', 'response_status', 'response_body', 'replayed'])
    .orderBy('id');
  if (key !== undefined) query = query.where('idempotency_key', '=', key);
  return query.execute();
}

/** Waits, if need be, for the start of the next second, so a request sent now is checked within the same one. */
async function earlyInASecond(): Promise<void> {
  const intoSecond = Date.now() % 1000;
  if (intoSecond > 500) await sleep(1000 - intoSecond + 5);
}

t.test('returns cached result for duplicate webhook', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
  const base = await listen(service.app);
  const { orderId } = await pendingOrder(base, service.app);
  const body = webhook({ idempotency_key: 'evt_dup_1', order_id: orderId, event_type: 'success', amount_cents: 3998 });

  const first = await deliver(base, body, signed(body));
  t.equal(first.status, 200);
  t.same(first.body, { order_id: orderId, status: 'paid', payment_status: 'completed' });
  t.equal(first.headers.get('idempotent-replayed'), null, 'the first delivery is not a replay');
  const settled = await orderRows(service, orderId);

  // The provider's retry is signed anew (another timestamp, so another signature) over the same body.
  const second = await deliver(base, body, signed(body, SECRET, now() - 5));
  t.equal(second.status, 200);
  t.same(second.body, first.body, 'the first answer again');
  t.equal(second.headers.get('idempotent-replayed'), 'true');
  // The same JSON spaced and ordered differently is the same delivery.
  const reordered = JSON.stringify(
    { amount_cents: 3998, event_type: 'success', order_id: orderId, idempotency_key: 'evt_dup_1' },
    null,
    2,
  );
  const third = await deliver(base, reordered, signed(reordered));
  t.equal(third.status, 200);
  t.same(third.body, first.body);
  t.equal(third.headers.get('idempotent-replayed'), 'true');

  t.same(await orderRows(service, orderId), settled, 'the replays changed neither the order nor its payment');
  t.same(
    await processedKeys(service),
    [{ idempotency_key: 'evt_dup_1', response_status: 200 }],
    'one processed delivery',
  );
  const kept = await deliveries(service, 'evt_dup_1');
  t.same(
    kept.map((d) => d.replayed),
    [false, true, true],
    'every delivery is kept, replays marked',
  );
  t.ok(
    kept.every((d) => d.signature === 'valid' && d.response_status === 200),
    'each kept as signed and answered 200',
  );
  t.same(kept[0]?.payload, JSON.parse(body), 'the payload is kept, amount included');
  t.same(kept[0]?.response_body, first.body, 'and the answer given');
});

t.test('handles webhook for non-existent payment gracefully', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
  const base = await listen(service.app);
  // Order ids are a sequence of this fresh database: the first order will be 1, so this webhook is for it.
  const body = webhook({ idempotency_key: 'evt_early', order_id: 1, event_type: 'success' });

  const early = await deliver(base, body, signed(body));
  t.equal(early.status, 404);
  t.equal(early.body.code, 'ORDER_NOT_FOUND');
  t.same(await processedKeys(service), [], 'the key is not used up by an order that does not exist yet');
  t.same(
    (await deliveries(service, 'evt_early')).map((d) => d.response_status),
    [404],
    'the delivery itself is kept',
  );

  const { orderId } = await pendingOrder(base, service.app);
  t.equal(orderId, 1, 'the order the webhook named now exists');
  const retry = await deliver(base, body, signed(body));
  t.equal(retry.status, 200, 'the same delivery succeeds once the order exists');
  t.same(retry.body, { order_id: 1, status: 'paid', payment_status: 'completed' });
  t.equal(retry.headers.get('idempotent-replayed'), null, 'processed, not replayed');
  t.match(await readOrder(base, 1), { status: 'paid', payment_status: 'completed' });
  const again = await deliver(base, body, signed(body));
  t.equal(again.headers.get('idempotent-replayed'), 'true', 'from then on it is a replay');
  t.same(again.body, retry.body);
});

t.test('a successful payment marks a pending order paid', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
  const base = await listen(service.app);
  const { productId, orderId } = await pendingOrder(base, service.app, { stock: 5, qty: 2 });
  const body = webhook({ idempotency_key: 'evt_ok', order_id: orderId, event_type: 'success' });

  const answer = await deliver(base, body);
  t.equal(answer.status, 200);
  t.same(answer.body, { order_id: orderId, status: 'paid', payment_status: 'completed' });
  t.match(await readOrder(base, orderId), { status: 'paid', payment_status: 'completed' });
  t.equal((await orderRows(service, orderId)).payment.status, 'completed');
  t.match(await productState(base, productId), { held: 0, sold: 2, available_stock: 3 }, 'the units stay sold');
});

t.test('a failed payment cancels a pending order and puts its units on sale at once', async (t) => {
  // No settlement loop: the units must come back because of the webhook, not a later pass.
  const service = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true, RECOVERY_INTERVAL_MS: 0 });
  const base = await listen(service.app);
  const { productId, orderId } = await pendingOrder(base, service.app, { stock: 5, qty: 2 });
  t.match(await productState(base, productId), { sold: 2, available_stock: 3 });

  const answer = await deliver(
    base,
    webhook({ idempotency_key: 'evt_fail', order_id: orderId, event_type: 'failure' }),
  );
  t.equal(answer.status, 200);
  t.same(answer.body, { order_id: orderId, status: 'cancelled', payment_status: 'failed' });
  t.match(
    await productState(base, productId),
    { held: 0, sold: 0, available_stock: 5 },
    'the units are for sale again',
  );
  t.match(await readOrder(base, orderId), { status: 'cancelled', payment_status: 'failed' });
  t.equal((await orderRows(service, orderId)).payment.status, 'failed');
  const next = await request(base, 'POST', '/api/holds', { product_id: productId, qty: 5 });
  t.equal(next.status, 201, 'the whole stock can be held again');
});

t.test(
  '50 concurrent copies of one delivery: one processed, 49 replayed, identical answers, units returned once',
  async (t) => {
    const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET, RECOVERY_INTERVAL_MS: 0 });
    const base = await listen(service.app);
    const { productId, orderId } = await pendingOrder(base, service.app, { stock: 5, qty: 2 });
    const body = webhook({ idempotency_key: 'evt_storm', order_id: orderId, event_type: 'failure' });
    const headers = signed(body);

    const answers = await Promise.all(Array.from({ length: 50 }, () => deliver(base, body, headers)));
    t.same([...tally(answers.map((a) => a.status))], [[200, 50]], 'every copy answers 200');
    const replayed = tally(answers.map((a) => a.headers.get('idempotent-replayed')));
    t.equal(replayed.get(null), 1, 'exactly one copy was processed');
    t.equal(replayed.get('true'), 49, 'the other 49 are replays');
    t.equal(new Set(answers.map((a) => JSON.stringify(a.body))).size, 1, 'all bodies identical');
    t.same(answers[0]?.body, { order_id: orderId, status: 'cancelled', payment_status: 'failed' });

    // Units returned twice would show as sold < 0 and more available than the stock.
    t.match(await productState(base, productId), { held: 0, sold: 0, available_stock: 5 });
    t.same(await processedKeys(service), [{ idempotency_key: 'evt_storm', response_status: 200 }]);
    const kept = await deliveries(service, 'evt_storm');
    t.equal(kept.length, 50, 'every copy kept');
    t.equal(kept.filter((d) => d.replayed).length, 49);
  },
);

t.test(
  'a success and a failure for one order at the same moment: one is applied first, the other is judged against its result',
  async (t) => {
    const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET, RECOVERY_INTERVAL_MS: 0 });
    const base = await listen(service.app);
    // Repeated: which one wins depends on timing; either order must leave a consistent result.
    const winners = new Set<string>();
    for (let round = 0; round < 6; round++) {
      const { productId, orderId } = await pendingOrder(base, service.app, { stock: 5, qty: 2 });
      const success = webhook({ idempotency_key: `evt_s_${round}`, order_id: orderId, event_type: 'success' });
      const failure = webhook({ idempotency_key: `evt_f_${round}`, order_id: orderId, event_type: 'failure' });
      // A few copies of each, so that the two events really meet at the order's row lock.
      const sent = [success, failure, success, failure, success, failure];
      const answers = await Promise.all(sent.map((body) => deliver(base, body, signed(body))));
      const [s, f] = [answers[0]!, answers[1]!];
      const order = await readOrder(base, orderId);
      const product = await productState(base, productId);
      if (s.body.status === 'paid') {
        winners.add('success');
        t.equal(s.status, 200, `round ${round}: success first: paid`);
        t.match(f, { status: 409, body: { code: 'ORDER_ALREADY_FINAL' } }, 'then the failure is refused');
        t.equal(order.status, 'paid');
        t.match(product, { held: 0, sold: 2, available_stock: 3 }, 'the units stay sold');
      } else {
        winners.add('failure');
        t.match(f, { status: 200, body: { status: 'cancelled' } }, `round ${round}: failure first: cancelled`);
        t.match(s, { status: 200, body: { status: 'refund_required' } }, 'then the success needs a refund');
        t.equal(order.status, 'refund_required');
        t.match(product, { held: 0, sold: 0, available_stock: 5 }, 'the units went back on sale, once');
      }
      for (const [i, answer] of answers.entries()) {
        t.same(answer.body, answers[i % 2]!.body, `copy ${i} answers as its first copy`);
      }
      const keys = (await processedKeys(service)).filter((k) => k.idempotency_key.endsWith(`_${round}`));
      t.equal(keys.length, 2, 'each key recorded once');
    }
    t.comment(`applied first across the rounds: ${[...winners].join(', ')}`);
  },
);

t.test('the same idempotency key with another body is refused with 422 and changes nothing', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
  const base = await listen(service.app);
  const { productId, orderId } = await pendingOrder(base, service.app, { stock: 5, qty: 2 });
  const another = await pendingOrder(base, service.app);
  const body = webhook({ idempotency_key: 'evt_reuse', order_id: orderId, event_type: 'success', amount_cents: 3998 });
  const first = await deliver(base, body);
  t.equal(first.status, 200);
  const settled = await orderRows(service, orderId);
  const untouched = await orderRows(service, another.orderId);

  const others = [
    webhook({ idempotency_key: 'evt_reuse', order_id: orderId, event_type: 'failure', amount_cents: 3998 }),
    webhook({ idempotency_key: 'evt_reuse', order_id: orderId, event_type: 'success', amount_cents: 1 }),
    webhook({ idempotency_key: 'evt_reuse', order_id: another.orderId, event_type: 'failure', amount_cents: 3998 }),
    // The key is spent whatever the new body names, an order that does not exist included.
    webhook({ idempotency_key: 'evt_reuse', order_id: 424242, event_type: 'success', amount_cents: 3998 }),
  ];
  for (const other of others) {
    const answer = await deliver(base, other);
    t.equal(answer.status, 422, `${other}: 422`);
    t.equal(answer.body.code, 'IDEMPOTENCY_KEY_REUSED', `${other}: IDEMPOTENCY_KEY_REUSED`);
  }
  t.same(await orderRows(service, orderId), settled, 'the order is still paid, untouched');
  t.same(await orderRows(service, another.orderId), untouched, 'the other order named with the key is untouched too');
  t.match(await productState(base, productId), { sold: 2, available_stock: 3 });
  const replay = await deliver(base, body);
  t.equal(replay.status, 200, 'the key still answers its first delivery');
  t.equal(replay.headers.get('idempotent-replayed'), 'true');
  t.same(replay.body, first.body);
});

t.test(
  'a payment that arrives after the deadline cancelled the order needs a refund and sells nothing twice',
  async (t) => {
    const service = await buildTestApp(t, {
      WEBHOOK_ALLOW_UNSIGNED: true,
      ORDER_PAYMENT_TTL_SECONDS: 1,
      RECOVERY_INTERVAL_MS: 100,
    });
    const base = await listen(service.app);
    const { productId, orderId } = await pendingOrder(base, service.app, { stock: 3, qty: 3 });

    const cancelled = await poll(
      () => readOrder(base, orderId),
      (o) => o.status !== 'pending_payment',
      5000,
    );
    t.match(cancelled, { status: 'cancelled', payment_status: 'failed' }, 'cancelled by the deadline');
    t.match(
      await poll(
        () => productState(base, productId),
        (s) => s.sold === 0,
        3000,
      ),
      { sold: 0, available_stock: 3 },
    );
    // Someone else takes the freed units before the late payment arrives.
    const resold = await request<{ hold_id: string }>(base, 'POST', '/api/holds', { product_id: productId, qty: 3 });
    t.equal(resold.status, 201);

    const body = webhook({ idempotency_key: 'evt_late', order_id: orderId, event_type: 'success' });
    const late = await deliver(base, body);
    t.equal(late.status, 200);
    t.same(late.body, { order_id: orderId, status: 'refund_required', payment_status: 'completed' });
    t.match(await readOrder(base, orderId), { status: 'refund_required', payment_status: 'completed' });
    t.match(
      await productState(base, productId),
      { held: 3, sold: 0, available_stock: 0 },
      'the late payment took no units',
    );

    const replay = await deliver(base, body);
    t.same(replay.body, late.body);
    t.equal(replay.headers.get('idempotent-replayed'), 'true');
    // The other buyer's order goes through: the three units are sold once, to them.
    t.equal((await request(base, 'POST', '/api/orders', { hold_id: resold.body.hold_id })).status, 201);
    t.match(await productState(base, productId), { held: 0, sold: 3, available_stock: 0 });
  },
);

t.test(
  'a failure for a paid order is refused with 409 ORDER_ALREADY_FINAL, recorded, and changes nothing',
  async (t) => {
    const service = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
    const base = await listen(service.app);
    const { productId, orderId } = await pendingOrder(base, service.app, { stock: 5, qty: 2 });
    t.equal(
      (await deliver(base, webhook({ idempotency_key: 'evt_paid', order_id: orderId, event_type: 'success' }))).status,
      200,
    );
    const paid = await orderRows(service, orderId);

    const body = webhook({ idempotency_key: 'evt_fail_after_paid', order_id: orderId, event_type: 'failure' });
    const refused = await deliver(base, body);
    t.equal(refused.status, 409);
    t.match(refused.body, { code: 'ORDER_ALREADY_FINAL', order_id: orderId, status: 'paid' });
    t.same(await orderRows(service, orderId), paid, 'the order is still paid');
    t.match(await productState(base, productId), { sold: 2, available_stock: 3 }, 'no units returned');
    t.same(
      await processedKeys(service),
      [
        { idempotency_key: 'evt_fail_after_paid', response_status: 409 },
        { idempotency_key: 'evt_paid', response_status: 200 },
      ],
      'the refusal is recorded under its key',
    );

    const replay = await deliver(base, body);
    t.equal(replay.status, 409, 'replaying the key gives the same 409');
    t.equal(replay.headers.get('idempotent-replayed'), 'true');
    t.same(replay.body, refused.body);
  },
);

t.test('a forged, stale or malformed signature is refused with 401 and records nothing', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
  const base = await listen(service.app);
  const { orderId } = await pendingOrder(base, service.app);
  // Every attempt carries the key of the genuine delivery below: none of them may use it up.
  const body = webhook({ idempotency_key: 'evt_sig', order_id: orderId, event_type: 'success' });
  const other = webhook({ idempotency_key: 'evt_sig', order_id: orderId, event_type: 'failure' });
  const rightHex = (ts: number) => createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex');

  // Headers are made just before sending; `tight` ones in the first half of a second, as a timestamp 301 s
  // ahead made a second before the service checks it would be only 300 s ahead.
  const attempts: { name: string; body: string; headers: () => Record<string, string>; tight?: true }[] = [
    { name: 'missing header', body, headers: () => ({}) },
    { name: 'empty header', body, headers: () => ({ 'x-signature': '' }) },
    { name: 'wrong secret', body, headers: () => signed(body, 'not-the-secret') },
    { name: 'tampered body', body: other, headers: () => signed(body) },
    { name: 'stale timestamp (now - 301 s)', body, headers: () => signed(body, SECRET, now() - 301) },
    { name: 'future timestamp (now + 301 s)', body, headers: () => signed(body, SECRET, now() + 301), tight: true },
    {
      name: 'v1 one byte short',
      body,
      headers: () => ({ 'x-signature': `t=${now()},v1=${rightHex(now()).slice(0, 62)}` }),
    },
    { name: 'v1 one byte long', body, headers: () => ({ 'x-signature': `t=${now()},v1=${rightHex(now())}00` }) },
    { name: 'v1 not hex', body, headers: () => ({ 'x-signature': `t=${now()},v1=${'z'.repeat(64)}` }) },
    { name: 'no timestamp', body, headers: () => ({ 'x-signature': `v1=${rightHex(now())}` }) },
    { name: 'timestamp not a number', body, headers: () => ({ 'x-signature': `t=yesterday,v1=${rightHex(now())}` }) },
    { name: 'garbage', body, headers: () => ({ 'x-signature': 'sha256=deadbeef' }) },
    // A body with no fields the route needs still gets 401, not a hint about what the fields are.
    { name: 'unsigned body missing fields', body: '{"order_id":1}', headers: () => ({}) },
  ];
  for (const attempt of attempts) {
    if (attempt.tight) await earlyInASecond();
    const answer = await deliver(base, attempt.body, attempt.headers());
    t.equal(answer.status, 401, `${attempt.name}: 401`);
    t.equal(answer.body.code, 'INVALID_SIGNATURE', `${attempt.name}: INVALID_SIGNATURE`);
  }

  t.match(
    await readOrder(base, orderId),
    { status: 'pending_payment', payment_status: 'pending' },
    'the order is unchanged',
  );
  t.same(await processedKeys(service), [], 'no key used up');
  t.same(await deliveries(service), [], 'no delivery recorded');
  const genuine = await deliver(base, body, signed(body));
  t.equal(genuine.status, 200, 'the same delivery correctly signed afterwards succeeds');
  t.equal(genuine.headers.get('idempotent-replayed'), null, 'as a first delivery, not a replay');
  t.same(genuine.body, { order_id: orderId, status: 'paid', payment_status: 'completed' });
});

t.test('the timestamp tolerance is 300 s either way, no more', async (t) => {
  // The service's own check with a fixed clock: over HTTP a second can tick between signing and checking.
  const body = webhook({ idempotency_key: 'evt_edge', order_id: 1, event_type: 'success' });
  const at = 1_800_000_000;
  for (const offset of [-300, 0, 300]) {
    t.same(
      checkSignature(signPayload(body, SECRET, at + offset), body, [SECRET], at),
      { valid: true },
      `${offset} s: accepted`,
    );
  }
  for (const offset of [-301, 301]) {
    t.equal(
      checkSignature(signPayload(body, SECRET, at + offset), body, [SECRET], at).valid,
      false,
      `${offset} s: refused`,
    );
  }
});

t.test(
  'signatures within the tolerance, under either rotated secret, or among several v1 values are accepted',
  async (t) => {
    const service = await buildTestApp(t, { WEBHOOK_SECRET: 'old-secret,new-secret' });
    const base = await listen(service.app);
    const orders = await Promise.all([1, 2, 3, 4].map(() => pendingOrder(base, service.app)));
    const bodies = orders.map(({ orderId }) =>
      webhook({ idempotency_key: `evt_rot_${orderId}`, order_id: orderId, event_type: 'success' }),
    );
    const ts = now();
    const hex = (rawBody: string, secret: string, timestamp = ts) =>
      createHmac('sha256', secret).update(`${timestamp}.${rawBody}`).digest('hex');

    const accepted = [
      { name: 'signed with the old secret', body: bodies[0]!, header: `t=${ts},v1=${hex(bodies[0]!, 'old-secret')}` },
      { name: 'signed with the new secret', body: bodies[1]!, header: `t=${ts},v1=${hex(bodies[1]!, 'new-secret')}` },
      {
        name: 'two v1 values, only the second right',
        body: bodies[2]!,
        header: `t=${ts},v1=${hex(bodies[2]!, 'retired-secret')},v1=${hex(bodies[2]!, 'new-secret')}`,
      },
      {
        name: 'signed 250 s ago, inside the 300 s tolerance',
        body: bodies[3]!,
        header: `t=${ts - 250},v1=${hex(bodies[3]!, 'old-secret', ts - 250)}`,
      },
    ];
    for (const [i, attempt] of accepted.entries()) {
      const answer = await deliver(base, attempt.body, { 'x-signature': attempt.header });
      t.equal(answer.status, 200, `${attempt.name}: 200`);
      t.same(answer.body, { order_id: orders[i]!.orderId, status: 'paid', payment_status: 'completed' });
    }
    const retired = webhook({ idempotency_key: 'evt_retired', order_id: orders[0]!.orderId, event_type: 'failure' });
    const refused = await deliver(base, retired, { 'x-signature': `t=${ts},v1=${hex(retired, 'retired-secret')}` });
    t.equal(refused.status, 401, 'a secret no longer configured is refused');
    t.equal(refused.body.code, 'INVALID_SIGNATURE');
  },
);

t.test('a signature made with openssl dgst -sha256 -hmac, as the README shows, is accepted', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: 'whsec_test' });
  const base = await listen(service.app);
  const { orderId } = await pendingOrder(base, service.app);
  const body = webhook({ idempotency_key: 'evt_123', order_id: orderId, event_type: 'success', amount_cents: 3998 });

  // The README's lines, as a user would paste them into a shell (only BODY comes from the test).
  const script = `T=$(date +%s)
SIG=$(printf '%s' "$T.$BODY" | openssl dgst -sha256 -hmac whsec_test -hex | sed 's/^.* //')
printf '%s' "t=$T,v1=$SIG"`;
  const header = execFileSync('sh', ['-c', script], { env: { ...process.env, BODY: body }, encoding: 'utf8' });
  t.match(header, /^t=[0-9]+,v1=[0-9a-f]{64}$/, `the header the commands made: ${header}`);
  const ts = Number(/^t=([0-9]+)/.exec(header)?.[1]);
  t.equal(header, signPayload(body, 'whsec_test', ts), 'the signature the service computes');

  const answer = await deliver(base, body, { 'x-signature': header });
  t.equal(answer.status, 200);
  t.same(answer.body, { order_id: orderId, status: 'paid', payment_status: 'completed' });
});

t.test('with no secret set, a forged unsigned delivery is refused with 401 and changes nothing', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: '' });
  const base = await listen(service.app);
  const { orderId } = await pendingOrder(base, service.app);
  const forged = await deliver(
    base,
    webhook({ idempotency_key: 'evt_forged', order_id: orderId, event_type: 'success' }),
  );
  t.equal(forged.status, 401);
  t.equal(forged.body.code, 'INVALID_SIGNATURE');
  t.match(forged.body.message, /no WEBHOOK_SECRET/);
  // Even a body that is not JSON learns nothing but 401.
  t.equal((await deliver(base, '{not json')).status, 401);
  t.equal((await readOrder(base, orderId)).status, 'pending_payment', 'the order is not paid');
  t.same(await processedKeys(service), [], 'no key used');
  t.same(await deliveries(service), [], 'nothing recorded');
});

t.test(
  'with WEBHOOK_ALLOW_UNSIGNED=true and no secret, unsigned deliveries are accepted and kept as unsigned',
  async (t) => {
    const service = await buildTestApp(t, { WEBHOOK_SECRET: '', WEBHOOK_ALLOW_UNSIGNED: true });
    const base = await listen(service.app);
    const { orderId } = await pendingOrder(base, service.app);
    const answer = await deliver(
      base,
      webhook({ idempotency_key: 'evt_unsigned', order_id: orderId, event_type: 'success' }),
    );
    t.equal(answer.status, 200);
    t.same(answer.body, { order_id: orderId, status: 'paid', payment_status: 'completed' });
    t.same(
      (await deliveries(service, 'evt_unsigned')).map((d) => d.signature),
      ['unsigned'],
    );
  },
);

t.test('a success whose amount or currency differ from the order does not pay it, and says so', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
  const base = await listen(service.app);
  // 2 units at 1999: the order's total is 3998 (USD, the default CURRENCY).
  const { orderId } = await pendingOrder(base, service.app);
  const mismatchOf = async () =>
    await service.app.db
      .selectFrom('payments')
      .select(['status', 'mismatch'])
      .where('order_id', '=', orderId)
      .executeTakeFirstOrThrow();

  const tampered = webhook({
    idempotency_key: 'evt_cheap',
    order_id: orderId,
    event_type: 'success',
    amount_cents: 100,
    currency: 'usd',
  });
  const first = await deliver(base, tampered, signed(tampered));
  // A 2xx: the delivery is recorded and will never succeed, so the provider must not retry it for days.
  t.equal(first.status, 200);
  t.same(first.body, {
    order_id: orderId,
    status: 'pending_payment',
    payment_status: 'pending',
    applied: false,
    reason: 'PAYMENT_MISMATCH',
    message: 'paid 100 usd, the order is 3998 USD: recorded, the order is not paid',
  });
  t.equal((await readOrder(base, orderId)).status, 'pending_payment', 'the order is not paid');
  t.same(await mismatchOf(), {
    status: 'pending',
    mismatch: {
      idempotency_key: 'evt_cheap',
      amount_cents: 100,
      currency: 'usd',
      expected_amount_cents: 3998,
      expected_currency: 'USD',
    },
  });
  const replay = await deliver(base, tampered, signed(tampered));
  t.equal(replay.status, 200);
  t.same(replay.body, first.body, 'a redelivery answers the same');
  t.equal(replay.headers.get('idempotent-replayed'), 'true');
  t.same(
    (await deliveries(service, 'evt_cheap')).map((d) => [d.response_status, d.replayed]),
    [
      [200, false],
      [200, true],
    ],
    'both deliveries are kept for ops',
  );

  const euros = webhook({
    idempotency_key: 'evt_euros',
    order_id: orderId,
    event_type: 'success',
    amount_cents: 3998,
    currency: 'EUR',
  });
  const other = await deliver(base, euros, signed(euros));
  t.equal(other.body.status, 'pending_payment', 'the right amount in another currency pays nothing either');
  t.match(await mismatchOf(), { mismatch: { idempotency_key: 'evt_euros', currency: 'EUR' } });

  const right = webhook({
    idempotency_key: 'evt_right',
    order_id: orderId,
    event_type: 'success',
    amount_cents: 3998,
    currency: 'usd',
  });
  const paid = await deliver(base, right, signed(right));
  t.same(paid.body, { order_id: orderId, status: 'paid', payment_status: 'completed' }, 'the right payment pays');
});

t.test('deliveries for orders that do not exist are purged after WEBHOOK_RETAIN_SECONDS, others kept', async (t) => {
  const service = await buildTestApp(t, {
    WEBHOOK_SECRET: SECRET,
    WEBHOOK_RETAIN_SECONDS: 60,
    RECOVERY_INTERVAL_MS: 0,
  });
  const base = await listen(service.app);
  const { orderId } = await pendingOrder(base, service.app);
  for (const [key, id] of [
    ['evt_early', 987_654],
    ['evt_fresh', 987_655],
    ['evt_known', orderId],
  ] as const) {
    const body = webhook({ idempotency_key: key, order_id: id, event_type: 'success' });
    await deliver(base, body, signed(body));
  }
  // Two of them were received long ago.
  await service.app.db
    .updateTable('webhook_deliveries')
    .set({ received_at: new Date(Date.now() - 120_000) } as never)
    .where('idempotency_key', 'in', ['evt_early', 'evt_known'])
    .execute();
  t.same(await service.app.payments.purgeOrphanDeliveries(), { more: false });
  t.same(
    (await deliveries(service)).map((d) => d.idempotency_key),
    ['evt_fresh', 'evt_known'],
    'only the old delivery for an unknown order is gone',
  );
});

t.test('malformed JSON and bodies missing fields are refused with 400 and change nothing', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
  const base = await listen(service.app);
  const { orderId } = await pendingOrder(base, service.app);
  const cases: { name: string; body: string; code: string }[] = [
    { name: 'malformed JSON', body: '{"idempotency_key": "k1", "order_id": ', code: 'INVALID_JSON' },
    { name: 'empty body', body: '', code: 'INVALID_JSON' },
    {
      name: 'missing event_type',
      body: JSON.stringify({ idempotency_key: 'k1', order_id: orderId }),
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'missing idempotency_key',
      body: JSON.stringify({ order_id: orderId, event_type: 'success' }),
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'missing order_id',
      body: JSON.stringify({ idempotency_key: 'k1', event_type: 'success' }),
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'unknown event_type',
      body: webhook({ idempotency_key: 'k1', order_id: orderId, event_type: 'refund' }),
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'order_id as text',
      body: JSON.stringify({ idempotency_key: 'k1', order_id: String(orderId), event_type: 'success' }),
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'order_id zero',
      body: webhook({ idempotency_key: 'k1', order_id: 0, event_type: 'success' }),
      code: 'VALIDATION_ERROR',
    },
    {
      name: 'empty idempotency_key',
      body: webhook({ idempotency_key: '', order_id: orderId, event_type: 'success' }),
      code: 'VALIDATION_ERROR',
    },
    { name: 'JSON array', body: '[]', code: 'VALIDATION_ERROR' },
  ];
  for (const c of cases) {
    const answer = await deliver(base, c.body);
    t.equal(answer.status, 400, `${c.name}: 400`);
    t.equal(answer.body.code, c.code, `${c.name}: ${c.code}`);
  }
  t.match(await readOrder(base, orderId), { status: 'pending_payment' }, 'the order is unchanged');
  t.same(await processedKeys(service), [], 'no key used up');
});

t.test(
  'with a secret set, an unsigned malformed body is refused with 401: the signature is checked first',
  async (t) => {
    const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
    const base = await listen(service.app);
    const cases = [
      { name: 'malformed JSON', body: '{"idempotency_key": "k1", "order_id": ' },
      { name: 'empty body', body: '' },
      { name: 'body missing fields', body: JSON.stringify({ order_id: 1 }) },
    ];
    for (const c of cases) {
      for (const [how, headers] of [
        ['unsigned', {}],
        ['forged', signed(c.body, 'not-the-secret')],
      ] as const) {
        const answer = await deliver(base, c.body, headers);
        t.equal(answer.status, 401, `${how} ${c.name}: 401`);
        t.equal(answer.body.code, 'INVALID_SIGNATURE', `${how} ${c.name}: INVALID_SIGNATURE`);
      }
    }
    t.same(await deliveries(service), [], 'nothing recorded');
  },
);

t.test('with a secret set, a correctly signed but invalid body is refused with 400', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
  const base = await listen(service.app);
  const malformed = '{"idempotency_key": "k1", "order_id": ';
  const missing = JSON.stringify({ idempotency_key: 'k1', order_id: 1 });
  const badJson = await deliver(base, malformed, signed(malformed));
  t.equal(badJson.status, 400);
  t.equal(badJson.body.code, 'INVALID_JSON');
  const badBody = await deliver(base, missing, signed(missing));
  t.equal(badBody.status, 400);
  t.equal(badBody.body.code, 'VALIDATION_ERROR');
  t.same(await processedKeys(service), [], 'no key used up');
});

t.test('webhook input out of any range is a 4xx, never a 5xx', async (t) => {
  const service = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true });
  const base = await listen(service.app);
  const { orderId } = await pendingOrder(base, service.app);
  const cases: { name: string; body: string }[] = [
    // Integers past bigint's range: Postgres refuses them, the client must hear it was its input.
    {
      name: 'order_id past bigint',
      body: '{"idempotency_key":"k-big","order_id":100000000000000000000,"event_type":"success"}',
    },
    {
      name: 'idempotency_key with a NUL',
      body: JSON.stringify({ idempotency_key: 'k\u0000nul', order_id: orderId, event_type: 'success' }),
    },
    {
      name: 'payload field with a NUL',
      body: JSON.stringify({
        idempotency_key: 'k-nul-payload',
        order_id: orderId,
        event_type: 'success',
        note: 'a\u0000b',
      }),
    },
  ];
  for (const c of cases) {
    const answer = await deliver(base, c.body);
    t.ok(
      answer.status >= 400 && answer.status < 500,
      `${c.name}: 4xx (got ${answer.status} ${answer.body.code ?? ''})`,
    );
  }
  t.match(await readOrder(base, orderId), { status: 'pending_payment' }, 'the order is unchanged');
});
