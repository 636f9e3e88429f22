import t from 'tap';
import { formatReport, reconcile } from '../src/domain/reconcile.js';
import { bucketOfHold } from '../src/domain/hold-ids.js';
import { bucketLabels, CLUSTER_SLOTS, homeBucket, movesOutKey, productKeys, tagSlot } from '../src/redis/keys.js';
import { createProductAt, placeHold, productState } from './support/api.js';
import { admin, buildTestApp, createProduct, listen, type TestApp } from './support/app.js';
import { request, tally } from './support/http.js';
import { eventually } from './support/wait.js';
import { waitForExit } from './support/processes.js';
import { serviceWorld } from './support/service-process.js';
import { createDatabase } from '../src/db/connection.js';

interface HoldBody {
  hold_id: string;
  qty: number;
  code?: string;
  available_stock?: number;
}

// Hundreds of requests at once from one address, and a rebalancer the tests run themselves.
const SETTINGS = { RATE_LIMIT: 'off', STOCK_REBALANCE_MS: 0 } as const;

const hold = (base: string, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
  request<HoldBody>(base, 'POST', '/api/holds', body, headers);

/** Each bucket's share, held, sold and available units, by label, straight from Redis. */
async function buckets(service: TestApp, productId: number, count: number) {
  const figures = new Map<number, { stock: number; held: number; sold: number; available: number }>();
  for (const label of bucketLabels(productId, count)) {
    const [stock, held, sold] = await service.redis.hmget(
      productKeys(service.prefix, productId, label).inventory,
      'stock',
      'held',
      'sold',
    );
    const f = { stock: Number(stock), held: Number(held), sold: Number(sold) };
    figures.set(label, { ...f, available: f.stock - f.held - f.sold });
  }
  return figures;
}

async function reconcileOf(service: TestApp, productId: number) {
  return reconcile({ db: service.app.db, redis: service.redis, prefix: service.prefix, productIds: [productId] });
}

/** A customer id whose home bucket is the one with this label. */
function customerHomedIn(productId: number, count: number, label: number, tag: string): string {
  const labels = bucketLabels(productId, count);
  for (let i = 0; ; i++) {
    const customer = `${tag}-${i}`;
    if (labels[homeBucket(customer, count)] === label) return customer;
  }
}

t.test(
  'bucket labels: a product of one bucket keeps its keys; three buckets take three thirds of the slots',
  async (t) => {
    t.same(bucketLabels(42, 1), [0]);
    t.equal(productKeys('fs:', 42).inventory, 'fs:{p:42}:inventory', 'one bucket: the keys of before');
    for (const id of [1, 2, 7, 42, 1000, 2_147_483_647]) {
      const labels = bucketLabels(id, 3);
      t.equal(labels[0], 0, `product ${id}: its first bucket is its own tag`);
      const thirds = labels.map((label) => {
        const slot = tagSlot(label === 0 ? `p:${id}` : `p:${id}:${label}`);
        return Math.floor((slot * 3) / CLUSTER_SLOTS);
      });
      t.same([...thirds].sort(), [0, 1, 2], `product ${id}: one bucket in each third of the slot space`);
    }
    // The CRC16 of the Redis Cluster specification's own example.
    t.equal(tagSlot('123456789'), 0x31c3 % CLUSTER_SLOTS);
  },
);

t.test('a product of one bucket is loaded exactly as before: no bucket fields, no other tag', async (t) => {
  const service = await buildTestApp(t, SETTINGS);
  const product = await createProduct(service.app, { stock: 5 });
  const fields = await service.redis.hkeys(productKeys(service.prefix, product.id).inventory);
  t.notOk(fields.includes('buckets') || fields.includes('total_stock'), 'the inventory has the fields of before');
  t.same(await service.redis.keys(`${service.prefix}{p:${product.id}:*`), [], 'no key of another bucket');
  t.equal(product.buckets, 1);
});

t.test('stock 300 in 3 buckets, 500 concurrent holds of 1-3 units: exactly 300 units held', async (t) => {
  const service = await buildTestApp(t, SETTINGS);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 300, buckets: 3 });
  t.equal(product.buckets, 3);
  t.match(await productState(base, product.id), { stock: 300, available_stock: 300, held: 0 });

  const answers = await Promise.all(
    Array.from({ length: 500 }, (_, i) => hold(base, { product_id: product.id, qty: 1 + (i % 3) })),
  );
  const statuses = tally(answers.map((a) => a.status));
  t.same([...statuses.keys()].sort(), [201, 409], `granted or refused, nothing else: ${JSON.stringify([...statuses])}`);
  const granted = answers.filter((a) => a.status === 201);
  const units = granted.reduce((sum, a) => sum + a.body.qty, 0);
  t.equal(units, 300, 'the units granted are exactly the stock');
  t.match(await productState(base, product.id), { stock: 300, held: 300, sold: 0, available_stock: 0 });
  const perBucket = tally(granted.map((a) => bucketOfHold(a.body.hold_id)));
  t.equal(perBucket.size, 3, `holds in all three buckets: ${JSON.stringify([...perBucket])}`);
  for (const [label, f] of await buckets(service, product.id, 3)) {
    t.equal(f.available, 0, `bucket ${label}: sold out, never below zero (${JSON.stringify(f)})`);
  }
  const report = await reconcileOf(service, product.id);
  t.same(report.drifts, [], 'reconcile: clean');

  // Releasing every hold, wherever it lives, gives the units back to its own bucket.
  const releases = await Promise.all(granted.map((a) => request(base, 'DELETE', `/api/holds/${a.body.hold_id}`)));
  t.ok(
    releases.every((r) => r.status === 200),
    'every release answered 200',
  );
  t.match(await productState(base, product.id), { stock: 300, held: 0, available_stock: 300 });
});

