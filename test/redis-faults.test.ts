/**
 * Redis faults under a mixed storm of real HTTP buyers (test/support/storm.ts: holds, some under an
 * Idempotency-Key and retried, releases, conversions, signed payment webhooks) against the real service process:
 *
 * - Redis SIGKILLed and restarted with AOF (`appendfsync everysec`) on its data directory: a killed process loses
 *   nothing the kernel has, so nothing acknowledged may be lost, and no product needs a rebuild. While it is down
 *   every request that needs it answers 503 with Retry-After, fast; the service reconnects by itself.
 * - Redis restarted on an empty data directory, and FLUSHALL, with conversions in flight (waiting in Postgres):
 *   the loss is reported, every product rebuilt from Postgres, and no unit is granted or sold twice.
 *
 * The short form runs one fault a scenario; `npm run faults -- --rounds N` (bench/faults.ts) runs this file with
 * more rounds. Each round prints a `figures {...}` comment the long form collects.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import t, { type Test } from 'tap';
import { createDatabase } from '../src/db/connection.js';
import { SOLD_ORDER_STATUSES, type Database } from '../src/db/schema.js';
import { reconcile, type ReconcileReport } from '../src/domain/reconcile.js';
import { createProductAt } from './support/api.js';
import { percentile, request, tally } from './support/http.js';
import { lockProductRow } from './support/postgres-state.js';
import { privateRedis, type PrivateRedis } from './support/private-redis.js';
import { seededRandom } from './support/random.js';
import { holdRecords, inventory, type RedisScope } from './support/redis-state.js';
import { serviceWorld, type Service, type ServiceWorld } from './support/service-process.js';
import { startStorm, type Exchange, type Storm, type StormProduct } from './support/storm.js';
import { eventually, poll } from './support/wait.js';

const ROUNDS = Number(process.env.REDIS_FAULTS_ROUNDS ?? 1);
const CLIENTS = Number(process.env.REDIS_FAULTS_CLIENTS ?? 16);
const SEED = Number(process.env.REDIS_FAULTS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SECRET = 'whsec_redis_faults';
// How long Redis stays down: long enough for many requests to meet the outage.
const OUTAGE_MS = 1500;
// What "fast" means for a 503 while Redis is down (the brief of the outage standard: within a second).
const OUTAGE_ANSWER_MS = 1000;
// Longer than any answer may take: a request still unanswered then is a hang.
const CLIENT_DEADLINE_MS = 8000;
// HOLD_TTL_SECONDS of the service.
const HOLD_TTL_MS = 3000;
// Waits for the service to do something by itself (reconnect, rebuild, settle), on a busy machine.
const RECOVERY_DEADLINE_MS = 20_000;

// Requests that cannot be served without Redis (a payment webhook is settled in Postgres alone).
const NEEDS_REDIS = new Set<Exchange['kind']>(['hold', 'release', 'order']);
// What the service logs when it notices a loss (src/domain/redis-rebuild.ts).
const LOST_MESSAGE = 'redis lost a product';
const MARKER_MESSAGE = 'redis copy marker missing';

t.setTimeout(120_000 + ROUNDS * 60_000);

/** The service on a private Redis, three products to buy, and clients on both stores. */
interface FaultWorld extends RedisScope {
  world: ServiceWorld;
  redisServer: PrivateRedis;
  service: Service;
  db: Kysely<Database>;
  products: StormProduct[];
}

