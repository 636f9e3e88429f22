/**
 * Group commit of payment webhooks (src/db/payment-batches.ts) against a real Postgres: the events of one turn
 * are one statement (their rows share the transaction id that wrote them, `xmin`), each event is decided by its
 * own order's state and its own idempotency key, and one bad event never costs its batch-mates theirs. Then the
 * same through the service, with real concurrent deliveries: copies, a success racing a failure for each order
 * (the loser is judged again against what the winner did), and Postgres cut away (a fast 503).
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import t, { type Test } from 'tap';
import { createDatabase } from '../src/db/connection.js';
import { insertOrdersForClaims } from '../src/db/orders.js';
import { createPaymentBatches } from '../src/db/payment-batches.js';
import type { PaymentEvent } from '../src/db/payments.js';
import type { Database } from '../src/db/schema.js';
import { signPayload } from '../src/domain/signatures.js';
import { StoreUnavailableError } from '../src/errors.js';
import { buildTestApp, createProduct, createTestDatabase, listen } from './support/app.js';
import { request, sendRaw, tally } from './support/http.js';
import { proxyInFrontOf } from './support/tcp-proxy.js';

interface Shop {
  db: Kysely<Database>;
  /** Orders awaiting payment, 1000 cents each. */
  orderIds: number[];
}

/** A database of its own with `orders` orders awaiting payment, and a pool on it. */
async function shop(t: Test, orders: number, url?: string): Promise<Shop> {
  const db = createDatabase({ url: url ?? (await createTestDatabase(t)), timeoutMs: 500, poolSize: 4 });
  t.teardown(() => db.destroy());
  const [product] = await db
    .insertInto('products')
    .values({ name: 'Lamp', price_cents: 1000, stock: 1000 })
    .returning('id')
    .execute();
  const written = await insertOrdersForClaims(
    db,
    Array.from({ length: orders }, (_, i) => ({
      claimId: randomUUID(),
      holdId: `${product!.id}-hold${i}`,
      customerId: null,
      productId: product!.id,
      qty: 1,
      unitPriceCents: 1000,
      paymentMethod: 'card',
      paymentTtlSeconds: 900,
      redisGeneration: 0,
    })),
  );
  return {
    db,
    orderIds: written.map((write) => {
      if (write.kind !== 'written') throw new Error(`an order of the fixture was not written (${write.kind})`);
      return write.order.id;
    }),
  };
}

/** A success for an order awaiting payment, judged as the payment desk judges it. */
function success(orderId: number, changes: Partial<PaymentEvent> = {}): PaymentEvent {
  const idempotencyKey = `evt_${randomUUID()}`;
  return {
    idempotencyKey,
    requestHash: `hash-of-${idempotencyKey}`,
    orderId,
    expectedStatus: 'pending_payment',
    expectedPaymentStatus: 'pending',
    eventType: 'success',
    payload: { idempotency_key: idempotencyKey, order_id: orderId, event_type: 'success' },
    signature: 'valid',
    status: 'paid',
    paymentStatus: 'completed',
    changes: true,
    mismatch: null,
    responseStatus: 200,
    responseBody: { order_id: orderId, status: 'paid', payment_status: 'completed' },
    ...changes,
  };
}

/** The transaction that wrote each key's row (`xmin`): one per statement in autocommit. */
async function writers(db: Kysely<Database>, keys: string[]): Promise<Map<string, string>> {
  const { rows } = await sql<{ idempotency_key: string; xmin: string }>`
    SELECT idempotency_key, xmin::text AS xmin FROM processed_webhooks WHERE idempotency_key = ANY(${keys})`.execute(
    db,
  );
  return new Map(rows.map((r) => [r.idempotency_key, r.xmin]));
}

/** What one order's rows say: its state, its payment's, and the deliveries and keys recorded for it. */
async function orderState(db: Kysely<Database>, orderId: number) {
  const { rows } = await sql<{ status: string; payment: string; mismatch: unknown; keys: number; deliveries: number }>`
    SELECT o.status || '/' || o.payment_status AS status, p.status AS payment, p.mismatch,
           (SELECT count(*)::int FROM processed_webhooks k WHERE k.order_id = o.id) AS keys,
           (SELECT count(*)::int FROM webhook_deliveries d WHERE d.order_id = o.id) AS deliveries
    FROM orders o JOIN payments p ON p.order_id = o.id WHERE o.id = ${orderId}`.execute(db);
  return rows[0];
}

