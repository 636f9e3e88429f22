/**
 * Redis is a fenced copy of part of the ledger (docs/redis-loss.md): when it loses a product's state (FLUSHALL,
 * a restart on an empty data directory, a stale replica), the service notices by itself, rebuilds the product
 * from Postgres and never sells a unit twice. Each test runs its own redis-server, since it flushes it.
 */
import { Redis } from 'ioredis';
import pg from 'pg';
import pino from 'pino';
import t, { type Test } from 'tap';
import { SOLD_ORDER_STATUSES } from '../src/db/schema.js';
import { createRedisRebuilder } from '../src/domain/redis-rebuild.js';
import { signPayload } from '../src/domain/signatures.js';
import { productKeys, sweepScheduleKey } from '../src/redis/keys.js';
import { buildTestApp, createProduct } from './support/app.js';
import { lockOrderRow, lockProductRow } from './support/postgres-state.js';
import { privateRedis } from './support/private-redis.js';
import { poll } from './support/wait.js';

const SECRET = 'whsec_redis_loss';

async function lossWorld(t: Test, settings: Record<string, string | number> = {}) {
  const redisServer = await privateRedis(t);
  const service = await buildTestApp(t, {
    REDIS_URL: redisServer.url,
    WEBHOOK_SECRET: SECRET,
    REDIS_LOSS_CHECK_MS: 50,
    RECOVERY_INTERVAL_MS: 0,
    // The tests hold a product's row on purpose: a rebuild waiting for it must not time out meanwhile.
    DATABASE_TIMEOUT_MS: 15_000,
    // Not a test of timeouts: a busy machine must not turn a conversion into a 503 before it reaches Postgres.
    REDIS_COMMAND_TIMEOUT_MS: 5000,
    ...settings,
  });
  const direct = new Redis(redisServer.url);
  t.teardown(() => direct.disconnect());
  const { app } = service;
  const hold = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/api/holds', payload: body, headers });
  const order = (holdId: string) => app.inject({ method: 'POST', url: '/api/orders', payload: { hold_id: holdId } });
  const product = async (id: number) => (await app.inject({ method: 'GET', url: `/api/products/${id}` })).json();
  const webhook = (body: Record<string, unknown>) => {
    const raw = JSON.stringify(body);
    return app.inject({
      method: 'POST',
      url: '/api/webhooks/payment',
      payload: raw,
      headers: { 'content-type': 'application/json', 'x-signature': signPayload(raw, SECRET) },
    });
  };
  const pool = new pg.Pool({ connectionString: service.config.DATABASE_URL, max: 2 });
  t.teardown(() => pool.end());
  const liveUnits = async (productId: number): Promise<number> => {
    const { rows } = await pool.query(
      `SELECT coalesce(sum(i.qty), 0)::int AS n FROM order_items i JOIN orders o ON o.id = i.order_id
        WHERE i.product_id = $1 AND o.status = ANY($2)`,
      [productId, [...SOLD_ORDER_STATUSES]],
    );
    return rows[0].n;
  };
  /** Holds a product's row FOR UPDATE from another session, as a slow transaction would, until `release`. */
  const lockRow = (productId: number) => lockProductRow(t, { db: pool }, service.config.DATABASE_URL, productId);
  /** Holds an order's row FOR UPDATE from another session until `release`. */
  const lockOrder = (orderId: number) => lockOrderRow(t, { db: pool }, service.config.DATABASE_URL, orderId);
  return { ...service, direct, pool, hold, order, product, webhook, liveUnits, lockProductRow: lockRow, lockOrder };
}