async function faultWorld(t: Test): Promise<FaultWorld> {
  const redisServer = await privateRedis(t, { persistence: 'aof' });
  const world = await serviceWorld(t, {
    REDIS_URL: redisServer.url,
    WEBHOOK_SECRET: SECRET,
    // Holds expire within the storm, and interrupted conversions are recovered within it.
    HOLD_TTL_SECONDS: String(HOLD_TTL_MS / 1000),
    SWEEP_INTERVAL_MS: '100',
    CONVERSION_LEASE_MS: '500',
    RECOVERY_INTERVAL_MS: '100',
    REDIS_LOSS_CHECK_MS: '100',
    // Conversions and a rebuild wait for a product row the test holds on purpose: not a test of timeouts.
    DATABASE_TIMEOUT_MS: '5000',
    // Sixteen buyers from one address: the rate limits (test/rate-limits.test.ts) are not the subject.
    RATE_LIMIT: 'off',
  });
  // Fails at once while Redis is down (no offline queue) and reconnects by itself.
  const redis = new Redis(redisServer.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => 50,
  });
  redis.on('error', () => {});
  t.teardown(() => redis.disconnect());
  const db = createDatabase({ url: world.databaseUrl, timeoutMs: 10_000, poolSize: 2 });
  t.teardown(() => db.destroy());
  const service = await world.start();
  const specs: Omit<StormProduct, 'id'>[] = [
    // Plenty: its conversions keep flowing, and the test holds its row to catch conversions in flight.
    { stock: 5000 },
    // Tight: sells out under the storm, so a unit granted twice would show as an oversell.
    { stock: 30 },
    // A per-customer limit the storm's few customers reach.
    { stock: 200, perCustomerLimit: 2 },
  ];
  const products: StormProduct[] = [];
  for (const spec of specs) {
    const id = await createProductAt(service.base, {
      stock: spec.stock,
      ...(spec.perCustomerLimit ? { per_customer_limit: spec.perCustomerLimit } : {}),
    });
    products.push({ id, ...spec });
  }
  return { world, redisServer, service, db, products, redis, prefix: world.prefix };
}

function storm(w: FaultWorld, seed: number): Storm {
  return startStorm({
    baseUrl: w.service.base,
    products: w.products,
    webhookSecret: SECRET,
    clients: CLIENTS,
    customers: 40,
    random: seededRandom(seed),
    deadlineMs: CLIENT_DEADLINE_MS,
  });
}

/** Resolves when the service answered `/readyz` 200; returns when (Date.now()), or throws past the deadline. */
async function readyAgain(w: FaultWorld): Promise<number> {
  if (!(await eventually(() => w.service.isReady(), RECOVERY_DEADLINE_MS, 20)))
    throw new Error('the service did not become ready again by itself');
  return Date.now();
}

/** Waits until the storm has done business since `since`: some holds granted and orders acknowledged. */
async function business(s: Storm, since: number): Promise<boolean> {
  return eventually(
    async () =>
      [...s.grants.values()].filter((g) => g.grantedAt > since).length >= 10 &&
      s.exchanges.filter((e) => e.kind === 'order' && e.startedAt > since && e.status === 201).length >= 3,
    RECOVERY_DEADLINE_MS,
    20,
  );
}

/** Whether Redis answers again (the test's own client reconnects in the background). */
const redisAnswers = (w: FaultWorld) =>
  eventually(async () => (await w.redis.ping().catch(() => '')) === 'PONG', 10_000);

/**
 * Reads every product's counters every few milliseconds while the storm runs, and keeps the worst seen: the
 * invariant `stock - held - sold >= 0` must hold at every moment, not only at the end.
 */
function watchCounters(w: FaultWorld) {
  let watching = true;
  let samples = 0;
  const violations: string[] = [];
  const done = (async () => {
    while (watching) {
      for (const product of w.products) {
        const counters = await inventory(w, product.id).catch(() => undefined);
        if (!counters || counters.stock === 0) continue; // Redis down or the copy not rebuilt yet
        samples++;
        if (counters.stock - counters.held - counters.sold < 0 || counters.stock !== product.stock)
          violations.push(`product ${product.id}: ${JSON.stringify(counters)}`);
      }
      await sleep(20);
    }
  })();
  return {
    violations,
    samples: () => samples,
    stop: async () => {
      watching = false;
      await done;
    },
  };
}

