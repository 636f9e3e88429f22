/**
 * The sweeper across instances: how much one instance claims at a time, and how soon another takes over the
 * products of one that died mid-sweep. Each hold must still be released exactly once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import t, { type Test } from 'tap';
import { loadConfig } from '../src/config.js';
import { newHoldId } from '../src/domain/hold-ids.js';
import { releaseExpiredHolds } from '../src/domain/sweeper.js';
import { createRedisCommands, type RedisCommands } from '../src/redis/commands.js';
import { clusterNodeList, connectRedis } from '../src/redis/connection.js';
import { sweepScheduleKey } from '../src/redis/keys.js';
import { settingsFrom } from '../src/settings.js';
import { createProductAt } from './support/api.js';
import { buildTestApp, createProduct, TEST_REDIS_CLUSTER_NODES, TEST_REDIS_URL } from './support/app.js';
import { redisNow } from './support/clock.js';
import { holdRecords, indexedHolds, inventory, nextSweepOf, type RedisScope } from './support/redis-state.js';
import { errorLines, serviceWorld } from './support/service-process.js';
import { waitForExit } from './support/processes.js';
import { poll } from './support/wait.js';

const silent = pino({ level: 'silent' });

// Starting two real services takes seconds each on a busy machine.
t.setTimeout(120_000);

/** Waits until Redis's clock has passed `ms` (hold expiries and leases are on Redis's clock). */
async function waitPastRedisMs(scope: RedisScope, ms: number): Promise<void> {
  for (;;) {
    const remaining = ms - (await redisNow(scope.redis));
    if (remaining < 0) return;
    await sleep(remaining + 5);
  }
}

/** Every product's holds ended exactly once: `held` back to 0, none indexed, every record expired, units add up. */
async function expectReleasedOnce(
  t: Test,
  scope: RedisScope,
  held: Map<number, { holds: number; units: number }>,
): Promise<void> {
  for (const [productId, made] of held) {
    const counters = await inventory(scope, productId);
    t.equal(counters.held, 0, `product ${productId}: held back to 0 (never below: no hold released twice)`);
    t.equal(await indexedHolds(scope, productId), 0, `product ${productId}: no hold left in the expiry index`);
    const records = await holdRecords(scope, productId);
    t.equal(records.length, made.holds, `product ${productId}: a record for each of the ${made.holds} holds`);
    t.equal(records.filter((r) => r.status === 'expired').length, made.holds, `product ${productId}: all expired`);
    t.equal(
      records.reduce((sum, r) => sum + r.qty, 0),
      made.units,
      `product ${productId}: the released units are the ${made.units} held`,
    );
  }
}

t.test('a sweeper claims no more products at a time than it sweeps in a quarter of their lease', async (t) => {
  // Lease 100 ms, steps of up to 100 holds: claims of sweepClaimSize(100, 100) = 10 products.
  const { app, prefix, redis } = await buildTestApp(t, {
    HOLD_TTL_SECONDS: 1,
    SWEEP_LEASE_MS: 100,
    SWEEP_BATCH_SIZE: 100,
  });
  const settings = app.settings;
  t.equal(settings.sweepClaimSize, 10);
  const held = new Map<number, { holds: number; units: number }>();
  let lastExpiry = 0;
  for (let i = 0; i < 35; i++) {
    const product = await createProduct(app, { stock: 100 });
    const answer = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 2 } });
    lastExpiry = Math.max(lastExpiry, Date.parse(answer.json<{ expires_at: string }>().expires_at));
    held.set(product.id, { holds: 1, units: 2 });
  }
  await waitPastRedisMs({ redis, prefix }, lastExpiry);

  // The sweeper's Redis commands, watched: what each claim asks for, and which products are leased to it at once.
  const commands = app.redisCommands;
  const leased = new Set<number>();
  const claims: { asked: number; got: number; stillLeased: number }[] = [];
  const watched: RedisCommands = {
    ...commands,
    async claimDueProducts(limit, leaseMs) {
      const stillLeased = leased.size;
      const ids = await commands.claimDueProducts(limit, leaseMs);
      for (const { productId } of ids) leased.add(productId);
      claims.push({ asked: limit, got: ids.length, stillLeased });
      return ids;
    },
    async scheduleSweep(productId, at, when) {
      await commands.scheduleSweep(productId, at, when);
      leased.delete(productId);
    },
  };
  let expired = 0;
  for (let pass = 0; pass < 20 && expired < 35; pass++) {
    expired += (await releaseExpiredHolds(watched, settings, silent)).expired;
  }
  t.equal(expired, 35, 'every product swept');
  t.ok(claims.length >= 4, `35 due products took ${claims.length} claims`);
  t.ok(
    claims.every((c) => c.asked === 10 && c.got <= 10),
    'no claim took more than sweepClaimSize',
  );
  t.ok(
    claims.every((c) => c.stillLeased === 0),
    "each claim's products were all rescheduled (their lease ended) before the next claim",
  );
  await expectReleasedOnce(t, { redis, prefix }, held);
});

