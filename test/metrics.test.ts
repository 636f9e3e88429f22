import { readFileSync } from 'node:fs';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { signPayload } from '../src/domain/signatures.js';
import { releaseExpiredHolds } from '../src/domain/sweeper.js';
import { createDriftCheck, MAX_HOLD_RECORDS } from '../src/observability/drift-check.js';
import { productKeys } from '../src/redis/keys.js';
import { admin, buildTestApp, createProduct, listen } from './support/app.js';
import { request, sendRaw } from './support/http.js';
import { eventually } from './support/wait.js';

const SECRET = 'whsec_metrics_test';

/** The samples of a text exposition, by `name{label="value",...}` with the labels in name order. */
type Samples = Map<string, number>;

function parseExposition(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const [, name, labels = '', value] = match;
    samples.set(seriesKey(name!, labelsOf(labels)), Number(value));
  }
  return samples;
}

function labelsOf(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [, key, value] of text.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!;
  return labels;
}

function seriesKey(name: string, labels: Record<string, string | number> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((key) => `${key}="${labels[key]}"`);
  return parts.length > 0 ? `${name}{${parts.join(',')}}` : name;
}

/** A series' value, 0 when the exposition does not have it (a counter never incremented is not written). */
const valueOf = (samples: Samples, name: string, labels: Record<string, string | number> = {}) =>
  samples.get(seriesKey(name, labels)) ?? 0;

/** The names every `# TYPE` line declares. */
const declaredNames = (text: string) => new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));

