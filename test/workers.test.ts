/**
 * WEB_CONCURRENCY > 1: a primary and its node:cluster workers, as real processes sharing one port. The primary
 * runs the migrations once and serves nothing; connections are spread over the workers; GET /metrics is the whole
 * group's; a worker that dies is forked again. The background loops run in every worker: under a storm of buyers
 * with holds expiring, orders, webhooks and a Redis FLUSHALL, three workers keep the invariant exact, no hold gets
 * two orders, and reconcile ends clean (the stop signals are in test/shutdown.test.ts).
 */
import { readdirSync } from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import t, { type Test } from 'tap';
import { createDatabase } from '../src/db/connection.js';
import type { Database } from '../src/db/schema.js';
import { reconcile } from '../src/domain/reconcile.js';
import { admin } from './support/app.js';
import { createProductAt } from './support/api.js';
import { percentile, tally } from './support/http.js';
import { waitForExit } from './support/processes.js';
import { privateRedis } from './support/private-redis.js';
import { seededRandom } from './support/random.js';
import { holdRecords, inventory } from './support/redis-state.js';
import { serviceWorld, type Service, type ServiceWorld } from './support/service-process.js';
import { startStorm, type StormProduct } from './support/storm.js';
import { eventually, poll } from './support/wait.js';

// Three processes start on a busy machine, some tests twice.
t.setTimeout(300_000);

const MIGRATIONS = readdirSync(new URL('../migrations', import.meta.url)).filter((f) => /\.(ts|js)$/.test(f));
const SECRET = 'whsec_workers';

interface LogLine {
  level: number;
  time: number;
  pid: number;
  msg: string;
  worker?: number;
  worker_pid?: number;
  signal?: string;
  restart_in_ms?: number;
  route?: string;
}

function logLines(service: Service): LogLine[] {
  return service.output().flatMap((line) => {
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });
}

/** One request on a connection of its own (no keep-alive), so the primary hands each to the next worker. */
function onNewConnection(service: Service, method: string, path: string, body?: unknown): Promise<number> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(`${service.base}${path}`, {
      method,
      agent: false,
      headers: { connection: 'close', ...(payload ? { 'content-type': 'application/json' } : {}) },
      timeout: 8000,
    });
    req.once('response', (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode!));
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
    req.end(payload);
  });
}

