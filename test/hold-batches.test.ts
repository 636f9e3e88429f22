import t from 'tap';
import { productScriptKeys } from '../src/redis/keys.js';
import { MAX_HOLD_BATCH } from '../src/settings.js';
import type { HoldRequest, PlacedHold } from '../src/domain/holds.js';
import { buildTestApp, createProduct, type TestApp } from './support/app.js';
import { manualClock, redisNow } from './support/clock.js';
import { heldUnits, holdRecords, indexedHolds, inventory, keysOf } from './support/redis-state.js';
import { poll } from './support/wait.js';

// Requests placed in the same turn of the event loop reach Redis as one reserveStock call (src/redis/
// reserve-batches.ts). These tests place them that way on purpose and check that a batch decides exactly as
// the same requests sent one by one would.

/** Counts reserveStock calls made through the app's Redis client. */
function countScriptCalls(service: TestApp): { calls: number; requests: number } {
  const counter = { calls: 0, requests: 0 };
  const redis = service.app.redis;
  const original = redis.reserveStock;
  // ioredis copies custom commands onto its auto-pipelines, which call them again: count the client's calls only.
  redis.reserveStock = function (this: unknown, keyCount: number, ...rest: (string | number)[]) {
    if (this === redis) {
      counter.calls++;
      counter.requests += String(rest[keyCount + 5]).split('\n').length; // ARGV[6]: a line per request
    }
    return original.call(this, keyCount, ...rest);
  } as typeof redis.reserveStock;
  return counter;
}

/** Places every request in the same turn, so that they share a batch. */
function placeTogether(service: TestApp, requests: HoldRequest[]): Promise<PlacedHold[]> {
  return Promise.all(requests.map((r) => service.app.holds.place(r)));
}

/** The product's counters beside what its records and expiry index hold: they must agree. */
async function counters(service: TestApp, productId: number) {
  const { held, sold } = await inventory(service, productId);
  return {
    held,
    sold,
    recordUnits: await heldUnits(service, productId),
    expiries: await indexedHolds(service, productId),
  };
}

t.test(
  'a batch is decided in arrival order, in one script call: a request that does not fit is refused, a smaller one after it still fits',
  async (t) => {
    const service = await buildTestApp(t);
    const product = await createProduct(service.app, { stock: 5 });
    const calls = countScriptCalls(service);
    const ask = (qty: number): HoldRequest => ({ productId: product.id, qty, customerId: null });

    const answers = await placeTogether(service, [ask(3), ask(3), ask(2), ask(1)]);

    t.equal(calls.calls, 1, 'four requests, one reserveStock call');
    t.equal(answers[0]!.hold?.qty, 3, 'first: 3 units held');
    t.match(
      answers[1]!.refusal,
      { code: 'INSUFFICIENT_STOCK', available_stock: 2, requested: 3 },
      'second: only 2 left',
    );
    t.equal(answers[2]!.hold?.qty, 2, 'third: the 2 left are held');
    t.match(answers[3]!.refusal, { code: 'INSUFFICIENT_STOCK', available_stock: 0, requested: 1 }, 'fourth: sold out');
    t.not(answers[0]!.hold?.hold_id, answers[2]!.hold?.hold_id, 'two holds, two ids');
    t.equal(answers[0]!.hold?.expires_at, answers[2]!.hold?.expires_at, 'holds of one batch share their expiry');
    t.same(
      await counters(service, product.id),
      { held: 5, sold: 0, recordUnits: 5, expiries: 2 },
      'counters equal the records',
    );
  },
);

t.test('a per-customer limit counts the holds granted earlier in the same batch', async (t) => {
  const service = await buildTestApp(t);
  const product = await createProduct(service.app, { stock: 100, per_customer_limit: 2 });
  const calls = countScriptCalls(service);
  const ask = (customerId: string | null): HoldRequest => ({ productId: product.id, qty: 1, customerId });

  const settled = await Promise.allSettled(
    [ask('ann'), ask('ann'), ask('bob'), ask('ann'), ask(null)].map((r) => service.app.holds.place(r)),
  );
  const answers = settled.map((s) => (s.status === 'fulfilled' ? s.value : undefined));

  t.equal(calls.calls, 1, 'one call');
  t.ok(answers[0]?.hold && answers[1]?.hold && answers[2]?.hold, "ann's first two and bob's first are held");
  t.match(
    answers[3]?.refusal,
    { code: 'CUSTOMER_LIMIT_EXCEEDED', customer_units: 2, per_customer_limit: 2 },
    "ann's third is refused",
  );
  t.match(
    settled[4],
    { status: 'rejected', reason: { code: 'CUSTOMER_ID_REQUIRED' } },
    'a request without a customer is refused alone',
  );
  t.same(await counters(service, product.id), { held: 3, sold: 0, recordUnits: 3, expiries: 3 });
  const customerUnits = await service.redis.hgetall(keysOf(service, product.id).customerUnits);
  t.same(customerUnits, { ann: '2', bob: '1' }, 'customer units as granted');
});