t.test('a dry bucket falls over to the others; a hold bigger than any bucket gets its units gathered', async (t) => {
  const service = await buildTestApp(t, { ...SETTINGS, MAX_QTY_PER_HOLD: 20 });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 30, buckets: 3 });
  const first = await hold(base, { product_id: product.id, qty: 10 });
  t.equal(first.status, 201);
  const dry = bucketOfHold(first.body.hold_id);
  t.equal((await buckets(service, product.id, 3)).get(dry)!.available, 0, 'its bucket is dry now');

  const next = [];
  for (let i = 0; i < 20; i++) next.push(await hold(base, { product_id: product.id, qty: 1 }));
  t.ok(
    next.every((a) => a.status === 201),
    'the 20 units left are all granted, one request after the other',
  );
  t.notOk(
    next.some((a) => bucketOfHold(a.body.hold_id) === dry),
    'none in the dry bucket: those routed there fell over',
  );
  const refused = await hold(base, { product_id: product.id, qty: 1 });
  t.equal(refused.status, 409);
  t.equal(refused.body.available_stock, 0, 'sold out: every bucket is dry');

  // Give back 8 of those units and the first hold's 10: each unit goes back to its own bucket.
  const released = next.slice(0, 8);
  for (const a of released) await request(base, 'DELETE', `/api/holds/${a.body.hold_id}`);
  await request(base, 'DELETE', `/api/holds/${first.body.hold_id}`);
  const back = tally(released.map((a) => bucketOfHold(a.body.hold_id)));
  for (const [label, f] of await buckets(service, product.id, 3))
    t.equal(f.available, label === dry ? 10 : (back.get(label) ?? 0), `bucket ${label}: its own units back`);
  // 15 units: more than any bucket has, fewer than the product has.
  const big = await hold(base, { product_id: product.id, qty: 15 });
  t.equal(big.status, 409, `refused at first: no bucket has 15 (${JSON.stringify(big.body)})`);
  t.equal(big.body.available_stock, 10, 'the most one hold could get now');
  await service.app.rebalancer.pass();
  const again = await hold(base, { product_id: product.id, qty: 15 });
  t.equal(again.status, 201, 'granted once the rebalancer gathered the units');
  t.match(await productState(base, product.id), { stock: 30, held: 15 + 12, available_stock: 3 });
  t.same((await reconcileOf(service, product.id)).drifts, [], 'reconcile: clean');
});