t.test('products claimed by an instance that then died are left alone during the lease, then taken over', async (t) => {
  const { app, prefix, redis } = await buildTestApp(t, { HOLD_TTL_SECONDS: 1, SWEEP_LEASE_MS: 500 });
  const settings = app.settings;
  const held = new Map<number, { holds: number; units: number }>();
  let lastExpiry = 0;
  for (let i = 0; i < 3; i++) {
    const product = await createProduct(app, { stock: 100 });
    for (let qty = 1; qty <= 3; qty++) {
      const answer = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty } });
      lastExpiry = Math.max(lastExpiry, Date.parse(answer.json<{ expires_at: string }>().expires_at));
    }
    held.set(product.id, { holds: 3, units: 6 });
  }
  await waitPastRedisMs({ redis, prefix }, lastExpiry);

  // The instance that dies: it claims the due products, and is never heard of again.
  const dead = await connectRedis({
    url: TEST_REDIS_URL,
    clusterNodes: clusterNodeList(TEST_REDIS_CLUSTER_NODES),
    commandTimeoutMs: 2000,
  });
  t.teardown(() => dead.disconnect());
  const claimed = await createRedisCommands(dead, settings).claimDueProducts(
    settings.sweepClaimSize,
    settings.sweepLeaseMs,
  );
  // Read after the claim: its lease ends by then + the lease (read before, a slow claim's lease outlasts the wait).
  const claimedBy = await redisNow(redis);
  t.same(
    claimed.map((target) => target.productId).sort(),
    [...held.keys()].sort(),
    'the dead instance held all three products',
  );

  const during = await releaseExpiredHolds(app.redisCommands, settings, silent);
  t.equal(during.expired, 0, 'another sweeper leaves them alone during the lease');
  await waitPastRedisMs({ redis, prefix }, claimedBy + settings.sweepLeaseMs);
  const after = await releaseExpiredHolds(app.redisCommands, settings, silent);
  t.equal(after.expired, 9, 'and takes all of them over once it has run out');
  await expectReleasedOnce(t, { redis, prefix }, held);
});

t.test(
  'two service processes, one killed mid-sweep: the other releases every expired hold once, within 3 s of the death',
  async (t) => {
    const PRODUCTS = 12;
    const HOLDS_PER_PRODUCT = 400;
    // Steps of 100 holds: each product takes four, so the dying instance leaves products half swept.
    const settings = { HOLD_TTL_SECONDS: '3', SWEEP_BATCH_SIZE: '100' };
    const w = await serviceWorld(t, settings);
    // The survivor sweeps at the default interval and lease; the instance that dies looks every 20 ms, so it is
    // the first to claim the products when their holds fall due, and kills itself (SIGKILL) on its first step
    // that released holds: the rest of its claim (every product here: 12 <= sweepClaimSize) stays leased to it.
    const [survivor, dying] = await Promise.all([
      w.start(),
      w.start({ fault: 'after-sweep-step', env: { SWEEP_INTERVAL_MS: '20' } }),
    ]);
    const productIds: number[] = [];
    for (let i = 0; i < PRODUCTS; i++) productIds.push(await createProductAt(survivor.base, { stock: 10_000 }));

    // The holds, through the service's own script layer in batches of up to 256 a product: they fall due within
    // milliseconds of each other (over HTTP they would trickle out over seconds).
    const redis = await connectRedis({
      url: TEST_REDIS_URL,
      clusterNodes: clusterNodeList(TEST_REDIS_CLUSTER_NODES),
      commandTimeoutMs: 5000,
    });
    t.teardown(() => redis.disconnect());
    const commands = createRedisCommands(
      redis,
      settingsFrom(loadConfig({ ...settings, REDIS_KEY_PREFIX: w.prefix, REDIS_COMMAND_TIMEOUT_MS: '5000' })),
    );
    const held = new Map<number, { holds: number; units: number }>();
    let lastExpiry = 0;
    await Promise.all(
      productIds.flatMap((productId) => {
        held.set(productId, { holds: HOLDS_PER_PRODUCT, units: 0 });
        return Array.from({ length: HOLDS_PER_PRODUCT }, async (_, i) => {
          const qty = 1 + (i % 3);
          const outcome = await commands.reserve({ productId, holdId: newHoldId(productId), qty, customerId: '' });
          if (outcome.kind !== 'held') throw new Error(`hold refused: ${outcome.kind}`);
          held.get(productId)!.units += qty;
          lastExpiry = Math.max(lastExpiry, outcome.expiresAt);
        });
      }),
    );
    const units = [...held.values()].reduce((sum, p) => sum + p.units, 0);
    t.comment(
      `${PRODUCTS * HOLDS_PER_PRODUCT} holds of ${units} units on ${PRODUCTS} products, all due by ${lastExpiry}`,
    );

    const exit = await waitForExit(dying, 3000 + 10_000);
    const killedAt = await redisNow(w.redis);
    t.same(exit, { code: null, signal: 'SIGKILL' }, 'the instance killed itself mid-sweep');
    const heldAtDeath = (await Promise.all(productIds.map(async (id) => (await inventory(w, id)).held))).reduce(
      (a, b) => a + b,
      0,
    );
    t.ok(heldAtDeath > 0, `${heldAtDeath} of ${units} units still held when it died`);

    const totalHeld = async () => {
      let sum = 0;
      for (const id of productIds) sum += (await inventory(w, id)).held;
      return sum;
    };
    const remaining = await poll(totalHeld, (sum) => sum === 0, 10_000, 20);
    const releasedAt = await redisNow(w.redis);
    const takeOverMs = releasedAt - Math.max(killedAt, lastExpiry);
    t.equal(remaining, 0, 'the survivor released every expired hold');
    t.ok(takeOverMs <= 3000, `every product's held reached 0 ${takeOverMs} ms after the death (bound: 3000 ms)`);
    await expectReleasedOnce(t, w, held);
    t.same(errorLines(survivor), [], 'the survivor logged no error');
  },
);