t.test(
  'copies of one Idempotency-Key request in one batch hold once and answer alike; another body with the key is refused',
  async (t) => {
    const service = await buildTestApp(t);
    const product = await createProduct(service.app, { stock: 10 });
    const copy: HoldRequest = { productId: product.id, qty: 2, customerId: 'carol', idempotencyKey: 'batch-key-1' };

    const answers = await placeTogether(service, [copy, { ...copy }, { ...copy }]);
    const ids = new Set(answers.map((a) => a.hold?.hold_id));
    t.equal(ids.size, 1, 'one hold id for the three copies');
    t.ok([...ids][0], 'and it is a hold');
    t.equal(answers.filter((a) => !a.replayed).length, 1, 'the first is the original');
    t.equal(answers.filter((a) => a.replayed).length, 2, 'the others are replays');
    t.same(
      await counters(service, product.id),
      { held: 2, sold: 0, recordUnits: 2, expiries: 1 },
      'two units held, once',
    );

    await t.rejects(
      service.app.holds.place({ ...copy, qty: 3 }),
      { code: 'IDEMPOTENCY_KEY_REUSED' },
      'another body: refused',
    );
  },
);

t.test('a batch that finds the stock short releases due holds first, once, and grants from them', async (t) => {
  const service = await buildTestApp(t, { HOLD_TTL_SECONDS: 1 });
  const product = await createProduct(service.app, { stock: 2 });
  const ask = (): HoldRequest => ({ productId: product.id, qty: 1, customerId: null });
  const first = await placeTogether(service, [ask(), ask()]);
  t.ok(
    first.every((a) => a.hold),
    'both units held',
  );
  const keys = keysOf(service, product.id);
  // Due by Redis's clock; the sweeper is off in tests, so only the batch can release them.
  const due = await poll(
    async () => service.redis.zcount(keys.holdExpiries, '-inf', await redisNow(service.redis)),
    (count) => count === 2,
    5_000,
  );
  t.equal(due, 2, 'both holds are due');

  const second = await placeTogether(service, [ask(), ask(), ask()]);
  t.equal(second.filter((a) => a.hold).length, 2, 'two granted from the expired holds');
  t.match(second[2]!.refusal, { code: 'INSUFFICIENT_STOCK', available_stock: 0 }, 'the third is refused');
  t.same(
    await counters(service, product.id),
    { held: 2, sold: 0, recordUnits: 2, expiries: 2 },
    'counters equal the records',
  );
  const statuses = (await holdRecords(service, product.id)).map((r) => r.status).sort();
  t.same(statuses, ['expired', 'expired', 'held', 'held'], 'the old holds read expired');
});

t.test(
  `more requests in one turn than a batch takes (${MAX_HOLD_BATCH}) go in several calls, each decided in full`,
  async (t) => {
    const service = await buildTestApp(t);
    const total = MAX_HOLD_BATCH + 44;
    const stock = MAX_HOLD_BATCH + 10;
    const product = await createProduct(service.app, { stock });
    const calls = countScriptCalls(service);

    const answers = await placeTogether(
      service,
      Array.from({ length: total }, (): HoldRequest => ({ productId: product.id, qty: 1, customerId: null })),
    );
    t.equal(calls.calls, 2, 'two calls');
    t.equal(calls.requests, total, 'carrying every request once');
    t.equal(answers.filter((a) => a.hold).length, stock, 'exactly the stock granted');
    t.equal(answers.filter((a) => a.refusal?.code === 'INSUFFICIENT_STOCK').length, total - stock, 'the rest refused');
    t.same(await counters(service, product.id), { held: stock, sold: 0, recordUnits: stock, expiries: stock });
  },
);