t.test(
  'a FLUSHALL with holds, orders, limits and Idempotency-Keys live: noticed, rebuilt, nothing sold twice',
  async (t) => {
    const w = await lossWorld(t);
    const limited = await createProduct(w.app, { stock: 20, per_customer_limit: 2, price_cents: 500 });

    // Before the loss: c1 bought its 2 (pending payment), c2 bought 1 (paid), c3 holds 1 under an Idempotency-Key.
    const c1 = (await w.hold({ product_id: limited.id, qty: 2, customer_id: 'c1' })).json();
    const c1Order = (await w.order(c1.hold_id)).json();
    const c2 = (await w.hold({ product_id: limited.id, qty: 1, customer_id: 'c2' })).json();
    const c2Order = (await w.order(c2.hold_id)).json();
    t.equal(
      (await w.webhook({ idempotency_key: 'pay-c2', order_id: c2Order.order_id, event_type: 'success' })).statusCode,
      200,
    );
    const key = { 'idempotency-key': 'cart-c3' };
    const c3 = await w.hold({ product_id: limited.id, qty: 1, customer_id: 'c3' }, key);
    t.equal(c3.statusCode, 201);
    t.match(await w.product(limited.id), { stock: 20, held: 1, sold: 3, available_stock: 16 });

    await w.direct.flushall();
    t.equal(
      await w.direct.exists(productKeys(w.config.REDIS_KEY_PREFIX, limited.id).inventory),
      0,
      'Redis lost everything',
    );

    // The loss watcher notices without any request and rebuilds from Postgres.
    const rebuilt = await poll(
      () => w.direct.hget(productKeys(w.config.REDIS_KEY_PREFIX, limited.id).inventory, 'sold'),
      (sold) => sold !== null,
      5000,
    );
    t.equal(rebuilt, '3', 'sold rebuilt from live orders (2 pending + 1 paid)');
    t.match(
      await w.product(limited.id),
      { stock: 20, held: 0, sold: 3, available_stock: 17 },
      'the lost hold is back on sale',
    );
    const listed = (await w.app.inject({ method: 'GET', url: '/api/products' })).json();
    t.match(listed, [{ id: limited.id, sold: 3, available_stock: 17 }], 'the listing shows the rebuilt figures');

    t.equal(
      (await w.app.inject({ method: 'GET', url: `/api/holds/${c3.json().hold_id}` })).statusCode,
      404,
      'the lost hold is gone',
    );
    const limit = await w.hold({ product_id: limited.id, qty: 1, customer_id: 'c1' });
    t.equal(limit.statusCode, 409, 'c1 bought its 2 before the loss: still at its limit');
    t.equal(limit.json().code, 'CUSTOMER_LIMIT_EXCEEDED');

    // The Idempotency-Key retry gets a clean new decision, not a second hold beside a live first one.
    const retry = await w.hold({ product_id: limited.id, qty: 1, customer_id: 'c3' }, key);
    t.equal(retry.statusCode, 201, 'the retry is decided afresh');
    t.not(retry.json().hold_id, c3.json().hold_id);
    const again = await w.hold({ product_id: limited.id, qty: 1, customer_id: 'c3' }, key);
    t.equal(again.headers['idempotent-replayed'], 'true', 'and its copies replay it');
    t.match(await w.product(limited.id), { held: 1, sold: 3 }, 'one hold for the key, not two');

    // Cancelling a pre-loss order returns its units once.
    const failed = await w.webhook({ idempotency_key: 'fail-c1', order_id: c1Order.order_id, event_type: 'failure' });
    t.match(failed.json(), { status: 'cancelled' });
    t.match(await w.product(limited.id), { held: 1, sold: 1, available_stock: 18 }, 'its 2 units are back on sale');
    const c1Again = await w.hold({ product_id: limited.id, qty: 2, customer_id: 'c1' });
    t.equal(c1Again.statusCode, 201, "c1's allowance came back with the cancellation");
    const replayed = await w.webhook({ idempotency_key: 'fail-c1', order_id: c1Order.order_id, event_type: 'failure' });
    t.equal(replayed.statusCode, 200);
    t.match(await w.product(limited.id), { held: 3, sold: 1 }, 'units returned once, not twice');
    t.equal(await w.liveUnits(limited.id), 1, 'Postgres agrees: 1 unit in live orders');
  },
);

