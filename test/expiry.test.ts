import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import t from 'tap';
import { releaseExpiredHolds } from '../src/domain/sweeper.js';
import { createRedisCommands } from '../src/redis/commands.js';
import { settingsFrom } from '../src/settings.js';
import { clusterNodeList, connectRedis } from '../src/redis/connection.js';
import { buildTestApp, createProduct, TEST_REDIS_CLUSTER_NODES, TEST_REDIS_URL } from './support/app.js';
import { waitPastOnRedisClock } from './support/clock.js';
import { holdRecords, indexedHolds } from './support/redis-state.js';
import { poll } from './support/wait.js';

const silent = pino({ level: 'silent' });

interface HoldBody {
  hold_id: string;
  status: string;
  expires_at: string;
}

t.test(
  'an expired hold frees its units and cannot be used after expires_at, even before the sweeper runs',
  async (t) => {
    const { app, redis } = await buildTestApp(t, { HOLD_TTL_SECONDS: 1, SWEEP_INTERVAL_MS: 0 });
    const product = await createProduct(app, { stock: 2 });
    const first = (
      await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 2 } })
    ).json<HoldBody>();
    t.equal(
      (await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } })).statusCode,
      409,
      'sold out while held',
    );

    await waitPastOnRedisClock(redis, first.expires_at);
    const read = await app.inject({ method: 'GET', url: `/api/holds/${first.hold_id}` });
    t.equal(read.json<HoldBody>().status, 'expired', 'reads as expired the moment its time is up');

    // No sweeper has run: the next buyer's request releases the expired units itself.
    const next = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 2 } });
    t.equal(next.statusCode, 201, 'the expired units can be held again at once');
    t.match((await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json(), {
      held: 2,
      available_stock: 0,
    });

    const released = await app.inject({ method: 'DELETE', url: `/api/holds/${first.hold_id}` });
    t.equal(released.statusCode, 200);
    t.equal(released.json<HoldBody>().status, 'expired', 'releasing an expired hold changes nothing');
    t.match(
      (await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json(),
      { held: 2, available_stock: 0 },
      'its units are not given back twice',
    );
  },
);

t.test('a hold past its expiry that nobody touches is released by the sweeper', async (t) => {
  const { app, redis } = await buildTestApp(t, { HOLD_TTL_SECONDS: 1, SWEEP_INTERVAL_MS: 50 });
  const product = await createProduct(app, { stock: 5 });
  const held = (
    await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 3 } })
  ).json<HoldBody>();
  t.match((await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json(), {
    held: 3,
    available_stock: 2,
  });

  await waitPastOnRedisClock(redis, held.expires_at);
  const readState = async () =>
    (await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json<{
      held: number;
      available_stock: number;
    }>();
  const state = await poll(readState, (s) => s.held === 0, 3000, 50);
  t.match(state, { held: 0, available_stock: 5 }, 'units back on sale within a few sweep intervals');
  t.equal((await app.inject({ method: 'GET', url: `/api/holds/${held.hold_id}` })).json<HoldBody>().status, 'expired');
});