t.test('per-customer limit on a bucketed product: exact under concurrency, and dry home buckets are fed', async (t) => {
  const service = await buildTestApp(t, { ...SETTINGS, HOLD_TTL_SECONDS: 1 });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 30, buckets: 3, per_customer_limit: 5 });
  const labels = bucketLabels(product.id, 3);

  // 20 requests of one customer at once: 5 granted, all in the customer's home bucket.
  const racer = customerHomedIn(product.id, 3, labels[1]!, 'racer');
  const raced = await Promise.all(
    Array.from({ length: 20 }, () => hold(base, { product_id: product.id, qty: 1, customer_id: racer })),
  );
  const statuses = tally(raced.map((a) => a.status));
  t.equal(statuses.get(201), 5, 'exactly the limit granted');
  t.equal(statuses.get(409), 15);
  t.ok(
    raced.filter((a) => a.status === 201).every((a) => bucketOfHold(a.body.hold_id) === labels[1]),
    "every unit in the customer's home bucket",
  );
  t.ok(
    raced.filter((a) => a.status === 409).every((a) => a.body.code === 'CUSTOMER_LIMIT_EXCEEDED'),
    'the rest refused for the limit',
  );

  // Two customers homed in the first bucket take its 10 units; a third one homed there is refused at first...
  for (const tag of ['a', 'b']) {
    const customer = customerHomedIn(product.id, 3, labels[0]!, tag);
    t.equal((await hold(base, { product_id: product.id, qty: 5, customer_id: customer })).status, 201);
  }
  const late = customerHomedIn(product.id, 3, labels[0]!, 'late');
  const refused = await hold(base, { product_id: product.id, qty: 2, customer_id: late });
  t.equal(refused.status, 409);
  t.equal(refused.body.code, 'INSUFFICIENT_STOCK', 'its home bucket is dry while the others have 15 units');
  // ...and granted once the rebalancer has fed the home bucket.
  await service.app.rebalancer.pass();
  t.equal((await hold(base, { product_id: product.id, qty: 2, customer_id: late })).status, 201);

  // The holds expire (1 s): their units come back to their own buckets only; the rebalancer spreads them.
  await new Promise((resolve) => setTimeout(resolve, 1200));
  await service.app.redisCommands.bringSweepsForward(0);
  const { releaseExpiredHolds } = await import('../src/domain/sweeper.js');
  await releaseExpiredHolds(service.app.redisCommands, service.app.settings, service.app.log);
  t.match(await productState(base, product.id), { held: 0, available_stock: 30 });
  // Everything sold out of the other two buckets, by customers homed there.
  for (const label of labels.slice(1)) {
    const avail = (await buckets(service, product.id, 3)).get(label)!.available;
    for (let i = 0; i < Math.ceil(avail / 5); i++) {
      const customer = customerHomedIn(product.id, 3, label, `buyer${i}`);
      const qty = Math.min(5, avail - 5 * i);
      t.equal((await hold(base, { product_id: product.id, qty, customer_id: customer })).status, 201);
    }
  }
  const before = await buckets(service, product.id, 3);
  t.same(
    labels.slice(1).map((label) => before.get(label)!.available),
    [0, 0],
    'the other two buckets are dry',
  );
  await service.app.rebalancer.pass();
  const after = await buckets(service, product.id, 3);
  t.ok(
    labels.every((label) => after.get(label)!.available > 0),
    `the units of the first bucket were spread: ${JSON.stringify([...after])}`,
  );
  t.equal(
    [...after.values()].reduce((sum, f) => sum + f.available, 0),
    before.get(labels[0]!)!.available,
    'no unit made or lost by the moves',
  );
  t.same((await reconcileOf(service, product.id)).drifts, [], 'reconcile: clean');
});