t.test('after a restart with a shorter hold time, the sweeper releases new holds within that hold time', async (t) => {
  // A run with HOLD_TTL_SECONDS=120 sweeps a product with no hold: it plans the next look 120 s ahead.
  const long = await buildTestApp(t, { HOLD_TTL_SECONDS: 120, SWEEP_INTERVAL_MS: 50 });
  const product = (await createProduct(long.app, { stock: 10 })).id;
  const planned = await poll(
    () => nextSweepOf(long, product),
    (at) => at !== null && at > Date.now() + 60_000,
    5000,
  );
  t.ok(planned !== null && planned > Date.now() + 60_000, 'the long run planned the next sweep far ahead');
  await long.app.close();

  // The same Redis and database, HOLD_TTL_SECONDS=1: one hold, then no request that could release it inline.
  const SWEEP_INTERVAL_MS = 50;
  const short = await buildTestApp(t, {
    HOLD_TTL_SECONDS: 1,
    SWEEP_INTERVAL_MS,
    DATABASE_URL: long.config.DATABASE_URL,
    REDIS_KEY_PREFIX: long.prefix,
  });
  const hold = await short.app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product, qty: 3 } });
  t.equal(hold.statusCode, 201);
  t.equal((await inventory(short, product)).held, 3);
  const expiresAt = Date.parse(hold.json<{ expires_at: string }>().expires_at);
  await waitPastRedisMs(short, expiresAt);

  // Bound: the sweep interval and slack for a loaded machine, far below the 120 s the long run planned.
  const BOUND_MS = SWEEP_INTERVAL_MS + 2000;
  const held = await poll(
    async () => (await inventory(short, product)).held,
    (units) => units === 0,
    BOUND_MS,
    20,
  );
  const lateMs = (await redisNow(short.redis)) - expiresAt;
  t.equal(held, 0, `held back to 0 ${lateMs} ms after the hold expired (bound: ${BOUND_MS} ms)`);
  t.match(await holdRecords(short, product), [{ status: 'expired', qty: 3 }], 'the sweeper expired the hold');
});

t.test('bringing sweeps forward moves only those planned later, however many (more than one chunk)', async (t) => {
  const { app, prefix, redis } = await buildTestApp(t);
  const key = sweepScheduleKey(prefix);
  const at = (await redisNow(redis)) + 1000;
  // More than two chunks of 1000 planned far ahead, and two already sooner than `at`.
  const far = Array.from({ length: 2500 }, (_, i) => String(1_000_000 + i));
  await redis.zadd(key, ...far.flatMap((member) => [at + 120_000, member]));
  await redis.zadd(key, 0, 'due', at - 500, 'sooner');
  t.equal(await app.redisCommands.bringSweepsForward(at), 2500, 'every product planned later is moved');
  t.equal(await redis.zcount(key, `(${at}`, '+inf'), 0, 'none is left planned later');
  t.equal(await redis.zcount(key, at, at), 2500, 'each is planned at the bound');
  t.same([await redis.zscore(key, 'due'), await redis.zscore(key, 'sooner')], ['0', String(at - 500)], 'sooner kept');
  t.equal(await app.redisCommands.bringSweepsForward(at), 0, 'a second call has nothing to move');
});