/** Checks until reconcile --check finds no drift (work in flight settles first), or the deadline passes. */
async function reconciled(w: FaultWorld): Promise<ReconcileReport> {
  return poll(
    () => reconcile({ db: w.db, redis: w.redis, prefix: w.prefix }),
    (report) => report.clean,
    RECOVERY_DEADLINE_MS,
    250,
  );
}

/** The service's JSON log lines (LOG_LEVEL=warn) with their level, time and message. */
function logLines(service: Service): { level: number; time: number; msg: string; product_id?: number }[] {
  return service.output().flatMap((line) => {
    try {
      return [JSON.parse(line)];
    } catch {
      return [];
    }
  });
}

const summary = (exchanges: Exchange[]) => JSON.stringify(Object.fromEntries(tally(exchanges.map((e) => e.status))));

/**
 * While Redis was down (requests sent after it died and answered before it was started again): every request that
 * needs it answered 503 with Retry-After, within OUTAGE_ANSWER_MS. Returns the figures.
 */
function checkOutageAnswers(t: Test, s: Storm, downFrom: number, downUntil: number, probed = false) {
  const inOutage = s.exchanges.filter(
    (e) => NEEDS_REDIS.has(e.kind) && e.startedAt >= downFrom && e.endedAt <= downUntil,
  );
  // A hold on a product this instance saw sold out a moment ago is refused from its sold-out cache, without Redis.
  const soldOut = inOutage.filter((e) => e.kind === 'hold' && e.status === 409 && e.code === 'INSUFFICIENT_STOCK');
  const during = inOutage.filter((e) => !soldOut.includes(e));
  t.ok(
    during.length >= 5,
    `the ${probed ? "storm and the test's probes" : 'storm'} met the outage: ${during.length} requests needing Redis while it was down`,
  );
  const wrong = during.filter((e) => e.status !== 503 || e.code !== 'SERVICE_UNAVAILABLE' || !e.retryAfter);
  t.same(
    wrong.map((e) => `${e.kind} ${e.status} ${e.code} retry-after ${e.retryAfter}`),
    [],
    `every one answered 503 SERVICE_UNAVAILABLE with Retry-After (${summary(during)})`,
  );
  const ms = during.map((e) => e.ms);
  const figures = {
    answers: during.length,
    p50_ms: percentile(ms, 50),
    p99_ms: percentile(ms, 99),
    max_ms: Math.max(0, ...ms),
  };
  t.ok(
    figures.max_ms < OUTAGE_ANSWER_MS,
    `all within ${OUTAGE_ANSWER_MS} ms (slowest ${figures.max_ms.toFixed(0)} ms)`,
  );
  const webhooks = s.exchanges.filter((e) => e.kind === 'webhook' && e.startedAt >= downFrom && e.endedAt <= downUntil);
  t.comment(
    `outage 503s (and ${soldOut.length} sold-out refusals from the cache): p50 ${figures.p50_ms.toFixed(1)} ms, p99 ${figures.p99_ms.toFixed(1)} ms, max ${figures.max_ms.toFixed(1)} ms over ${during.length}; webhooks meanwhile (Postgres only): ${summary(webhooks)}`,
  );
  return figures;
}

/** No answer was a 500 or missing (a hang past the client deadline, a dropped connection). */
function checkEveryAnswer(t: Test, s: Storm) {
  const broken = s.exchanges.filter((e) => e.status >= 500 && e.status !== 503);
  const missing = s.exchanges.filter((e) => e.status === 0);
  t.comment(`${s.exchanges.length} requests: ${summary(s.exchanges)}`);
  t.same(
    broken.map((e) => `${e.kind} ${e.status} ${e.code}`),
    [],
    'no 5xx but 503',
  );
  t.same(
    missing.map((e) => `${e.kind} after ${e.ms.toFixed(0)} ms: ${e.error}`),
    [],
    `no request left unanswered (client deadline ${CLIENT_DEADLINE_MS} ms)`,
  );
}