/** The value of one series of a Prometheus text exposition (`name{labels}`), or undefined. */
function series(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const scrape = async (service: Service) => {
  const response = await fetch(`${service.base}/metrics`, { headers: admin, signal: AbortSignal.timeout(8000) });
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}`);
  return response.text();
};

// Several processes start at once on a machine shared with the stores: a start's busy event loop is not the
// subject (test/overload.test.ts is), so /readyz does not answer "overloaded" meanwhile.
const GROUP = { RATE_LIMIT: 'off', READY_MAX_EVENT_LOOP_DELAY_MS: '0' };

/**
 * Starts the group and waits for the primary's "workers listening" (LOG_LEVEL info): /readyz is ready as soon as one worker
 * listens, and until the others do the primary hands every connection to that one.
 */
async function startGroup(t: Test, world: ServiceWorld): Promise<Service> {
  const service = await world.start();
  const listening = await eventually(async () => logLines(service).some((l) => l.msg === 'workers listening'), 30_000);
  t.ok(listening, 'the primary logged every worker listening');
  return service;
}

/** The pids of the workers the primary logged as started, by slot (the latest per slot). */
const workerPids = (service: Service) =>
  new Map(
    logLines(service)
      .filter((l) => l.msg === 'worker started')
      .map((l) => [l.worker!, l.worker_pid!]),
  );

t.test(
  'two workers: migrations once in the primary, connections spread over both, /metrics sums the group',
  async (t) => {
    const world = await serviceWorld(t, { ...GROUP, WEB_CONCURRENCY: '2', LOG_LEVEL: 'info', LOG_REQUESTS: 'true' });
    // A database the service has to migrate itself (the test's own comes migrated).
    await world.db.query('DROP SCHEMA public CASCADE; CREATE SCHEMA public');
    const service = await startGroup(t, world);
    const primary = service.child.pid!;
    const workers = workerPids(service);
    t.equal(workers.size, 2, 'the primary started two workers');

    const migrations = logLines(service).filter((l) => l.msg === 'migration applied');
    t.equal(migrations.length, MIGRATIONS.length, `every migration applied once (${MIGRATIONS.length})`);
    t.same([...new Set(migrations.map((l) => l.pid))], [primary], 'by the primary, before it forked');

    const product = await createProductAt(service.base, { stock: 100 });
    const holds = 40;
    const statuses: number[] = [];
    for (let i = 0; i < holds; i += 8)
      statuses.push(
        ...(await Promise.all(
          Array.from({ length: 8 }, () =>
            onNewConnection(service, 'POST', '/api/holds', { product_id: product, qty: 1 }),
          ),
        )),
      );
    t.same(tally(statuses), new Map([[201, holds]]), `${holds} holds granted`);
    const servedBy = tally(
      logLines(service)
        .filter((l) => l.msg === 'request' && l.route === '/api/holds')
        .map((l) => l.pid),
    );
    t.same([...servedBy.keys()].sort(), [...workers.values()].sort(), 'both workers served holds, the primary none');
    t.comment(`holds per worker: ${JSON.stringify(Object.fromEntries(servedBy))}`);

    const text = await scrape(service);
    const label = `product="${product}"`;
    t.equal(series(text, 'flashsale_holds_created_total', label), holds, 'holds created: the sum over the workers');
    t.equal(series(text, 'flashsale_units_held_total', label), holds, 'units held: the sum over the workers');
    t.equal(
      series(text, 'flashsale_product_held_units', label),
      holds,
      'a gauge read from Redis by every worker counts once (max, not sum)',
    );
    t.equal(series(text, 'flashsale_product_stock', label), 100, 'stock likewise');
    t.ok((series(text, 'process_resident_memory_bytes') ?? 0) > 0, "Node's own metrics are there, over the group");

    // What a scrape of the group costs, beside one of a single process (for the README's figure).
    const timings: number[] = [];
    for (let i = 0; i < 20; i++) {
      const started = performance.now();
      await scrape(service);
      timings.push(performance.now() - started);
    }
    t.comment(`GET /metrics of two workers: median ${percentile(timings, 50).toFixed(1)} ms over 20 scrapes`);

    service.child.kill('SIGTERM');
    t.same(await waitForExit(service, 15_000), { code: 0, signal: null }, 'SIGTERM: the group exits 0');
  },
);

t.test('a worker that dies is forked again, and the group keeps serving', async (t) => {
  const world = await serviceWorld(t, { ...GROUP, WEB_CONCURRENCY: '2', LOG_LEVEL: 'info', LOG_REQUESTS: 'true' });
  const service = await startGroup(t, world);
  const [slot, victim] = [...workerPids(service)][0]!;
  process.kill(victim, 'SIGKILL');

  const died = await poll(
    async () => logLines(service).find((l) => l.msg.startsWith('worker exited unexpectedly')),
    (line) => line !== undefined,
    10_000,
  );
  t.match(
    died,
    { level: 50, worker: slot, worker_pid: victim, signal: 'SIGKILL', restart_in_ms: 100 },
    'logged at error level with its backoff',
  );
  const restarted = await poll(
    async () => workerPids(service).get(slot),
    (pid) => pid !== victim,
    30_000,
    50,
  );
  t.not(restarted, victim, `slot ${slot} forked again (pid ${restarted})`);

  // Once the new worker listens, connections reach it again.
  const reached = await eventually(async () => {
    const status = await onNewConnection(service, 'GET', '/healthz').catch(() => 0);
    return (
      status === 200 &&
      logLines(service).some((l) => l.msg === 'request' && l.route === '/healthz' && l.pid === restarted)
    );
  }, 30_000);
  t.ok(reached, 'the new worker serves');
  t.ok(await service.isReady(), '/readyz 200');

  service.child.kill('SIGTERM');
  t.same(await waitForExit(service, 15_000), { code: 0, signal: null }, 'the group still stops cleanly: exit 0');
});

t.test(
  'three workers under a storm with holds expiring and a FLUSHALL: invariant exact, no double order, reconcile clean',
  async (t) => {
    const redisServer = await privateRedis(t);
    const world = await serviceWorld(t, {
      ...GROUP,
      WEB_CONCURRENCY: '3',
      REDIS_URL: redisServer.url,
      WEBHOOK_SECRET: SECRET,
      // Holds expire within the storm; every loop runs often, in each of the three workers.
      HOLD_TTL_SECONDS: '1',
      SWEEP_INTERVAL_MS: '50',
      SWEEP_LEASE_MS: '200',
      CONVERSION_LEASE_MS: '500',
      RECOVERY_INTERVAL_MS: '100',
      REDIS_LOSS_CHECK_MS: '100',
      ORDER_PAYMENT_TTL_SECONDS: '2',
      DATABASE_TIMEOUT_MS: '5000',
    });
    const service = await world.start();
    // The test's own client on the private Redis (the world's is on the shared one).
    const redis = new Redis(redisServer.url);
    t.teardown(() => redis.disconnect());
    const state = { redis, prefix: world.prefix };
    const db: Kysely<Database> = createDatabase({ url: world.databaseUrl, timeoutMs: 10_000, poolSize: 2 });
    t.teardown(() => db.destroy());

    const specs = [{ stock: 5000 }, { stock: 30 }, { stock: 200, perCustomerLimit: 2 }];
    const products: StormProduct[] = [];
    for (const spec of specs)
      products.push({
        id: await createProductAt(service.base, {
          stock: spec.stock,
          ...(spec.perCustomerLimit ? { per_customer_limit: spec.perCustomerLimit } : {}),
        }),
        ...spec,
      });

    // stock - held - sold >= 0 at every sample, not only at the end.
    const violations: string[] = [];
    let samples = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        for (const p of products) {
          const c = await inventory(state, p.id).catch(() => undefined);
          if (!c || c.stock === 0) continue; // flushed, not rebuilt yet
          samples++;
          if (c.stock - c.held - c.sold < 0 || c.stock !== p.stock) violations.push(`${p.id}: ${JSON.stringify(c)}`);
        }
        await sleep(20);
      }
    })();

    const storm = startStorm({
      baseUrl: service.base,
      products,
      webhookSecret: SECRET,
      clients: 16,
      customers: 40,
      random: seededRandom(Number(process.env.WORKERS_SEED ?? 12)),
      deadlineMs: 8000,
    });
    const business = (since: number, holds = 20) =>
      eventually(
        async () =>
          [...storm.grants.values()].filter((g) => g.grantedAt > since).length >= holds &&
          [...storm.exchanges].filter((e) => e.kind === 'order' && e.status === 201 && e.startedAt > since).length >= 3,
        30_000,
        50,
      );
    try {
      t.ok(await business(Date.now(), 100), 'the storm does business on three workers');
      // Holds expire by the hundred meanwhile (1 s each), swept by whichever worker holds each product's lease.
      await sleep(2000);
      await redis.flushall();
      const flushedAt = Date.now();
      t.ok(
        await eventually(() => service.isReady(), 30_000, 20),
        'the loss is seen and every product rebuilt: ready again',
      );
      t.ok(await business(flushedAt), 'holds and orders succeed again after the rebuild');
      await sleep(2000);
    } finally {
      await storm.stop();
    }

    const broken = storm.exchanges.filter((e) => (e.status >= 500 && e.status !== 503) || e.status === 0);
    t.comment(
      `${storm.exchanges.length} requests: ${JSON.stringify(Object.fromEntries(tally(storm.exchanges.map((e) => e.status))))}`,
    );
    t.same(
      broken.map((e) => `${e.kind} ${e.status} ${e.code ?? e.error}`),
      [],
      'no answer a 5xx but 503, none missing',
    );

    // Every hold still held expires, and every worker's sweeper has its share: wait until none is active.
    const settled = await eventually(
      async () => {
        for (const p of products)
          if ((await holdRecords(state, p.id)).some((r) => r.status === 'held' || r.status === 'converting'))
            return false;
        return true;
      },
      30_000,
      100,
    );
    t.ok(settled, 'every hold ended (expired, released or converted)');
    watching = false;
    await watcher;
    t.same(violations, [], `stock - held - sold >= 0 and stock exact in all ${samples} samples`);

    // Each expired hold's units came back once: with every hold ended, nothing is held (a hold released twice would
    // have taken its units off `held` twice, which reconcile below also compares with the records).
    const text = await scrape(service);
    for (const p of products) {
      const records = await holdRecords(state, p.id);
      const expired = records.filter((r) => r.status === 'expired').length;
      t.comment(
        `product ${p.id}: ${records.length} hold records since the flush, ${expired} expired; sweepers' total since start ${series(text, 'flashsale_holds_expired_total', `product="${p.id}"`)}`,
      );
      t.equal(
        await inventory(state, p.id).then((c) => c.held),
        0,
        `product ${p.id}: nothing held once every hold ended`,
      );
    }

    const doubled = await world.db.query(
      'SELECT hold_id, count(*)::int AS n FROM orders GROUP BY hold_id HAVING count(*) > 1',
    );
    t.same(doubled.rows, [], 'no hold has two orders');
    const orders = await world.db.query<{ id: number; hold_id: string }>('SELECT id::int AS id, hold_id FROM orders');
    t.same(
      orders.rows.filter((o) => !storm.grants.has(o.hold_id)),
      [],
      'every order is of a hold an answer granted',
    );
    t.same(
      [...storm.orders.keys()].filter((id) => !orders.rows.some((o) => o.id === id)),
      [],
      `every acknowledged order (${storm.orders.size}) is in Postgres`,
    );
    const rebuilt = series(text, 'flashsale_redis_rebuilds_total', 'result="rebuilt"');
    t.ok((rebuilt ?? 0) >= products.length, `each product rebuilt (rebuilds over the group: ${rebuilt})`);

    const report = await poll(
      () => reconcile({ db, redis, prefix: world.prefix }),
      (r) => r.clean,
      20_000,
      250,
    );
    t.ok(report.clean, `reconcile --check is clean (${report.products_checked} products)`, { drifts: report.drifts });

    service.child.kill('SIGTERM');
    t.same(await waitForExit(service, 15_000), { code: 0, signal: null }, 'the group exits 0');
  },
);