t.test('the payment events of one turn are applied by one statement, each to its own order', async (t) => {
  const { db, orderIds } = await shop(t, 5);
  const batches = createPaymentBatches(db, { maxPaymentBatch: 100 });
  const mismatch = { idempotency_key: 'x', amount_cents: 1, currency: 'USD', expected_amount_cents: 1000 };
  const events = [
    success(orderIds[0]!),
    success(orderIds[1]!, { eventType: 'failure', status: 'cancelled', paymentStatus: 'failed' }),
    success(orderIds[2]!),
    // A success that pays too little: recorded on its payment, nothing else changes.
    success(orderIds[3]!, { status: 'pending_payment', paymentStatus: 'pending', changes: false, mismatch }),
  ];
  const recorded = await Promise.all(events.map((event) => batches.record(event)));
  t.same(
    recorded,
    events.map(() => ({ matched: true, fresh: true })),
    'every event found its order as judged, and its key new',
  );
  t.same(
    await Promise.all(orderIds.map((id) => orderState(db, id))),
    [
      { status: 'paid/completed', payment: 'completed', mismatch: null, keys: 1, deliveries: 1 },
      { status: 'cancelled/failed', payment: 'failed', mismatch: null, keys: 1, deliveries: 1 },
      { status: 'paid/completed', payment: 'completed', mismatch: null, keys: 1, deliveries: 1 },
      { status: 'pending_payment/pending', payment: 'pending', mismatch, keys: 1, deliveries: 1 },
      { status: 'pending_payment/pending', payment: 'pending', mismatch: null, keys: 0, deliveries: 0 },
    ],
    "each order changed as its own event says (and the one with no event not at all), each delivery's key kept",
  );
  const xmins = await writers(
    db,
    events.map((e) => e.idempotencyKey),
  );
  t.equal(xmins.size, 4, 'all four keys in Postgres');
  t.equal(new Set(xmins.values()).size, 1, 'written by one transaction: one statement, one commit');
  const { rows } = await sql<{ xmin: string }>`
    SELECT DISTINCT xmin::text AS xmin FROM orders WHERE id = ANY(${orderIds.slice(0, 3)})`.execute(db);
  t.same(
    rows.map((r) => r.xmin),
    [[...xmins.values()][0]],
    'and the orders it changed by the same transaction',
  );

  const later = success(orderIds[4]!);
  await batches.record(later);
  t.not(
    (await writers(db, [later.idempotencyKey])).get(later.idempotencyKey),
    [...xmins.values()][0],
    'an event of a later turn goes in a statement of its own',
  );
});

t.test('copies of one delivery in one batch: applied once, the copies find the key used', async (t) => {
  const { db, orderIds } = await shop(t, 2);
  const batches = createPaymentBatches(db, { maxPaymentBatch: 100 });
  const original = success(orderIds[0]!);
  const mate = success(orderIds[1]!);
  // The same key for another order (a provider's bug, or a forgery): it must not be applied to that order.
  const reused = { ...success(orderIds[1]!), idempotencyKey: original.idempotencyKey };
  const recorded = await Promise.all([original, original, mate, reused].map((event) => batches.record(event)));
  t.same(recorded[0], { matched: true, fresh: true }, 'the first copy is applied');
  t.same(recorded[1], { matched: true, fresh: false }, 'the second finds the key used: it replays the stored answer');
  t.same(recorded[2], { matched: true, fresh: true }, 'the batch-mate is applied');
  t.same(recorded[3], { matched: true, fresh: false }, 'the key reused for another order finds it used too');
  t.match(await orderState(db, orderIds[0]!), { status: 'paid/completed', keys: 1, deliveries: 1 }, 'paid once');
  t.match(
    await orderState(db, orderIds[1]!),
    { status: 'paid/completed', keys: 1, deliveries: 1 },
    "the other order paid by its own event only, the reused key's changed nothing",
  );
  const xmins = await writers(db, [original.idempotencyKey, mate.idempotencyKey]);
  t.equal(new Set(xmins.values()).size, 1, 'the first copy and the batch-mate in one statement');
});