/** Postgres: units of live orders per product and per (product, customer), and holds with more than one order. */
async function ledger(w: FaultWorld) {
  const units = await w.world.db.query<{ product_id: number; customer_id: string | null; n: number }>(
    `SELECT i.product_id, o.customer_id, sum(i.qty)::int AS n FROM orders o JOIN order_items i ON i.order_id = o.id
      WHERE o.status = ANY($1) GROUP BY 1, 2`,
    [SOLD_ORDER_STATUSES],
  );
  const doubled = await w.world.db.query<{ hold_id: string; n: number; units: number }>(
    `SELECT o.hold_id, count(*)::int AS n, sum(i.qty)::int AS units FROM orders o JOIN order_items i ON i.order_id = o.id
      GROUP BY o.hold_id HAVING count(*) > 1`,
  );
  const orders = await w.world.db.query<{ id: number; hold_id: string; status: string }>(
    'SELECT id::int AS id, hold_id, status FROM orders',
  );
  return { units: units.rows, doubled: doubled.rows, orders: orders.rows };
}

/**
 * The safety of the units, whatever happened: per product, live orders ≤ stock and live orders + active holds ≤
 * stock; no hold with two orders; every order in Postgres comes from a hold some answer granted; per customer,
 * live orders + active holds ≤ the limit. Returns the units sold twice (must be 0).
 */
async function checkNoUnitTwice(t: Test, w: FaultWorld, s: Storm): Promise<number> {
  const { units, doubled, orders } = await ledger(w);
  let soldTwice = doubled.reduce((sum, row) => sum + row.units, 0);
  t.same(doubled, [], 'no hold has more than one order');
  for (const product of w.products) {
    const records = await holdRecords(w, product.id);
    const active = records.filter((r) => r.status === 'held' || r.status === 'converting');
    const held = active.reduce((sum, r) => sum + r.qty, 0);
    const rows = units.filter((row) => row.product_id === product.id);
    const live = rows.reduce((sum, row) => sum + row.n, 0);
    soldTwice += Math.max(0, live - product.stock);
    t.ok(
      live + held <= product.stock,
      `product ${product.id}: ${live} units in live orders + ${held} held <= stock ${product.stock}`,
    );
    if (product.perCustomerLimit) {
      const perCustomer = new Map<string, number>();
      for (const row of rows) if (row.customer_id) perCustomer.set(row.customer_id, row.n);
      for (const r of active)
        if (r.customer_id) perCustomer.set(r.customer_id, (perCustomer.get(r.customer_id) ?? 0) + r.qty);
      const over = [...perCustomer].filter(([, n]) => n > product.perCustomerLimit!);
      t.same(over, [], `product ${product.id}: no customer past its limit of ${product.perCustomerLimit}`);
      t.ok(
        [...perCustomer.values()].some((n) => n === product.perCustomerLimit),
        'and some customer reached it (the limit was tested)',
      );
    }
  }
  const ungranted = orders.filter((o) => !s.grants.has(o.hold_id));
  t.same(ungranted, [], 'every order in Postgres is of a hold an answer granted');
  const missing = [...s.orders.keys()].filter((id) => !orders.some((o) => o.id === id));
  t.same(missing, [], `every acknowledged order (${s.orders.size}) is in Postgres`);
  const paid = s.payments.filter((p) => p.status === 'paid').map((p) => p.orderId);
  const notPaid = orders.filter((o) => paid.includes(o.id) && o.status !== 'paid');
  t.same(notPaid, [], `every payment answered paid (${new Set(paid).size} orders) is recorded paid`);
  const cancelled = s.payments.filter((p) => p.status === 'cancelled').map((p) => p.orderId);
  const notCancelled = orders.filter((o) => cancelled.includes(o.id) && o.status === 'paid');
  t.same(notCancelled, [], 'no order answered cancelled is paid');
  return soldTwice;
}

/**
 * A customer's units in orders made before a loss survive it: every hold granted to the customer after the loss
 * fits the limit beside the units of its orders from before the loss that are still live (orders only leave the
 * live statuses, never come back, so live now means live at the loss).
 */