t.test(
  'a conversion held up in Postgres at the moment of the loss cannot commit after the rebuild: fenced',
  async (t) => {
    const w = await lossWorld(t);
    const product = await createProduct(w.app, { stock: 1 });
    const held = (await w.hold({ product_id: product.id, qty: 1 })).json();

    // Another session holds the product's row: the conversion's insert and the rebuild both queue behind it.
    const blocker = await w.lockProductRow(product.id);
    const waiting = blocker.waiting;

    // The rebuild queues first; then a conversion claims its hold in Redis (still intact) and queues its insert.
    const rebuild = w.app.rebuilder.ensure(product.id, 'test');
    t.equal(await poll(waiting, (n) => n >= 1, 15_000), 1, 'the rebuild waits for the row');
    const conversion = w.order(held.hold_id);
    t.equal(await poll(waiting, (n) => n >= 2, 15_000), 2, 'the conversion claimed its hold and waits for the row');

    // Redis loses everything now; then the row is free: the rebuild goes first.
    await w.direct.flushall();
    await blocker.release();
    t.equal(await rebuild, 'rebuilt', 'the rebuild found the copy lost and rebuilt it');
    const answer = await conversion;
    t.equal(answer.statusCode, 409, 'the conversion from before the loss is refused');
    t.equal(answer.json().code, 'HOLD_LOST');
    t.equal(await w.liveUnits(product.id), 0, 'no order was committed for it');
    t.match(
      await w.product(product.id),
      { stock: 1, held: 0, sold: 0, available_stock: 1 },
      'its unit is on sale, once',
    );

    // The unit sells once, to the next buyer.
    const next = await w.hold({ product_id: product.id, qty: 1 });
    t.equal(next.statusCode, 201);
    t.equal((await w.order(next.json().hold_id)).statusCode, 201);
    t.equal(await w.liveUnits(product.id), 1, 'one unit in live orders for a stock of 1');
  },
);

t.test('a product the loss watcher rebuilt is back on the sweep schedule, so its holds expire again', async (t) => {
  const w = await lossWorld(t);
  const product = await createProduct(w.app, { stock: 5 });
  const schedule = sweepScheduleKey(w.config.REDIS_KEY_PREFIX);
  t.ok(await w.direct.zscore(schedule, String(product.id)), 'on the schedule from its creation');
  await w.direct.flushall();
  // Rebuilt by the watcher alone: no request asks for the product meanwhile.
  const inventory = productKeys(w.config.REDIS_KEY_PREFIX, product.id).inventory;
  t.ok(
    await poll(
      () => w.direct.exists(inventory),
      (n) => n === 1,
      10_000,
    ),
    'the watcher rebuilt its copy',
  );
  t.ok(
    await poll(
      () => w.direct.zscore(schedule, String(product.id)),
      (score) => score !== null,
      5000,
    ),
    'and put it back on the sweep schedule, which the flush took too',
  );
});

t.test('a conversion that committed before the rebuild took the row is counted by it', async (t) => {
  const w = await lossWorld(t);
  const product = await createProduct(w.app, { stock: 1 });
  const held = (await w.hold({ product_id: product.id, qty: 1 })).json();
  const blocker = await w.lockProductRow(product.id);
  const waiting = blocker.waiting;
  const conversion = w.order(held.hold_id);
  await poll(waiting, (n) => n >= 1, 15_000);
  await w.direct.flushall();
  // The watcher notices the loss; its rebuild queues behind the conversion's insert.
  t.equal(await poll(waiting, (n) => n >= 2, 15_000), 2, 'the rebuild waits behind the conversion');
  await blocker.release();
  t.equal((await conversion).statusCode, 201, 'the conversion committed first');
  const state = await poll(
    () => w.product(product.id),
    (p) => p.sold === 1,
    5000,
  );
  t.match(state, { stock: 1, held: 0, sold: 1, available_stock: 0 }, 'the rebuild counted its order');
  t.equal(await w.liveUnits(product.id), 1);
  t.equal((await w.hold({ product_id: product.id, qty: 1 })).statusCode, 409, 'nothing left to sell twice');
});

