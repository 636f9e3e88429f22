import calculateSlot from 'cluster-key-slot';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { productState } from './support/api.js';
import { buildTestApp, createProduct, listen, type TestApp } from './support/app.js';
import { request, tally } from './support/http.js';
import { startRedisCluster, type ClusterNode, type PrivateRedisCluster } from './support/private-redis-cluster.js';
import { heldUnits, indexedHolds, inventory } from './support/redis-state.js';
import type { Config } from '../src/config.js';
import { reconcile } from '../src/domain/reconcile.js';
import { clusterNodeList, connectRedis } from '../src/redis/connection.js';
import { productTag, requestCounterKey } from '../src/redis/keys.js';
import { eventually, poll } from './support/wait.js';

// The service on a Redis Cluster of this file's own: three masters, no replicas (test/redis-cluster-failover
// kills masters; here the slots move by resharding only).
const UNLIMITED = { RATE_LIMIT: 'off' } as const;

let cluster: PrivateRedisCluster;
t.before(async () => {
  cluster = await startRedisCluster({ masters: 3 });
});
t.teardown(() => cluster.stop());

async function clusterApp(t: Test, overrides: Partial<Config> = {}): Promise<TestApp> {
  return buildTestApp(t, { REDIS_CLUSTER_NODES: cluster.nodeList, ...UNLIMITED, ...overrides });
}

/** The slot of a product's keys (all share its hash tag). */
function slotOf(prefix: string, productId: number): number {
  return calculateSlot(`${productTag(prefix, productId)}:inventory`);
}

/** Creates products until every master serves at least `perMaster` of them; returns them with their master. */
async function productsOnEveryMaster(
  service: TestApp,
  stock: number,
  perMaster = 1,
): Promise<{ id: number; master: ClusterNode }[]> {
  const masters = await cluster.masters();
  const products: { id: number; master: ClusterNode }[] = [];
  const count = (m: ClusterNode) => products.filter((p) => p.master === m).length;
  while (masters.some((m) => count(m) < perMaster)) {
    const { id } = await createProduct(service.app, { stock });
    products.push({ id, master: await cluster.ownerOf(slotOf(service.prefix, id)) });
    if (products.length > 60) throw new Error('products do not spread over the masters');
  }
  return products;
}

const hold = (base: string, body: Record<string, unknown>) =>
  request<{ hold_id?: string; code?: string }>(base, 'POST', '/api/holds', body);

t.test('a client just connected takes commands for every master at once, turn after turn', async (t) => {
  // ioredis opens a node's connection on its first command and refuses the next ones until it is open; the client
  // connects every master up front, so a burst on a fresh instance meets no "Connection is closed" (once a 503).
  const masters = await cluster.masters();
  // A key on each master (their hash tags found by trial).
  const keys = await Promise.all(
    masters.map(async (m) => {
      for (let n = 0; ; n++) if ((await cluster.ownerOf(calculateSlot(`{burst:${n}}`))) === m) return `{burst:${n}}`;
    }),
  );
  for (let attempt = 0; attempt < 3; attempt++) {
    const redis = await connectRedis({
      url: '',
      clusterNodes: clusterNodeList(cluster.nodeList),
      commandTimeoutMs: 500,
    });
    const sends: Promise<unknown>[] = [];
    for (let turn = 0; turn < 20; turn++) {
      for (const key of keys) sends.push(redis.pipeline().incr(key).exec());
      await new Promise((resolve) => setImmediate(resolve));
    }
    const outcomes = await Promise.allSettled(sends);
    const refused = outcomes.flatMap((o) => (o.status === 'rejected' ? [(o.reason as Error).message] : []));
    const failedInside = outcomes.flatMap((o) =>
      o.status === 'fulfilled' ? ((o.value as [Error | null, unknown][] | null) ?? []).filter(([err]) => err) : [],
    );
    t.same(refused, [], `client ${attempt + 1}: no command refused`);
    t.equal(failedInside.length, 0, `client ${attempt + 1}: no command failed`);
    redis.disconnect();
  }
  const counts = await Promise.all(keys.map((key, i) => masters[i]!.client().get(key)));
  t.same(
    counts,
    keys.map(() => '60'),
    'each master counted 3 × 20 commands',
  );
});