async function checkLimitsAcrossLosses(t: Test, w: FaultWorld, s: Storm, losses: number[]) {
  for (const product of w.products.filter((p) => p.perCustomerLimit)) {
    const { rows } = await w.world.db.query<{ customer_id: string; created_at: Date; qty: number }>(
      `SELECT o.customer_id, o.created_at, i.qty FROM orders o JOIN order_items i ON i.order_id = o.id
        WHERE i.product_id = $1 AND o.status = ANY($2) AND o.customer_id IS NOT NULL`,
      [product.id, SOLD_ORDER_STATUSES],
    );
    let checked = 0;
    const over: string[] = [];
    for (const grant of s.grants.values()) {
      if (grant.productId !== product.id) continue;
      const loss = losses.filter((at) => at < grant.grantedAt).pop();
      if (loss === undefined) continue;
      const before = rows
        .filter((r) => r.customer_id === grant.customerId && r.created_at.getTime() < loss)
        .reduce((sum, r) => sum + r.qty, 0);
      if (before > 0) checked++;
      if (before + grant.qty > product.perCustomerLimit!)
        over.push(`${grant.holdId} of ${grant.customerId}: ${grant.qty} + ${before} ordered before the loss`);
    }
    t.same(
      over,
      [],
      `product ${product.id}: no hold after a loss took a customer past its limit (${checked} granted to customers with orders from before it)`,
    );
  }
}

/** Reads each hold over HTTP, a few at a time: its status, or 404. */
async function holdStatuses(w: FaultWorld, holdIds: string[]): Promise<Map<string, string>> {
  const statuses = new Map<string, string>();
  for (let i = 0; i < holdIds.length; i += 16) {
    await Promise.all(
      holdIds.slice(i, i + 16).map(async (holdId) => {
        const answer = await request<{ status?: string }>(w.service.base, 'GET', `/api/holds/${holdId}`);
        statuses.set(holdId, answer.status === 200 ? answer.body.status! : String(answer.status));
      }),
    );
  }
  return statuses;
}

/** Every hold granted in `holdIds` is still there: held, converted, released (if its release was acknowledged) or expired. */
async function checkHoldsKept(t: Test, w: FaultWorld, s: Storm, holdIds: string[], what: string) {
  const statuses = await holdStatuses(w, holdIds);
  const wrong = [...statuses].filter(([holdId, status]) => {
    if (s.releases.has(holdId)) return status !== 'released';
    if ([...s.orders.values()].some((o) => o.holdId === holdId)) return status !== 'converted';
    return !['held', 'converted', 'released', 'expired'].includes(status);
  });
  t.same(wrong, [], `${what}: all ${holdIds.length} still there, in the state their answers said`);
  t.comment(`${what}: ${JSON.stringify(Object.fromEntries(tally([...statuses.values()])))}`);
}

/** A reconcile --check without drift once the storm's work in flight has settled. */
async function checkReconciled(t: Test, w: FaultWorld) {
  const report = await reconciled(w);
  t.ok(report.clean, `reconcile --check is clean (${report.products_checked} products)`, { drifts: report.drifts });
}

function figures(t: Test, scenario: string, round: number, values: Record<string, unknown>) {
  t.comment(`figures ${JSON.stringify({ scenario, round, ...values })}`);
}