t.test('a move interrupted between its halves: units in no bucket for a while, then finished once', async (t) => {
  const service = await buildTestApp(t, SETTINGS);
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: 30, buckets: 3 });
  const [from, to] = bucketLabels(product.id, 3);
  const commands = service.app.redisCommands;
  // The first half alone, as a mover that died right after it leaves it.
  const move = await commands.moveStockOut(product.id, from!, to!, 'move-1', 6);
  t.match(move, { units: 6, to });
  t.same(
    await commands.moveStockOut(product.id, from!, to!, 'move-1', 6),
    move,
    'the same move id again: the same move',
  );
  const during = await buckets(service, product.id, 3);
  t.equal(during.get(from!)!.stock, 4, 'the units left the source');
  t.equal(during.get(to!)!.stock, 10, 'and are not in the target yet');
  t.match(await productState(base, product.id), { stock: 30 }, 'the product still counts them');
  t.same((await reconcileOf(service, product.id)).drifts, [], 'reconcile: the journal accounts for them');

  // Recovery finishes journaled moves older than a mover takes.
  t.ok(await eventually(async () => commands.now() - move!.at >= 1000, 5000), 'the move is a second old');
  await service.app.rebalancer.balance(product.id, 3);
  const after = await buckets(service, product.id, 3);
  t.equal(after.get(to!)!.stock, 16, 'the units reached the target');
  t.equal(await service.redis.hlen(movesOutKey(service.prefix, product.id, from!)), 0, 'the journal is empty');
  t.equal(await commands.moveStockIn(product.id, move!), 'applied', 'a late re-send of the second half adds nothing');
  t.equal((await buckets(service, product.id, 3)).get(to!)!.stock, 16);
  const shares = [...after.values()].reduce((sum, f) => sum + f.stock, 0);
  t.equal(shares, 30, 'the shares add up to the stock');
  t.same((await reconcileOf(service, product.id)).drifts, [], 'reconcile: clean');
});

t.test(
  'a bucket lost in Redis: the product is rebuilt from Postgres, its orders counted in their buckets',
  async (t) => {
    const service = await buildTestApp(t, SETTINGS);
    const base = await listen(service.app);
    const product = await createProduct(service.app, { stock: 30, buckets: 3 });
    const held = [];
    for (let i = 0; i < 3; i++) held.push(await hold(base, { product_id: product.id, qty: 2 }));
    const order = await request<{ id: number }>(base, 'POST', '/api/orders', { hold_id: held[0]!.body.hold_id });
    t.equal(order.status, 201);
    const lost = bucketOfHold(held[0]!.body.hold_id);
    const keys = productKeys(service.prefix, product.id, lost);
    await service.redis.del(...Object.values(keys));

    const drifts = (await reconcileOf(service, product.id)).drifts;
    t.ok(
      drifts.some((d) => d.field === (lost === 0 ? 'inventory' : `buckets[${lost}]`)),
      'reconcile sees the lost bucket',
    );
    await service.app.rebuilder.checkAll();
    t.match(await productState(base, product.id), { stock: 30, sold: 2, held: 0, available_stock: 28 });
    const after = await buckets(service, product.id, 3);
    t.equal(after.get(lost)!.sold, 2, "the order's units are sold in its hold's bucket");
    t.same((await reconcileOf(service, product.id)).drifts, [], 'reconcile: clean');
  },
);