t.test(
  'an event whose order changed meanwhile writes nothing and is judged again; its batch-mates apply',
  async (t) => {
    const { db, orderIds } = await shop(t, 3);
    const batches = createPaymentBatches(db, { maxPaymentBatch: 100 });
    // Judged while the order awaited payment; cancelled (settlement, say) before the statement ran.
    const stale = success(orderIds[1]!);
    await db
      .updateTable('orders')
      .set({ status: 'cancelled', payment_status: 'failed' })
      .where('id', '=', orderIds[1]!)
      .execute();
    const events = [success(orderIds[0]!), stale, success(orderIds[2]!)];
    const recorded = await Promise.all(events.map((event) => batches.record(event)));
    t.same(recorded[1], { matched: false, fresh: false }, 'the stale event did not find its order as judged');
    t.match(
      await orderState(db, orderIds[1]!),
      { status: 'cancelled/failed', payment: 'pending', keys: 0, deliveries: 0 },
      'nothing was written for it, so its key is still free for the second judgement',
    );
    t.same(
      [recorded[0], recorded[2]],
      [
        { matched: true, fresh: true },
        { matched: true, fresh: true },
      ],
      'the others applied',
    );
    // Judged again against the cancelled order: a late payment, so the money goes back.
    const again = {
      ...stale,
      expectedStatus: 'cancelled' as const,
      expectedPaymentStatus: 'failed' as const,
      status: 'refund_required' as const,
    };
    t.same(await batches.record(again), { matched: true, fresh: true }, 'the second judgement applies');
    t.match(await orderState(db, orderIds[1]!), { status: 'refund_required/completed', keys: 1, deliveries: 1 });

    // Another event for an order already in the batch: its own statement, racing the batch on the row lock.
    const first = success(orderIds[0]!, { expectedStatus: 'paid', expectedPaymentStatus: 'completed', changes: false });
    const failure = success(orderIds[0]!, {
      eventType: 'failure',
      expectedStatus: 'paid',
      expectedPaymentStatus: 'completed',
      changes: false,
      responseStatus: 409,
    });
    const [a, b] = await Promise.all([batches.record(first), batches.record(failure)]);
    t.same(
      [a, b],
      [
        { matched: true, fresh: true },
        { matched: true, fresh: true },
      ],
      'both recorded',
    );
    const xmins = await writers(db, [first.idempotencyKey, failure.idempotencyKey]);
    t.equal(new Set(xmins.values()).size, 2, 'in two statements: one statement never changes an order twice');
  },
);

t.test("an event Postgres refuses fails alone: its batch-mates' events are applied", async (t) => {
  const { db, orderIds } = await shop(t, 3);
  const batches = createPaymentBatches(db, { maxPaymentBatch: 100 });
  // jsonb refuses \u0000 (22P05): the whole statement fails, then each event is applied alone.
  const bad = success(orderIds[1]!, { payload: { note: 'nul \u0000 inside' } });
  const good = [success(orderIds[0]!), success(orderIds[2]!)];
  const settled = await Promise.allSettled([good[0]!, bad, good[1]!].map((event) => batches.record(event)));
  t.same(
    settled.map((s) => (s.status === 'rejected' ? (s.reason as { code?: string }).code : s.value)),
    [{ matched: true, fresh: true }, '22P05', { matched: true, fresh: true }],
    'the bad event gets its own error, the others are applied',
  );
  t.match(
    await orderState(db, orderIds[1]!),
    { status: 'pending_payment/pending', keys: 0, deliveries: 0 },
    'nothing of the bad one',
  );
  for (const id of [orderIds[0]!, orderIds[2]!]) {
    t.match(await orderState(db, id), { status: 'paid/completed', keys: 1, deliveries: 1 }, `order ${id} paid`);
  }
  const xmins = await writers(
    db,
    good.map((e) => e.idempotencyKey),
  );
  t.equal(new Set(xmins.values()).size, 2, 'each written again by a statement of its own');
});

t.test('more events in one turn than a batch takes go in several statements', async (t) => {
  const { db, orderIds } = await shop(t, 7);
  const batches = createPaymentBatches(db, { maxPaymentBatch: 3 });
  const events = orderIds.map((id) => success(id));
  const recorded = await Promise.all(events.map((event) => batches.record(event)));
  t.ok(
    recorded.every((r) => r.matched && r.fresh),
    'every event applied',
  );
  const xmins = await writers(
    db,
    events.map((e) => e.idempotencyKey),
  );
  const perStatement = [...xmins.values()].reduce((n, x) => n.set(x, (n.get(x) ?? 0) + 1), new Map<string, number>());
  t.same([...perStatement.values()].sort(), [1, 3, 3], 'two full batches of 3, then the one left');
});