t.test(
  'Redis SIGKILLed under a storm and restarted with its AOF: 503s while down, nothing acknowledged lost',
  async (t) => {
    t.comment(`seed ${SEED} (REDIS_FAULTS_SEED=${SEED}), ${CLIENTS} clients, ${ROUNDS} round(s)`);
    const w = await faultWorld(t);
    const s = storm(w, SEED);
    const counters = watchCounters(w);
    try {
      for (let round = 1; round <= ROUNDS; round++) {
        t.ok(await business(s, Date.now()), `round ${round}: the storm is doing business`);
        const requestsSoFar = s.exchanges.length;
        await w.redisServer.kill();
        const downFrom = Date.now();
        await sleep(OUTAGE_MS);
        const downUntil = Date.now();
        await w.redisServer.start();
        const upAt = Date.now();
        const readyAt = await readyAgain(w);
        t.pass(`round ${round}: ready again ${readyAt - upAt} ms after Redis answered, by itself`);
        t.ok(await business(s, readyAt), `round ${round}: holds and orders succeed again`);
        const outage = checkOutageAnswers(t, s, downFrom, downUntil);
        figures(t, 'aof-kill', round, {
          outage_ms: downUntil - downFrom,
          outage_503s: outage.answers,
          outage_503_p50_ms: Math.round(outage.p50_ms * 10) / 10,
          outage_503_p99_ms: Math.round(outage.p99_ms * 10) / 10,
          outage_503_max_ms: Math.round(outage.max_ms * 10) / 10,
          reconnect_ms: readyAt - upAt,
          requests_so_far: requestsSoFar,
        });
      }
    } finally {
      await s.stop();
      await counters.stop();
    }
    checkEveryAnswer(t, s);
    t.ok(await redisAnswers(w), 'Redis answers');
    await checkReconciled(t, w);

    // With the AOF, a killed Redis comes back with everything it acknowledged: nothing to rebuild, nothing lost.
    const lost = logLines(w.service).filter((l) => l.msg.startsWith(LOST_MESSAGE));
    t.same(lost, [], 'no product was lost: the restarted Redis had every copy');
    await checkHoldsKept(t, w, s, [...s.grants.keys()], 'every hold granted');
    const reused = [...s.keyedHolds].filter(([, ids]) => new Set(ids).size > 1);
    t.same(reused, [], `every Idempotency-Key (${s.keyedHolds.size}) answered one hold, across the restart`);
    const soldTwice = await checkNoUnitTwice(t, w, s);
    t.equal(soldTwice, 0, 'no unit sold twice');
    t.same(counters.violations, [], `stock - held - sold >= 0 in all ${counters.samples()} samples`);
  },
);