t.test('three sweepers at once release each expired hold exactly once', async (t) => {
  const { app, config, redis, prefix } = await buildTestApp(t, {
    RATE_LIMIT: 'off', // 300 holds from one address
    HOLD_TTL_SECONDS: 1,
    SWEEP_INTERVAL_MS: 0,
    SWEEP_BATCH_SIZE: 7,
  });
  const products = [
    await createProduct(app, { stock: 500 }),
    await createProduct(app, { stock: 500 }),
    await createProduct(app, { stock: 500 }),
  ];
  let lastExpiry = '';
  let units = 0;
  for (const product of products) {
    for (let i = 0; i < 100; i++) {
      const qty = 1 + (i % 3);
      const answer = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty } });
      lastExpiry = answer.json<HoldBody>().expires_at;
      units += qty;
    }
  }
  await waitPastOnRedisClock(redis, lastExpiry);

  // Three instances' sweepers, each with its own connection, started together; small batches make them overlap.
  const sweepers = await Promise.all(
    [1, 2, 3].map(() =>
      connectRedis({
        url: TEST_REDIS_URL,
        clusterNodes: clusterNodeList(TEST_REDIS_CLUSTER_NODES),
        commandTimeoutMs: 2000,
      }),
    ),
  );
  t.teardown(() => sweepers.forEach((s) => s.disconnect()));
  let expired = 0;
  for (let round = 0; round < 100; round++) {
    const passes = await Promise.all(
      sweepers.map((s) =>
        releaseExpiredHolds(createRedisCommands(s, settingsFrom(config)), settingsFrom(config), silent),
      ),
    );
    const found = passes.reduce((sum, p) => sum + p.expired, 0);
    expired += found;
    if (found === 0 && passes.every((p) => !p.more)) break;
  }
  t.equal(expired, 300, 'each of the 300 holds released once, no more');

  let releasedUnits = 0;
  for (const product of products) {
    const state = (await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json<{
      held: number;
      available_stock: number;
    }>();
    t.match(state, { held: 0, available_stock: 500 }, `product ${product.id} fully back on sale`);
    t.equal(await indexedHolds({ redis, prefix }, product.id), 0, 'no hold left in the expiry index');
    const records = await holdRecords({ redis, prefix }, product.id);
    t.ok(
      records.every((r) => r.status === 'expired'),
      'every record says expired',
    );
    releasedUnits += records.reduce((sum, r) => sum + r.qty, 0);
  }
  t.equal(releasedUnits, units);

  // Leases keep sweepers off each other's products; without them the script alone must still release once.
  const product = products[0]!;
  for (let i = 0; i < 100; i++) {
    const answer = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } });
    lastExpiry = answer.json<HoldBody>().expires_at;
  }
  await waitPastOnRedisClock(redis, lastExpiry);
  const sweepProduct = async (connection: (typeof sweepers)[number]) => {
    let released = 0;
    for (;;) {
      const { expired: count } = await createRedisCommands(connection, settingsFrom(config)).releaseExpiredHolds(
        product.id,
        7,
      );
      if (count === 0) return released;
      released += count;
    }
  };
  const counts = await Promise.all(sweepers.map(sweepProduct));
  t.equal(
    counts.reduce((a, b) => a + b, 0),
    100,
    `the same product swept by three at once: ${counts.join(' + ')} = 100`,
  );
  t.match((await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json(), {
    held: 0,
    available_stock: 500,
  });
});

t.test('an ended hold stays readable for the retention period, then is purged', async (t) => {
  const { app, config } = await buildTestApp(t, { HOLD_RETAIN_SECONDS: 1, SWEEP_INTERVAL_MS: 0 });
  const product = await createProduct(app, { stock: 5 });
  const held = (
    await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } })
  ).json<HoldBody>();
  await app.inject({ method: 'DELETE', url: `/api/holds/${held.hold_id}` });
  t.equal((await app.inject({ method: 'GET', url: `/api/holds/${held.hold_id}` })).json<HoldBody>().status, 'released');

  await sleep(1100);
  const sweeper = await connectRedis({
    url: TEST_REDIS_URL,
    clusterNodes: clusterNodeList(TEST_REDIS_CLUSTER_NODES),
    commandTimeoutMs: 2000,
  });
  t.teardown(() => sweeper.disconnect());
  // The product's next sweep is scheduled at the purge time; sweep until it has come round.
  const settings = settingsFrom(config);
  const sweep = async () =>
    (await releaseExpiredHolds(createRedisCommands(sweeper, settings), settings, silent)).purged;
  const purged = await poll(sweep, (count) => count > 0, 3000, 100);
  t.equal(purged, 1);
  const gone = await app.inject({ method: 'GET', url: `/api/holds/${held.hold_id}` });
  t.equal(gone.statusCode, 404);
  t.equal(gone.json<{ code: string }>().code, 'HOLD_NOT_FOUND');
});