t.test(
  'stock changes of a bucketed product: a rise lands in the first bucket, a cut gathers units there',
  async (t) => {
    const service = await buildTestApp(t, SETTINGS);
    const base = await listen(service.app);
    const product = await createProduct(service.app, { stock: 30, buckets: 3 });
    // Dry the first bucket: a cut then needs units from the others.
    const first = bucketLabels(product.id, 3)[0]!;
    let firstUnits = 0;
    while (firstUnits < 10) {
      const a = await hold(base, { product_id: product.id, qty: 1 });
      if (bucketOfHold(a.body.hold_id) === first) firstUnits++;
    }
    const state = await productState(base, product.id);
    const rise = await request(base, 'PUT', `/api/products/${product.id}/stock`, { stock: 40 }, admin);
    t.equal(rise.status, 200);
    t.match(await productState(base, product.id), { stock: 40, held: state.held });
    const cut = await request(base, 'PUT', `/api/products/${product.id}/stock`, { stock: state.held + 1 }, admin);
    t.equal(cut.status, 200, 'a cut to one unit above the units held');
    t.match(await productState(base, product.id), { stock: state.held + 1, available_stock: 1 });
    const below = await request<{ code: string }>(
      base,
      'PUT',
      `/api/products/${product.id}/stock`,
      { stock: state.held - 1 },
      admin,
    );
    t.equal(below.status, 409);
    t.equal(below.body.code, 'STOCK_BELOW_COMMITTED');
    t.same((await reconcileOf(service, product.id)).drifts, [], 'reconcile: clean');
  },
);

t.test('buckets out of range are refused with 400 and create nothing', async (t) => {
  const service = await buildTestApp(t, SETTINGS);
  for (const buckets of [0, 17, 1.5, 'two']) {
    const response = await service.app.inject({
      method: 'POST',
      url: '/api/products',
      headers: admin,
      payload: { name: 'x', price_cents: 1, stock: 1, buckets },
    });
    t.equal(response.statusCode, 400, `buckets ${JSON.stringify(buckets)}`);
  }
  t.equal((await service.app.db.selectFrom('products').select('id').execute()).length, 0);
});

t.test(
  'the service killed between the two halves of a move: restarted, it finishes the move, no unit made',
  async (t) => {
    t.setTimeout(120_000);
    const w = await serviceWorld(t, { RATE_LIMIT: 'off', STOCK_REBALANCE_MS: '50' });
    const dying = await w.start({ fault: 'after-move-out' });
    const productId = await createProductAt(dying.base, {
      name: 'Crash test',
      price_cents: 100,
      stock: 30,
      buckets: 3,
    });
    // One bucket made dry: the rebalancer's next pass moves units into it, and the process dies half-way.
    const held = await placeHold(dying.base, { product_id: productId, qty: 10 });
    t.same(await waitForExit(dying), { code: null, signal: 'SIGKILL' }, 'the service killed itself after a move out');

    const labels = bucketLabels(productId, 3);
    const shares = async () => {
      let total = 0;
      for (const label of labels)
        total += Number(await w.redis.hget(productKeys(w.prefix, productId, label).inventory, 'stock'));
      return total;
    };
    const journaled = async () => {
      const moves: { units: number }[] = [];
      for (const label of labels)
        for (const json of await w.redis.hvals(movesOutKey(w.prefix, productId, label))) moves.push(JSON.parse(json));
      return moves;
    };
    const left = await journaled();
    t.equal(left.length, 1, 'one move journaled, its second half never sent');
    t.equal((await shares()) + left[0]!.units, 30, 'the units out of their bucket are in the journal, nowhere else');

    const restarted = await w.start();
    t.ok(await eventually(async () => (await journaled()).length === 0, 10_000), 'recovery finished the move');
    t.equal(await shares(), 30, 'the shares add up to the stock again');
    const state = await restarted.call('GET', `/api/products/${productId}`);
    t.match(state.body, { stock: 30, held: 10, available_stock: 20 });
    t.equal((await restarted.call('GET', `/api/holds/${held.hold_id}`)).status, 200, 'the hold lived through it');
    const kysely = createDatabase({ url: w.databaseUrl, timeoutMs: 10_000, poolSize: 2 });
    t.teardown(() => kysely.destroy());
    const report = await reconcile({ db: kysely, redis: w.redis, prefix: w.prefix, productIds: [productId] });
    t.ok(report.clean, `reconcile: clean\n${formatReport(report)}`);
  },
);