t.test('a stale copy (a replica that missed writes) is found by its generation and rebuilt', async (t) => {
  const w = await lossWorld(t);
  const product = await createProduct(w.app, { stock: 5 });
  const held = (await w.hold({ product_id: product.id, qty: 2 })).json();
  const order = await w.order(held.hold_id);
  t.equal(order.statusCode, 201);
  const inventory = productKeys(w.config.REDIS_KEY_PREFIX, product.id).inventory;
  const generation = Number(await w.direct.hget(inventory, 'generation'));
  // As a promoted replica would be: an older generation, and counters that missed the sale.
  await w.direct.hset(inventory, 'generation', generation - 1, 'sold', 0, 'held', 3);
  const rebuilt = await poll(
    () => w.direct.hget(inventory, 'generation'),
    (g) => Number(g) > generation,
    5000,
  );
  t.ok(Number(rebuilt) > generation, 'rebuilt under a new generation');
  t.match(await w.product(product.id), { stock: 5, held: 0, sold: 2, available_stock: 3 });
});

t.test('a hold granted by a copy that missed sales, before any watcher saw it, is refused by Postgres', async (t) => {
  // No watcher: the window between a stale replica's promotion and the loss check, held open.
  const w = await lossWorld(t, { REDIS_LOSS_CHECK_MS: 0 });
  const product = await createProduct(w.app, { stock: 3 });
  const first = (await w.hold({ product_id: product.id, qty: 2 })).json();
  t.equal((await w.order(first.hold_id)).statusCode, 201, 'two of three units sold');
  const inventory = productKeys(w.config.REDIS_KEY_PREFIX, product.id).inventory;
  // As a replica promoted before it got the sale would be: the same generation, the sale missing.
  await w.direct.hset(inventory, 'sold', 0);
  const granted = await w.hold({ product_id: product.id, qty: 2 });
  t.equal(granted.statusCode, 201, 'the stale copy grants two units Postgres has sold');
  const refused = await w.order(granted.json().hold_id);
  t.equal(refused.statusCode, 409, 'the order is refused');
  t.equal(refused.json().code, 'HOLD_LOST', 'as a hold lost in a data loss');
  t.equal(await w.liveUnits(product.id), 2, 'Postgres still has two units sold of three: nothing sold twice');
  const rebuilt = await poll(
    () => w.product(product.id),
    (p) => p.sold === 2,
    5000,
  );
  t.match(rebuilt, { stock: 3, held: 0, sold: 2, available_stock: 1 }, 'and the refusal had the copy rebuilt at once');
  const last = (await w.hold({ product_id: product.id, qty: 1 })).json();
  t.equal((await w.order(last.hold_id)).statusCode, 201, 'the last unit sells');
  t.equal(await w.liveUnits(product.id), 3, 'sold out exactly');
});