async function scrape(
  base: string,
  headers: Record<string, string> = admin,
): Promise<{ text: string; samples: Samples }> {
  const response = await fetch(`${base}/metrics`, { headers });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}: ${text}`);
  return { text, samples: parseExposition(text) };
}

/** How much each series moved between two scrapes. */
const delta =
  (before: Samples, after: Samples) =>
  (name: string, labels: Record<string, string | number> = {}) =>
    valueOf(after, name, labels) - valueOf(before, name, labels);

const signedDelivery = (body: Record<string, unknown>, secret = SECRET) => {
  const raw = JSON.stringify(body);
  return { raw, headers: { 'content-type': 'application/json', 'x-signature': signPayload(raw, secret) } };
};

t.test('each event moves its counter by exactly what happened, over real HTTP', async (t) => {
  const { app } = await buildTestApp(t, { WEBHOOK_SECRET: SECRET });
  const base = await listen(app);
  const scarce = (await createProduct(app, { stock: 3, price_cents: 500 })).id;
  const limited = (await createProduct(app, { stock: 10, per_customer_limit: 1 })).id;
  const before = (await scrape(base)).samples;

  const hold = (body: Record<string, unknown>) => request<Record<string, unknown>>(base, 'POST', '/api/holds', body);
  const first = await hold({ product_id: scarce, qty: 1 });
  const second = await hold({ product_id: scarce, qty: 2 });
  t.equal(first.status, 201);
  t.equal(second.status, 201);
  // Sold out now: two refusals, one sold-out moment.
  t.equal((await hold({ product_id: scarce, qty: 1 })).status, 409);
  t.equal((await hold({ product_id: scarce, qty: 1 })).status, 409);
  t.equal((await request(base, 'DELETE', `/api/holds/${String(first.body.hold_id)}`)).status, 200);
  t.equal((await hold({ product_id: limited, qty: 1, customer_id: 'ann' })).status, 201);
  const overLimit = await hold({ product_id: limited, qty: 1, customer_id: 'ann' });
  t.equal(overLimit.body.code, 'CUSTOMER_LIMIT_EXCEEDED');
  t.equal((await hold({ product_id: 987_654, qty: 1 })).status, 404);

  const order = await request<{ order_id: number; total_cents: number }>(base, 'POST', '/api/orders', {
    hold_id: second.body.hold_id,
  });
  t.equal(order.status, 201);
  const paid = signedDelivery({
    idempotency_key: 'evt-paid',
    order_id: order.body.order_id,
    event_type: 'success',
    amount_cents: order.body.total_cents,
  });
  t.equal((await sendRaw(base, 'POST', '/api/webhooks/payment', paid.raw, paid.headers)).status, 200);
  t.equal((await sendRaw(base, 'POST', '/api/webhooks/payment', paid.raw, paid.headers)).status, 200, 'a copy');
  const forged = signedDelivery({ idempotency_key: 'evt-x', order_id: 1, event_type: 'success' }, 'whsec_wrong');
  t.equal((await sendRaw(base, 'POST', '/api/webhooks/payment', forged.raw, forged.headers)).status, 401);
  const early = signedDelivery({ idempotency_key: 'evt-early', order_id: 424_242, event_type: 'success' });
  t.equal((await sendRaw(base, 'POST', '/api/webhooks/payment', early.raw, early.headers)).status, 404);
  t.equal((await request(base, 'GET', '/no/such/route/123')).status, 404);
  t.equal((await request(base, 'POST', '/no/such/route/123', { a: 1 })).status, 404);
  t.equal((await request(base, 'GET', '/no/such/route/456')).status, 404);
  t.equal((await fetch(`${base}/healthz`, { method: 'HEAD' })).status, 200);
  // A file of the docs UI: a route declared with two methods (HEAD and GET) at once.
  const docsFile = `${base}/docs/static/swagger-initializer.js`;
  t.equal((await fetch(docsFile)).status, 200);
  t.equal((await fetch(docsFile, { method: 'HEAD' })).status, 200);
  t.equal((await fetch(docsFile)).status, 200);

  const { samples: after, text } = await scrape(base);
  const moved = delta(before, after);
  const p = (id: number) => ({ product: id });
  t.equal(moved('flashsale_holds_created_total', p(scarce)), 2, 'holds created on the scarce product');
  t.equal(moved('flashsale_holds_created_total', p(limited)), 1, 'holds created on the limited product');
  t.equal(moved('flashsale_units_held_total', p(scarce)), 3, 'units held');
  t.equal(moved('flashsale_holds_refused_total', { ...p(scarce), reason: 'INSUFFICIENT_STOCK' }), 2);
  t.equal(moved('flashsale_sold_out_total', p(scarce)), 1, 'one sold-out moment for two refusals');
  t.equal(moved('flashsale_holds_refused_total', { ...p(limited), reason: 'CUSTOMER_LIMIT_EXCEEDED' }), 1);
  t.equal(
    moved('flashsale_holds_refused_total', { product: 'other', reason: 'PRODUCT_NOT_FOUND' }),
    1,
    'an unknown product gets no label of its own',
  );
  t.notMatch(text, /product="987654"/);
  t.equal(moved('flashsale_holds_released_total', p(scarce)), 1, 'one release');
  t.equal(moved('flashsale_orders_total', { status: 'pending_payment' }), 1, 'one order');
  t.equal(moved('flashsale_units_sold_total', p(scarce)), 2, 'its units');
  t.equal(moved('flashsale_order_status_changes_total', { status: 'paid' }), 1, 'paid once');
  t.equal(moved('flashsale_webhooks_total', { result: 'paid' }), 1);
  t.equal(moved('flashsale_webhooks_total', { result: 'duplicate' }), 1);
  t.equal(moved('flashsale_webhooks_total', { result: 'bad_signature' }), 1);
  t.equal(moved('flashsale_webhooks_total', { result: 'unknown_order' }), 1);

  const http = (route: string, method: string, status: number) => ({ route, method, status });
  t.equal(moved('flashsale_http_requests_total', http('/api/holds', 'POST', 201)), 3);
  t.equal(moved('flashsale_http_requests_total', http('/api/holds', 'POST', 409)), 3);
  t.equal(moved('flashsale_http_requests_total', http('/api/holds/:id', 'DELETE', 200)), 1, 'the route template');
  t.equal(moved('flashsale_http_request_duration_seconds_count', http('/api/holds', 'POST', 201)), 3);
  t.equal(
    valueOf(after, 'flashsale_http_request_duration_seconds_bucket', {
      ...http('/api/holds', 'POST', 201),
      le: '+Inf',
    }),
    valueOf(after, 'flashsale_http_request_duration_seconds_count', http('/api/holds', 'POST', 201)),
    'the last bucket holds every request',
  );
  t.equal(moved('flashsale_http_requests_total', http('unmatched', 'GET', 404)), 2, 'unmatched URLs: one value');
  t.equal(moved('flashsale_http_requests_total', http('unmatched', 'POST', 404)), 1, 'by method');
  t.equal(moved('flashsale_http_request_duration_seconds_count', http('unmatched', 'GET', 404)), 2, 'timed');
  t.equal(
    moved('flashsale_http_requests_total', http('/docs/static/swagger-initializer.js', 'GET', 200)),
    2,
    'a two-method route',
  );
  t.equal(
    moved('flashsale_http_requests_total', http('/docs/static/swagger-initializer.js', 'HEAD', 200)),
    1,
    'each method apart',
  );
  t.notMatch(text, /route="\/no\/such/, 'never the raw URL');
  t.equal(moved('flashsale_http_requests_total', http('/healthz', 'HEAD', 200)), 1, 'a HEAD route counted once');
  t.notMatch(text, /route="\/api\/holds\/\d/, 'never a hold id');
  t.ok(moved('flashsale_redis_script_duration_seconds_count', { script: 'reserveStock' }) >= 4, 'scripts timed');

  // The live figures, read at the scrape.
  t.equal(valueOf(after, 'flashsale_product_stock', p(scarce)), 3);
  t.equal(valueOf(after, 'flashsale_product_held_units', p(scarce)), 0);
  t.equal(valueOf(after, 'flashsale_product_sold_units', p(scarce)), 2);
  t.equal(valueOf(after, 'flashsale_product_available', p(scarce)), 1);
  t.equal(valueOf(after, 'flashsale_active_holds', p(limited)), 1);
  t.equal(valueOf(after, 'flashsale_sweeper_lag_seconds'), 0, 'nothing expired');
  t.ok(valueOf(after, 'process_cpu_user_seconds_total') > 0, "Node's default metrics");
});

t.test('expired holds: the sweeper lag grows until the sweeper releases them, counted once each', async (t) => {
  const { app } = await buildTestApp(t, { HOLD_TTL_SECONDS: 1 });
  const base = await listen(app);
  const product = (await createProduct(app, { stock: 5 })).id;
  for (const qty of [1, 2])
    t.equal((await request(base, 'POST', '/api/holds', { product_id: product, qty })).status, 201);
  const before = (await scrape(base)).samples;
  t.equal(valueOf(before, 'flashsale_active_holds', { product }), 2);
  await new Promise((resolve) => setTimeout(resolve, 1600));
  const late = (await scrape(base)).samples;
  t.ok(
    valueOf(late, 'flashsale_sweeper_lag_seconds') >= 0.4,
    `lag ${valueOf(late, 'flashsale_sweeper_lag_seconds')} s`,
  );

  const sweep = await releaseExpiredHolds(app.redisCommands, app.settings, app.log, undefined, app.metricEvents);
  t.equal(sweep.expired, 2);
  const after = (await scrape(base)).samples;
  t.equal(delta(before, after)('flashsale_holds_expired_total', { product }), 2, 'two expiries');
  t.equal(valueOf(after, 'flashsale_sweeper_lag_seconds'), 0, 'no lag once swept');
  t.equal(valueOf(after, 'flashsale_product_held_units', { product }), 0);
});

t.test('the running sweeper counts what it releases', async (t) => {
  const { app } = await buildTestApp(t, { HOLD_TTL_SECONDS: 1, SWEEP_INTERVAL_MS: 50 });
  const base = await listen(app);
  const product = (await createProduct(app, { stock: 5 })).id;
  t.equal((await request(base, 'POST', '/api/holds', { product_id: product, qty: 3 })).status, 201);
  const expired = async () => valueOf((await scrape(base)).samples, 'flashsale_holds_expired_total', { product });
  t.ok(await eventually(async () => (await expired()) === 1, 10_000), 'one expiry');
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.equal(await expired(), 1, 'counted once');
});

t.test('the product label is bounded: a watch list, then the first products seen, then "other"', async (t) => {
  const limit = 3;
  const ids: number[] = [];
  const { app } = await buildTestApp(t, { METRICS_PRODUCT_LIMIT: limit });
  for (let i = 0; i < 7; i++) ids.push((await createProduct(app, { stock: 100 })).id);
  const watched = ids[6]!;
  // The watch list needs its own app (it is read at start); the same database and prefix.
  const { app: watching } = await buildTestApp(t, {
    METRICS_PRODUCT_LIMIT: limit,
    METRICS_PRODUCTS: String(watched),
    DATABASE_URL: app.config.DATABASE_URL,
    REDIS_KEY_PREFIX: app.config.REDIS_KEY_PREFIX,
  });
  const base = await listen(watching);
  for (const id of ids) t.equal((await request(base, 'POST', '/api/holds', { product_id: id, qty: 1 })).status, 201);
  const { text, samples } = await scrape(base);
  const labels = new Set([...text.matchAll(/^flashsale_holds_created_total\{product="([^"]+)"\}/gm)].map((m) => m[1]));
  t.same([...labels].sort(), [...ids.slice(0, limit).map(String), String(watched), 'other'].sort());
  t.equal(valueOf(samples, 'flashsale_holds_created_total', { product: 'other' }), ids.length - limit - 1);
  const gauged = new Set([...text.matchAll(/^flashsale_product_stock\{product="([^"]+)"\}/gm)].map((m) => m[1]));
  t.equal(gauged.size, limit + 1, 'live figures for the labelled products only');
  t.notOk(gauged.has('other'), 'never read for all the rest');
});

t.test('GET /metrics: the admin token with METRICS=admin, anyone with open, no route with off', async (t) => {
  const guarded = await listen((await buildTestApp(t, { METRICS: 'admin' })).app);
  t.equal((await request(guarded, 'GET', '/metrics')).status, 401, 'no token');
  t.equal(
    (await request(guarded, 'GET', '/metrics', undefined, { authorization: 'Bearer wrong-token-123456' })).status,
    401,
  );
  const answer = await fetch(`${guarded}/metrics`, { headers: admin });
  t.equal(answer.status, 200);
  t.match(answer.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);

  const open = await listen((await buildTestApp(t, { METRICS: 'open' })).app);
  t.equal((await fetch(`${open}/metrics`)).status, 200, 'open: no token needed');

  const { app: off } = await buildTestApp(t, { METRICS: 'off' });
  const offBase = await listen(off);
  t.equal((await request(offBase, 'GET', '/metrics', undefined, admin)).status, 404, 'off: no route');
  t.equal(off.metrics, null, 'off: no registry');
  const product = (await createProduct(off, { stock: 1 })).id;
  t.equal((await request(offBase, 'POST', '/api/holds', { product_id: product, qty: 1 })).status, 201, 'serves');
});

t.test('two apps in one process keep their own series', async (t) => {
  const a = await buildTestApp(t);
  const b = await buildTestApp(t);
  const product = (await createProduct(a.app, { stock: 5 })).id;
  await a.app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product, qty: 1 } });
  const fromA = parseExposition(await a.app.metrics!.exposition());
  const fromB = parseExposition(await b.app.metrics!.exposition());
  t.equal(valueOf(fromA, 'flashsale_holds_created_total', { product }), 1);
  t.equal(valueOf(fromB, 'flashsale_holds_created_total', { product }), 0);
});

t.test('invariant drift: 0 when healthy, counted after two checks in a row, 0 again once repaired', async (t) => {
  const { app, redis, prefix } = await buildTestApp(t, { METRICS_DRIFT_CHECK_MS: 100 });
  const base = await listen(app);
  const sound = (await createProduct(app, { stock: 10 })).id;
  const damaged = (await createProduct(app, { stock: 10 })).id;
  await request(base, 'POST', '/api/holds', { product_id: sound, qty: 2 });
  const drift = async () => valueOf((await scrape(base)).samples, 'flashsale_invariant_drift');
  // Two passes at least, both clean.
  await new Promise((resolve) => setTimeout(resolve, 350));
  t.equal(await drift(), 0, 'healthy');

  const inventory = productKeys(prefix, damaged).inventory;
  await redis.hset(inventory, 'stock', '7');
  t.ok(await eventually(async () => (await drift()) === 1, 10_000), 'one product drifting');
  await redis.hset(inventory, 'stock', '10');
  t.ok(await eventually(async () => (await drift()) === 0, 10_000), 'repaired: 0 again');

  // One check alone never counts a product: the first sight makes it a suspect, the second confirms it.
  const reports: [number, number][] = [];
  const check = createDriftCheck({
    db: app.db,
    redis: app.redis,
    prefix,
    sample: 20,
    holdRecordCounts: app.redisCommands.holdRecordCounts,
    report: (n, unchecked) => reports.push([n, unchecked]),
  });
  await check();
  await redis.hset(inventory, 'stock', '8');
  await check();
  await check();
  await redis.hset(inventory, 'stock', '10');
  await check();
  t.same(
    reports.splice(0),
    [
      [0, 0],
      [0, 0],
      [1, 0],
      [0, 0],
    ],
    'suspect, confirmed, cleared',
  );

  // A product with more hold records than a pass may read is left out, and said to be.
  await redis.eval(
    `for i = 1, tonumber(ARGV[1]) do
       redis.call('HSET', KEYS[1], ARGV[2] .. i, '{"status":"released","qty":1,"expires_at":1,"price_cents":1,"ended_at":1}')
     end`,
    1,
    productKeys(prefix, damaged).holds,
    MAX_HOLD_RECORDS + 1,
    `${damaged}-old`,
  );
  await redis.hset(inventory, 'stock', '8');
  await check();
  await check();
  t.same(
    reports,
    [
      [0, 1],
      [0, 1],
    ],
    'not read, not counted, reported as left out',
  );
  const leftOut = async () => valueOf((await scrape(base)).samples, 'flashsale_invariant_drift_unchecked_products');
  t.ok(await eventually(async () => (await leftOut()) === 1, 10_000), "the service's own check says so too");
  t.equal(await drift(), 0, 'and does not count it as drifting');
});

t.test('the Grafana dashboard and the Prometheus config name only metrics the service exposes', async (t) => {
  const { app } = await buildTestApp(t);
  const exposed = declaredNames(await app.metrics!.exposition());
  const dashboard = JSON.parse(readFileSync(new URL('../docs/grafana/flashsale.json', import.meta.url), 'utf8'));
  const exprs: string[] = [];
  const walk = (node: unknown) => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (node && typeof node === 'object') {
      for (const [key, value] of Object.entries(node)) {
        if (key === 'expr' && typeof value === 'string') exprs.push(value);
        else walk(value);
      }
    }
  };
  walk(dashboard);
  t.ok(exprs.length >= 8, `${exprs.length} queries`);
  const queried = new Set(
    exprs.flatMap((expr) => [...expr.matchAll(/\b((?:flashsale|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]!)),
  );
  for (const name of queried) {
    const base = name.replace(/_(bucket|count|sum)$/, '');
    t.ok(exposed.has(name) || exposed.has(base), `${name} is exposed`);
  }
  for (const needed of [
    'flashsale_product_available',
    'flashsale_holds_created_total',
    'flashsale_holds_refused_total',
    'flashsale_http_request_duration_seconds',
    'flashsale_sweeper_lag_seconds',
    'flashsale_webhooks_total',
    'flashsale_invariant_drift',
    'flashsale_redis_data_loss_detected_total',
  ]) {
    t.ok(
      [...queried].some((name) => name.startsWith(needed)),
      `the dashboard shows ${needed}`,
    );
  }

  const prometheus = parseYaml(readFileSync(new URL('../docs/prometheus/prometheus.yml', import.meta.url), 'utf8'));
  const job = prometheus.scrape_configs.find((c: { job_name: string }) => c.job_name === 'flashsale');
  t.ok(job, 'a flashsale job');
  t.equal(job.metrics_path, '/metrics');
  t.ok(job.authorization?.credentials_file, 'the admin token, from a file');
  const compose = parseYaml(readFileSync(new URL('../docker-compose.yml', import.meta.url), 'utf8'));
  for (const service of ['prometheus', 'grafana']) t.same(compose.services[service].profiles, ['monitoring']);
  t.notOk(compose.services.app.profiles, 'the service itself runs without the profile');
});