t.test('concurrent holds on products spread over all three masters: exact per product', async (t) => {
  const service = await clusterApp(t);
  const base = await listen(service.app);
  const products = await productsOnEveryMaster(service, 40);
  t.equal(new Set(products.map((p) => p.master)).size, 3, 'the products live on three masters');

  // 100 one-unit requests per product, all at once and interleaved: the batches of one turn span all masters.
  const requests = products.flatMap((p) =>
    Array.from({ length: 100 }, (_, i) => ({ product_id: p.id, qty: 1, customer_id: `c${p.id}-${i}` })),
  );
  const answers = await Promise.all(requests.map((body) => hold(base, body)));
  for (const p of products) {
    const mine = answers.filter((_a, i) => requests[i]!.product_id === p.id);
    const statuses = tally(mine.map((a) => a.status));
    t.equal(statuses.get(201), 40, `product ${p.id} (${p.master.address}): 40 granted`);
    t.equal(statuses.get(409), 60, `product ${p.id}: 60 refused`);
    t.equal(statuses.size, 2, `product ${p.id}: no other answer`);
    t.match(await productState(base, p.id), { stock: 40, held: 40, sold: 0, available_stock: 0 });
    t.equal(await heldUnits(service, p.id), 40, `product ${p.id}: its records agree`);
    t.equal(await indexedHolds(service, p.id), 40, `product ${p.id}: its expiry index agrees`);
    const ids = mine.flatMap((a) => (a.status === 201 ? [a.body.hold_id] : []));
    t.equal(new Set(ids).size, 40, `product ${p.id}: every hold its own id`);
  }
  // The keys are on the master that serves the product's slot, and nowhere else.
  for (const p of products) {
    const keys = await p.master.client().call('CLUSTER', 'COUNTKEYSINSLOT', slotOf(service.prefix, p.id));
    t.ok(Number(keys) >= 3, `product ${p.id}: its keys are on ${p.master.address}`);
  }
  t.match(await inventory(service, products[0]!.id), { stock: 40, held: 40 });
});

t.test('holds expire on every master: the sweeper releases them all', async (t) => {
  const service = await clusterApp(t, { HOLD_TTL_SECONDS: 1, SWEEP_INTERVAL_MS: 50 });
  const base = await listen(service.app);
  const products = await productsOnEveryMaster(service, 10);
  for (const p of products) {
    for (let i = 0; i < 3; i++) t.equal((await hold(base, { product_id: p.id, qty: 2 })).status, 201);
  }
  const released = await eventually(async () => {
    const states = await Promise.all(products.map((p) => productState(base, p.id)));
    return states.every((s) => s.held === 0 && s.available_stock === 10);
  }, 20_000);
  t.ok(released, 'every product on every master is back to its whole stock');
  for (const p of products) {
    t.equal(await indexedHolds(service, p.id), 0, `product ${p.id}: no active hold left in its index`);
    t.equal(await heldUnits(service, p.id), 0, `product ${p.id}: no record still held`);
  }
});

t.test('rate limits stay exact with the counters spread over the masters', async (t) => {
  // A burst of 108 on a loaded machine: a command timeout would turn a counted request into a 503, and this test is
  // about the counts, not about timeouts.
  const service = await clusterApp(t, {
    RATE_LIMIT: 'on',
    TRUST_PROXY: 'true',
    RATE_LIMIT_PER_ADDRESS: 5,
    REDIS_COMMAND_TIMEOUT_MS: 10_000,
  });
  const base = await listen(service.app);
  const { id } = await createProduct(service.app, { stock: 1000 });
  const addresses = Array.from({ length: 12 }, (_, i) => `198.51.100.${i + 1}`);
  // Their counters' tags land on every master.
  const masters = new Set(
    await Promise.all(
      addresses.map(async (a) => cluster.ownerOf(calculateSlot(requestCounterKey(service.prefix, 'holds', `a:${a}`)))),
    ),
  );
  t.equal(masters.size, 3, 'the addresses are counted on three masters');
  const sent = addresses.flatMap((address) => Array.from({ length: 9 }, () => address));
  const answers = await Promise.all(
    sent.map((address) =>
      request(base, 'POST', '/api/holds', { product_id: id, qty: 1 }, { 'x-forwarded-for': address }),
    ),
  );
  for (const address of addresses) {
    const mine = tally(answers.filter((_a, i) => sent[i] === address).map((a) => a.status));
    t.equal(mine.get(201), 5, `${address}: exactly 5 served`);
    t.equal(mine.get(429), 4, `${address}: exactly 4 refused (${JSON.stringify([...mine])})`);
  }
  t.match(await productState(base, id), { held: 5 * addresses.length });
});