t.test('/readyz says which products are being rebuilt, and holds on them answer 503 meanwhile', async (t) => {
  const w = await lossWorld(t);
  const product = await createProduct(w.app, { stock: 5 });
  const blocker = await w.lockProductRow(product.id);
  await w.direct.flushall();
  await poll(
    async () => w.app.rebuilder.rebuilding(),
    (ids) => ids.includes(product.id),
    5000,
  );
  const ready = await w.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 503);
  t.match(ready.json(), { status: 'rebuilding', rebuilding: [product.id] });
  const refused = await w.hold({ product_id: product.id, qty: 1 });
  t.equal(refused.statusCode, 503, 'a hold during the rebuild answers 503');
  t.equal(refused.headers['retry-after'], '1');
  await blocker.release();
  await poll(
    async () => w.app.rebuilder.rebuilding(),
    (ids) => ids.length === 0,
    5000,
  );
  t.equal((await w.hold({ product_id: product.id, qty: 1 })).statusCode, 201, 'served again once rebuilt');
  t.equal((await w.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
});

// Found by test/model.test.ts (two Redis losses in a row, then a read answered 503 "Redis lost it again"): a
// caller that found the copy missing joined a check that had read the copy just before the loss.
t.test('a caller that finds the copy lost during a check that read it before the loss gets it rebuilt', async (t) => {
  const w = await lossWorld(t);
  const product = await createProduct(w.app, { stock: 5 });
  let joiner: Promise<unknown> | undefined;
  // The service's own commands, with one seam: right after the first check reads the copy, Redis loses
  // everything and a caller that sees that asks for the copy while the check is still running.
  const commands = {
    ...w.app.redisCommands,
    inventories: async (ids: number[]) => {
      const copies = await w.app.redisCommands.inventories(ids);
      if (!joiner) {
        await w.direct.flushall();
        joiner = rebuilder.ensure(product.id, 'missing in redis');
      }
      return copies;
    },
  };
  const rebuilder = createRedisRebuilder({ db: w.app.db, commands, log: pino({ level: 'silent' }) });
  t.equal(await rebuilder.ensure(product.id, 'test'), 'present', 'the first check read the copy before the loss');
  // Its own check rebuilt the copy (or found it rebuilt by the service's loss watcher, which also runs).
  t.not(await joiner, 'absent');
  t.equal(
    await w.direct.exists(productKeys(w.config.REDIS_KEY_PREFIX, product.id).inventory),
    1,
    'the caller that came after the loss is answered once the copy is back',
  );
});

t.test(
  'an order cancelled while its product is rebuilt gets its units back: the rebuild fences cancellations too',
  async (t) => {
    const w = await lossWorld(t);
    const product = await createProduct(w.app, { stock: 5 });
    const placed = async (qty: number) =>
      (await w.order((await w.hold({ product_id: product.id, qty })).json().hold_id)).json().order_id as number;
    // The order cancelled during the rebuild: 2 units, live when the rebuild reads the live orders.
    const cancelled = await placed(2);
    // An order whose cancellation a crash left with its units to return: the rebuild marks such orders returned
    // after it read the live ones. The test holds its row, so the rebuild pauses between the two steps.
    const interrupted = await placed(1);
    const failed = await w.webhook({
      idempotency_key: 'fail-interrupted',
      order_id: interrupted,
      event_type: 'failure',
    });
    t.match(failed.json(), { status: 'cancelled' });
    await w.pool.query('UPDATE orders SET units_released_at = NULL WHERE id = $1', [interrupted]);
    const blocker = await w.lockOrder(interrupted);

    await w.direct.flushall();
    t.equal(await poll(blocker.waiting, (n) => n >= 1, 15_000), 1, 'the rebuild read the live orders, and waits');
    let answered = false;
    const cancellation = w
      .webhook({ idempotency_key: 'fail-during-rebuild', order_id: cancelled, event_type: 'failure' })
      .finally(() => (answered = true));
    // Fenced, the cancellation waits for the rebuild; unfenced, it commits and is answered meanwhile.
    await poll(
      async () => answered || (await blocker.waiting()) >= 2,
      (done) => done,
      15_000,
    );
    await blocker.release();
    const answer = await cancellation;
    t.equal(answer.statusCode, 200);
    t.match(answer.json(), { status: 'cancelled' }, 'the order is cancelled');
    await poll(
      async () => w.app.rebuilder.rebuilding(),
      (ids) => ids.length === 0,
      5000,
    );
    t.equal(await w.liveUnits(product.id), 0, 'no live order is left');
    t.match(
      await w.product(product.id),
      { stock: 5, held: 0, sold: 0, available_stock: 5 },
      'every unit is on sale again: the cancelled order is not counted as sold',
    );
  },
);