t.test('Postgres unreachable: every event of the batch is answered unavailable, at once', async (t) => {
  const { proxy, url } = await proxyInFrontOf(t, await createTestDatabase(t));
  const { db, orderIds } = await shop(t, 4, url);
  const batches = createPaymentBatches(db, { maxPaymentBatch: 100 });
  await proxy.cut('blackhole');
  const started = Date.now();
  const settled = await Promise.allSettled(orderIds.map((id) => batches.record(success(id))));
  const ms = Date.now() - started;
  t.ok(
    settled.every((s) => s.status === 'rejected' && s.reason instanceof StoreUnavailableError),
    'each one fails as Postgres unavailable (503), none as a bug',
  );
  // About one timeout (500 ms): an outage is a fast 503 for every event of the batch.
  t.ok(ms < 2000, `answered within ${ms} ms`);
  await proxy.restore();
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM processed_webhooks`.execute(db);
  t.equal(rows[0]!.n, 0, 'nothing was written');
});

// Through the service: real HTTP deliveries, signed, sent at once.

const SECRET = 'whsec_batches_0b7e';

interface Answer {
  status: number;
  body: { order_id?: number; status?: string; code?: string };
  replayed: boolean;
  retryAfter: string | null;
  ms: number;
}

async function deliver(base: string, fields: Record<string, unknown>): Promise<Answer> {
  const raw = JSON.stringify(fields);
  const answer = await sendRaw<Answer['body']>(base, 'POST', '/api/webhooks/payment', raw, {
    'content-type': 'application/json',
    'x-signature': signPayload(raw, SECRET, Math.floor(Date.now() / 1000)),
  });
  return {
    status: answer.status,
    body: answer.body,
    replayed: answer.headers.get('idempotent-replayed') === 'true',
    retryAfter: answer.headers.get('retry-after'),
    ms: answer.ms,
  };
}

/** The service on its own database (or `databaseUrl`), and `count` orders of 1 unit awaiting payment. */
async function serviceWithOrders(t: Test, count: number, databaseUrl?: string) {
  const { app } = await buildTestApp(t, {
    WEBHOOK_SECRET: SECRET,
    ...(databaseUrl ? { DATABASE_URL: databaseUrl, DATABASE_TIMEOUT_MS: 500 } : {}),
  });
  const base = await listen(app);
  const product = await createProduct(app, { stock: 100, price_cents: 1000 });
  const orderIds: number[] = [];
  for (let i = 0; i < count; i++) {
    const hold = await request<{ hold_id: string }>(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 });
    const order = await request<{ order_id: number }>(base, 'POST', '/api/orders', { hold_id: hold.body.hold_id });
    if (order.status !== 201) throw new Error(`order answered ${order.status}`);
    orderIds.push(order.body.order_id);
  }
  return { app, base, productId: product.id, orderIds };
}

t.test('deliveries sent at once, copies among them: each order paid once, each copy the same answer', async (t) => {
  const { app, base, orderIds } = await serviceWithOrders(t, 10);
  const deliveries = orderIds.flatMap((id) => {
    const event = { idempotency_key: `evt_${id}_${randomUUID()}`, order_id: id, event_type: 'success' };
    return [event, event, event];
  });
  const answers = await Promise.all(deliveries.map((d) => deliver(base, d)));
  t.same(tally(answers.map((a) => a.status)), new Map([[200, 30]]), 'every delivery answered 200');
  for (const [i, id] of orderIds.entries()) {
    const copies = answers.slice(3 * i, 3 * i + 3);
    t.same(
      copies.map((a) => a.body),
      copies.map(() => ({ order_id: id, status: 'paid', payment_status: 'completed' })),
      `order ${id}: the three copies answered alike`,
    );
    t.equal(copies.filter((a) => !a.replayed).length, 1, `order ${id}: one copy applied, the others replayed`);
  }
  const { rows } = await sql<{ keys: number; paid: number }>`
    SELECT (SELECT count(*)::int FROM processed_webhooks) AS keys,
           (SELECT count(*)::int FROM orders WHERE status = 'paid') AS paid`.execute(app.db);
  t.same(rows[0], { keys: 10, paid: 10 }, 'ten keys, ten orders paid');
  const commits = await sql<{ n: number }>`SELECT count(DISTINCT xmin::text)::int AS n FROM processed_webhooks`.execute(
    app.db,
  );
  // How many batches formed depends on how the requests met in the event loop: told, not asserted.
  t.comment(`the ten deliveries applied were written by ${commits.rows[0]!.n} commit(s)`);
});

t.test('a success and a failure for each order at once: the loser is judged again against the winner', async (t) => {
  const { app, base, productId, orderIds } = await serviceWithOrders(t, 12);
  const deliveries = orderIds.flatMap((id) => [
    { idempotency_key: `ok_${id}`, order_id: id, event_type: 'success' },
    { idempotency_key: `ko_${id}`, order_id: id, event_type: 'failure' },
  ]);
  const answers = await Promise.all(deliveries.map((d) => deliver(base, d)));
  const finals = await app.db.selectFrom('orders').select(['id', 'status']).where('id', 'in', orderIds).execute();
  const finalOf = new Map(finals.map((o) => [Number(o.id), o.status]));
  let cancelledFirst = 0;
  for (const [i, id] of orderIds.entries()) {
    const [paid, failed] = [answers[2 * i]!, answers[2 * i + 1]!];
    const seen = `${paid.status} ${paid.body.code ?? paid.body.status}, ${failed.status} ${failed.body.code ?? failed.body.status}`;
    if (finalOf.get(id) === 'paid') {
      // The success came first; the failure, judged again against a paid order, cannot undo it.
      t.equal(seen, '200 paid, 409 ORDER_ALREADY_FINAL', `order ${id}: paid, the failure refused`);
    } else {
      // The failure came first; the success, judged again against a cancelled order, is a late payment.
      cancelledFirst++;
      t.equal(finalOf.get(id), 'refund_required', `order ${id}: cancelled, then paid late`);
      t.equal(seen, '200 refund_required, 200 cancelled', `order ${id}: both answered as applied in that order`);
    }
  }
  t.comment(`${cancelledFirst} of ${orderIds.length} orders saw the failure first`);
  const { rows } = await sql<{ keys: number }>`SELECT count(*)::int AS keys FROM processed_webhooks`.execute(app.db);
  t.equal(rows[0]!.keys, 24, 'every delivery recorded under its own key');
  // The units of cancelled orders go back on sale, once.
  const product = await request<{ sold: number }>(base, 'GET', `/api/products/${productId}`);
  t.equal(product.body.sold, orderIds.length - cancelledFirst, 'sold counts the orders the failure did not cancel');
});

t.test('Postgres cut away: deliveries get a fast 503 with Retry-After, and succeed once it is back', async (t) => {
  const { proxy, url } = await proxyInFrontOf(t, await createTestDatabase(t));
  const { app, base, orderIds } = await serviceWithOrders(t, 4, url);
  const deliveries = orderIds.map((id) => ({ idempotency_key: `evt_${id}`, order_id: id, event_type: 'success' }));
  await proxy.cut('stall');
  const during = await Promise.all(deliveries.map((d) => deliver(base, d)));
  t.same(
    during.map((a) => [a.status, a.body.code, a.retryAfter]),
    during.map(() => [503, 'SERVICE_UNAVAILABLE', '1']),
    'each delivery: 503 SERVICE_UNAVAILABLE with Retry-After',
  );
  const slowest = Math.max(...during.map((a) => a.ms));
  t.ok(slowest < 2500, `answered within ${slowest.toFixed(0)} ms, not a hang`);
  await proxy.restore();
  let after = await Promise.all(deliveries.map((d) => deliver(base, d)));
  for (let i = 0; i < 20 && after.some((a) => a.status === 503); i++) {
    await new Promise((resolve) => setTimeout(resolve, 250)); // the pool reconnects
    after = await Promise.all(deliveries.map((d) => deliver(base, d)));
  }
  t.same(
    after.map((a) => [a.status, a.body.status]),
    after.map(() => [200, 'paid']),
    "the provider's retries are applied once Postgres is back",
  );
  const { rows } = await sql<{ paid: number }>`SELECT count(*)::int AS paid FROM orders WHERE status = 'paid'`.execute(
    app.db,
  );
  t.equal(rows[0]!.paid, 4, 'every order paid');
});