for (const loss of ['empty restart', 'flushall'] as const) {
  t.test(
    `Redis ${loss === 'flushall' ? 'flushed' : 'restarted on an empty data directory'} under a storm with conversions in flight: reported, rebuilt, no unit granted twice`,
    async (t) => {
      const seed = SEED + (loss === 'flushall' ? 2 : 1);
      t.comment(`seed ${seed}`);
      const w = await faultWorld(t);
      const s = storm(w, seed);
      const counters = watchCounters(w);
      const [contested] = w.products;
      let lastReadyAt = 0;
      const ordered = new Set<string>();
      const losses: number[] = [];
      try {
        for (let round = 1; round <= ROUNDS; round++) {
          t.ok(await business(s, Date.now()), `round ${round}: the storm is doing business`);
          // A customer at the limit before the loss: orders live in Postgres, so the rebuilt copy must keep it there.
          const limited = w.products.find((p) => p.perCustomerLimit)!;
          const loyal = `loyal-${round}`;
          const bought = await s.buy(limited.id, limited.perCustomerLimit!, loyal);
          t.ok(bought, `round ${round}: ${loyal} bought its limit of ${limited.perCustomerLimit} before the loss`);
          // Conversions in flight at the loss: the test holds the contested product's row, so conversions that
          // claimed their hold in Redis wait in Postgres for it; the loss comes while they wait.
          const blocker = await lockProductRow(t, w.world, w.world.databaseUrl, contested!.id);
          const waiting = await poll(blocker.waiting, (n) => n >= 1, 10_000, 10);
          t.ok(waiting >= 1, `round ${round}: ${waiting} conversion(s) waiting in Postgres at the loss`);
          let held = 0;
          for (const product of w.products) held += (await inventory(w, product.id)).held;
          let downFrom = 0;
          let downUntil = 0;
          if (loss === 'empty restart') {
            await w.redisServer.kill();
            downFrom = Date.now();
            // Most buyers may be waiting on the held row by now: the test's own holds meet the outage too.
            while (Date.now() - downFrom < OUTAGE_MS / 3) {
              await s.probeHold(contested!.id);
              await sleep(50);
            }
            downUntil = Date.now();
          }
          // From here the service can see the loss: taken before the command, since the service may notice it
          // before the test hears back from Redis.
          const lossAt = Date.now();
          if (loss === 'empty restart') await w.redisServer.start({ emptyDataDir: true });
          else await w.redis.flushall();
          losses.push(loss === 'empty restart' ? downFrom : lossAt);
          const stormLoss = loss === 'empty restart' ? downFrom : lossAt;
          // The contested product's rebuild queues behind the row: the service reports it while it waits, and
          // holds on it answer 503 meanwhile, ours and the storm's.
          const rebuilding = await poll(
            async () => (await request<{ rebuilding?: number[] }>(w.service.base, 'GET', '/readyz')).body,
            (body) => Boolean(body?.rebuilding?.includes(contested!.id)),
            10_000,
            10,
          );
          t.ok(
            rebuilding?.rebuilding?.includes(contested!.id),
            `round ${round}: /readyz lists the product being rebuilt`,
          );
          const rebuildSeenAt = Date.now();
          const probes = [];
          for (let i = 0; i < 5; i++) {
            probes.push(
              await request(w.service.base, 'POST', '/api/holds', {
                product_id: contested!.id,
                qty: 1,
                customer_id: 'probe',
              }),
            );
            await sleep(40);
          }
          const stillRebuilding = (await request<{ rebuilding?: number[] }>(w.service.base, 'GET', '/readyz')).body;
          t.ok(
            stillRebuilding?.rebuilding?.includes(contested!.id),
            'still rebuilding after the probes (the row is still held)',
          );
          const rebuildStillAt = Date.now();
          t.same(
            probes.map((a) => [a.status, a.headers.get('retry-after')]),
            probes.map(() => [503, '1']),
            'holds on a product being rebuilt answer 503 with Retry-After: 1',
          );
          await blocker.release();
          const readyAt = await readyAgain(w);
          t.ok(await business(s, readyAt), `round ${round}: holds and orders succeed again`);
          const more = await request<{ code?: string }>(w.service.base, 'POST', '/api/holds', {
            product_id: limited.id,
            qty: 1,
            customer_id: loyal,
          });
          t.match(
            [more.status, more.body.code],
            [409, 'CUSTOMER_LIMIT_EXCEEDED'],
            `round ${round}: after the rebuild, ${loyal} is still at its limit`,
          );

          for (const order of s.orders.values()) ordered.add(order.holdId);
          const inFlight = s.exchanges.filter(
            (e) => e.kind === 'order' && e.productId === contested!.id && e.startedAt < stormLoss && e.endedAt > lossAt,
          );
          t.ok(
            inFlight.length >= 1,
            `round ${round}: ${inFlight.length} conversion(s) in flight across the loss: ${summary(inFlight)}`,
          );
          const duringRebuild = s.exchanges.filter(
            (e) =>
              e.kind === 'hold' &&
              e.productId === contested!.id &&
              e.startedAt >= rebuildSeenAt &&
              e.endedAt <= rebuildStillAt,
          );
          t.same(
            duringRebuild.filter((e) => e.status !== 503).map((e) => `${e.status} ${e.code}`),
            [],
            `the storm's ${duringRebuild.length} holds on it during its rebuild answered 503`,
          );
          let outage = {};
          if (loss === 'empty restart') {
            const answers = checkOutageAnswers(t, s, downFrom, downUntil, true);
            outage = {
              outage_503s: answers.answers,
              outage_503_p50_ms: Math.round(answers.p50_ms * 10) / 10,
              outage_503_p99_ms: Math.round(answers.p99_ms * 10) / 10,
            };
          }

          // The loss is reported at error level, each product once, with what was lost.
          const lines = logLines(w.service).filter((l) => l.time >= lossAt);
          const reports = lines.filter((l) => l.level >= 50 && l.msg.startsWith(LOST_MESSAGE));
          t.same(
            [...new Set(reports.map((l) => l.product_id))].sort(),
            w.products.map((p) => p.id).sort(),
            `round ${round}: the loss of every product is logged at error level`,
            {
              since_loss: lines.map((l) => [l.time - lossAt, l.level, l.msg, l.product_id]),
              logged: w.service.output().length,
            },
          );
          const detectedAt = Math.min(
            ...lines
              .filter((l) => l.msg.startsWith(MARKER_MESSAGE) || l.msg.startsWith(LOST_MESSAGE))
              .map((l) => l.time),
          );
          const rebuiltAt = (id: number) => Math.max(...reports.filter((l) => l.product_id === id).map((l) => l.time));
          const others = w.products.filter((p) => p !== contested).map((p) => rebuiltAt(p.id));
          // Holds live at the loss (granted before it, not yet expired, never released or converted) that read 404
          // now: lost with the copy, their units back on sale.
          const liveAtLoss = [...s.grants.values()].filter(
            (g) =>
              g.grantedAt < stormLoss &&
              g.grantedAt + HOLD_TTL_MS > stormLoss &&
              !s.releases.has(g.holdId) &&
              !ordered.has(g.holdId),
          );
          const statuses = await holdStatuses(
            w,
            liveAtLoss.map((g) => g.holdId),
          );
          const holdsLost = [...statuses.values()].filter((status) => status === '404').length;
          lastReadyAt = readyAt;
          figures(t, loss === 'flushall' ? 'flushall' : 'empty-restart', round, {
            detection_ms: detectedAt - lossAt,
            rebuilt_ms: Math.max(...others) - lossAt,
            contested_rebuilt_ms: rebuiltAt(contested!.id) - lossAt,
            held_units_at_loss: held,
            holds_lost: holdsLost,
            conversions_in_flight: inFlight.length,
            in_flight_outcomes: Object.fromEntries(
              tally(inFlight.map((e) => `${e.status}${e.code ? ` ${e.code}` : ''}`)),
            ),
            ...outage,
          });
          t.ok(holdsLost >= 1, `round ${round}: the loss took ${holdsLost} live hold(s) with it`);
        }
      } finally {
        await s.stop();
        await counters.stop();
      }
      checkEveryAnswer(t, s);
      t.ok(await redisAnswers(w), 'Redis answers');
      await checkReconciled(t, w);
      // Holds granted after the last rebuild were made in the rebuilt copy: none may be lost.
      const after = [...s.grants.values()].filter((g) => g.grantedAt > lastReadyAt);
      await checkHoldsKept(
        t,
        w,
        s,
        after.map((g) => g.holdId),
        'every hold granted after the rebuild',
      );
      // An Idempotency-Key answered two holds only across a loss, and then the first one was lost with the copy.
      const statuses = await holdStatuses(
        w,
        [...s.keyedHolds.values()].flatMap((ids) => [...new Set(ids)].slice(0, -1)),
      );
      t.same(
        [...statuses].filter(([, status]) => status !== '404'),
        [],
        `no Idempotency-Key has two live holds (${statuses.size} keys decided afresh after the loss)`,
      );
      await checkLimitsAcrossLosses(t, w, s, losses);
      const soldTwice = await checkNoUnitTwice(t, w, s);
      t.equal(soldTwice, 0, 'no unit sold twice');
      t.comment(
        `figures ${JSON.stringify({ scenario: loss === 'flushall' ? 'flushall' : 'empty-restart', units_sold_twice: soldTwice })}`,
      );
      t.same(counters.violations, [], `stock - held - sold >= 0 in all ${counters.samples()} samples`);
    },
  );
}