t.test("a product's slot moves to another master under load: no 500, no hold counted twice", async (t) => {
  const service = await clusterApp(t);
  const base = await listen(service.app);
  const { id } = await createProduct(service.app, { stock: 100_000 });
  const slot = slotOf(service.prefix, id);
  const from = await cluster.ownerOf(slot);
  const to = (await cluster.masters()).find((m) => m !== from)!;

  const answers: { status: number; ms: number; holdId?: string }[] = [];
  let loading = true;
  const load = Promise.all(
    Array.from({ length: 16 }, async (_, worker) => {
      for (let i = 0; loading; i++) {
        const a = await hold(base, { product_id: id, qty: 1, customer_id: `w${worker}-${i}` });
        answers.push({ status: a.status, ms: a.ms, holdId: a.body.hold_id });
      }
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, 500));
  await cluster.moveSlot(slot, to);
  const movedAt = answers.length;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  loading = false;
  await load;

  t.equal(await cluster.ownerOf(slot), to, `the slot moved from ${from.address} to ${to.address}`);
  t.ok(answers.length > movedAt, `holds were served after the move (${answers.length - movedAt} of ${answers.length})`);
  const statuses = tally(answers.map((a) => a.status));
  t.same(
    [...statuses.keys()].filter((s) => s !== 201 && s !== 503),
    [],
    `only 201, or 503 while the keys moved: ${JSON.stringify([...statuses])}`,
  );
  const slowest = Math.max(...answers.map((a) => a.ms));
  t.ok(slowest < 2000 + 3000, `no request hung past the command timeout (slowest ${Math.round(slowest)} ms)`);
  // Every hold granted is recorded once, on the new master, and the counters agree with the records.
  const granted = answers.flatMap((a) => (a.status === 201 && a.holdId ? [a.holdId] : []));
  t.equal(new Set(granted).size, granted.length, 'every granted hold has its own id');
  const state = await productState(base, id);
  const held = await heldUnits(service, id);
  t.equal(state.held, held, 'the held counter is the sum of the held records: no hold counted twice');
  t.ok(held >= granted.length, `every granted hold is held (${granted.length} granted, ${held} held)`);
  t.equal(state.available_stock, 100_000 - held, 'available = stock - held');
  const keysThere = Number(await to.client().call('CLUSTER', 'COUNTKEYSINSLOT', slot));
  t.ok(keysThere >= 3, `the product's keys are on ${to.address} now (${keysThere})`);
});

t.test(
  "a product's slot moves while holds are replayed with their Idempotency-Key, ordered and paid: one hold per key, one order per hold",
  async (t) => {
    // The re-sends here are the clients' (a replayed key, an order asked again after a 503) and ioredis's own
    // (MOVED and ASK followed, TRYAGAIN waited out): the scripts' idempotency per hold id and per key is what
    // makes either safe while the product's keys move between masters.
    // A conversion whose last Redis step met the move (its order committed, the units still counted held in
    // Redis) is finished by the sweeper's recovery when it next sweeps the product, once the claim's lease is out:
    // at the latest when the hold would have expired (the step that brings the sweep forward can meet the move
    // too). Short holds and leases here, so that this happens within the test.
    const service = await clusterApp(t, {
      WEBHOOK_ALLOW_UNSIGNED: true,
      HOLD_TTL_SECONDS: 5,
      CONVERSION_LEASE_MS: 1000,
      SWEEP_INTERVAL_MS: 100,
    });
    const base = await listen(service.app);
    const { id } = await createProduct(service.app, { stock: 100_000 });
    const slot = slotOf(service.prefix, id);
    const from = await cluster.ownerOf(slot);
    const to = (await cluster.masters()).find((m) => m !== from)!;

    const holdsByKey = new Map<string, Set<string>>();
    const ordersByHold = new Map<string, Set<number>>();
    const statuses: number[] = [];
    let paid = 0;
    let loading = true;
    const load = Promise.all(
      Array.from({ length: 8 }, async (_, worker) => {
        for (let i = 0; loading; i++) {
          const key = `w${worker}-${i}`;
          const body = { product_id: id, qty: 1, customer_id: `c-${key}` };
          // The same key twice at once, as a client retrying a request it thought lost.
          const pair = await Promise.all(
            [0, 1].map(() =>
              request<{ hold_id?: string }>(base, 'POST', '/api/holds', body, { 'idempotency-key': key }),
            ),
          );
          const ids = new Set<string>();
          for (const a of pair) {
            statuses.push(a.status);
            if ((a.status === 201 || a.status === 200) && a.body.hold_id) ids.add(a.body.hold_id);
          }
          holdsByKey.set(key, ids);
          const holdId = [...ids][0];
          if (!holdId) continue;
          // Asked until answered with an order (a 503 while the keys move is asked again), twice at once.
          const orderIds = new Set<number>();
          for (let attempt = 0; attempt < 20 && orderIds.size === 0; attempt++) {
            const orders = await Promise.all(
              [0, 1].map(() => request<{ order_id?: number }>(base, 'POST', '/api/orders', { hold_id: holdId })),
            );
            for (const o of orders) {
              statuses.push(o.status);
              if ((o.status === 201 || o.status === 200) && o.body.order_id !== undefined)
                orderIds.add(o.body.order_id);
            }
            if (orderIds.size === 0) await new Promise((resolve) => setTimeout(resolve, 50));
          }
          ordersByHold.set(holdId, orderIds);
          const orderId = [...orderIds][0];
          if (orderId === undefined) continue;
          const payment = await request<{ status?: string }>(base, 'POST', '/api/webhooks/payment', {
            idempotency_key: `pay-${key}`,
            order_id: orderId,
            event_type: 'success',
          });
          statuses.push(payment.status);
          if (payment.body.status === 'paid') paid++;
        }
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    await cluster.moveSlot(slot, to);
    const keysAtMove = holdsByKey.size;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    loading = false;
    await load;

    t.equal(await cluster.ownerOf(slot), to, `the slot moved from ${from.address} to ${to.address}`);
    t.ok(
      holdsByKey.size > keysAtMove,
      `checkouts went on after the move (${holdsByKey.size - keysAtMove} of ${holdsByKey.size})`,
    );
    const answered = tally(statuses);
    t.same(
      [...answered.keys()].filter((s) => ![200, 201, 503].includes(s)),
      [],
      `only 200, 201, or 503 while the keys moved: ${JSON.stringify([...answered])}`,
    );
    t.same(
      [...holdsByKey].filter(([, ids]) => ids.size > 1),
      [],
      `every Idempotency-Key got one hold (${holdsByKey.size} keys, each sent twice at once)`,
    );
    t.same(
      [...ordersByHold].filter(([, ids]) => ids.size > 1),
      [],
      `every hold became at most one order, however often it was asked (${ordersByHold.size} holds)`,
    );
    const { rows } = await sql<{ hold_id: string; n: number }>`
      SELECT hold_id, count(*)::int AS n FROM orders GROUP BY hold_id HAVING count(*) > 1`.execute(service.app.db);
    t.same(rows, [], 'no hold has two orders in Postgres');
    const orders = [...ordersByHold.values()].filter((ids) => ids.size === 1).length;
    t.ok(paid > 0 && orders > 0, `orders were made and paid during the move (${orders} orders, ${paid} paid)`);
    const state = await poll(
      () => productState(base, id),
      (s) => s.sold === orders,
      20_000,
    );
    t.equal(state.sold, orders, `sold = the orders made (${orders}), once recovery finished any conversion left`);
    t.equal(state.held, await heldUnits(service, id), 'the held counter is the sum of the held records');
    const report = await reconcile({ db: service.app.db, redis: service.redis, prefix: service.prefix });
    t.ok(report.clean, `reconcile --check is clean (${report.products_checked} products)`, { drifts: report.drifts });
  },
);