t.test('a malformed batch is refused whole before anything is written', async (t) => {
  const service = await buildTestApp(t);
  const product = await createProduct(service.app, { stock: 10 });
  const productKeyList = productScriptKeys(keysOf(service, product.id));
  const deadline = (await redisNow(service.redis)) + 60_000;
  const header = [60_000, 100, 60_000, 60_000, deadline];
  const good = `${product.id}-AAAAAAAAAAAA\t1\t\t\t0`;
  const cases: [string, (string | number)[]][] = [
    ['a zero quantity in the second request', [...header, `${good}\n${product.id}-BBBBBBBBBBBB\t0\t\t\t0`]],
    ['an idempotency key index past the keys', [...header, `${good}\n${product.id}-BBBBBBBBBBBB\t1\t\tf\t9`]],
    ['a request with four fields', [...header, `${good}\n${product.id}-BBBBBBBBBBBB\t1\t\t0`]],
    ['no request at all', [...header, '']],
    ['a seventh argument', [...header, good, 'extra']],
  ];
  for (const [what, args] of cases) {
    await t.rejects(service.app.redis.reserveStock(5, ...productKeyList, ...args), /invalid arguments/, what);
  }
  t.same(await counters(service, product.id), { held: 0, sold: 0, recordUnits: 0, expiries: 0 }, 'nothing written');
});

t.test(
  'a product seen sold out: when the cache time is up, one request asks Redis for all while the others are still refused',
  async (t) => {
    // The app's sold-out cache reads a clock the test moves: "the cache time is up" is a step, not a sleep.
    const clock = manualClock();
    const service = await buildTestApp(t, { SOLD_OUT_CACHE_MS: 50 }, { soldOutClock: clock });
    const product = await createProduct(service.app, { stock: 0 });
    const ask: HoldRequest = { productId: product.id, qty: 1, customerId: null };
    const calls = countScriptCalls(service);

    t.match(
      await service.app.holds.place(ask),
      { refusal: { code: 'INSUFFICIENT_STOCK' } },
      'sold out, seen through Redis',
    );
    t.equal(calls.requests, 1);
    t.ok(service.app.holds.refusalWithoutRedis(ask), 'then refused without Redis');
    t.equal(calls.requests, 1, 'no request reached Redis');

    clock.advance(50);
    const probe = service.app.holds.refusalWithoutRedis(ask);
    t.equal(probe, undefined, 'the first request after the cache time goes to Redis');
    const others = Array.from({ length: 20 }, () => service.app.holds.refusalWithoutRedis(ask));
    t.ok(
      others.every((refusal) => refusal?.code === 'INSUFFICIENT_STOCK'),
      'the others meanwhile are refused at once',
    );
    await service.app.holds.place(ask);
    t.equal(calls.requests, 2, 'one probe reached Redis');
    t.ok(service.app.holds.refusalWithoutRedis(ask), 'its answer renewed the entry');

    // An idempotent request is never answered from the cache: its answer must be the one Redis stores.
    t.equal(service.app.holds.refusalWithoutRedis({ ...ask, idempotencyKey: 'k-1' }), undefined);
  },
);

t.test(
  'requests for several products in one turn: each product is decided in its own batch, all sent together',
  async (t) => {
    const service = await buildTestApp(t);
    const products = await Promise.all([1, 2, 3].map((stock) => createProduct(service.app, { stock })));
    const requests = products.flatMap((product) =>
      Array.from({ length: 3 }, (): HoldRequest => ({ productId: product.id, qty: 1, customerId: null })),
    );
    // A product that does not exist fails alone; the others in the same write are unaffected.
    const missing = service.app.holds.place({ productId: 999_999, qty: 1, customerId: null });

    const answers = await placeTogether(service, requests);
    await t.rejects(missing, { code: 'PRODUCT_NOT_FOUND' }, 'the missing product is refused');
    for (const [i, product] of products.entries()) {
      const own = answers.slice(i * 3, i * 3 + 3);
      t.equal(own.filter((a) => a.hold).length, i + 1, `product with stock ${i + 1}: ${i + 1} granted`);
      t.same(await counters(service, product.id), { held: i + 1, sold: 0, recordUnits: i + 1, expiries: i + 1 });
    }
  },
);

t.test(
  'a request whose customer id holds a tab fails alone; the batch it would have joined is decided as usual',
  async (t) => {
    const service = await buildTestApp(t);
    const product = await createProduct(service.app, { stock: 5 });
    const settled = await Promise.allSettled(
      [{ customerId: 'ann' }, { customerId: 'bad\tid' }, { customerId: 'bob' }].map(({ customerId }) =>
        service.app.holds.place({ productId: product.id, qty: 1, customerId }),
      ),
    );
    t.match(settled[0], { status: 'fulfilled', value: { hold: { customer_id: 'ann' } } });
    t.match(settled[1], { status: 'rejected', reason: { message: /tab or a newline/ } });
    t.match(settled[2], { status: 'fulfilled', value: { hold: { customer_id: 'bob' } } });
    t.same(await counters(service, product.id), { held: 2, sold: 0, recordUnits: 2, expiries: 2 });
  },
);
