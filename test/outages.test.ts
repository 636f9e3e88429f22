/**
 * The standard: "Outages of Redis or Postgres get a fast 503, never a hang, and lose nothing that was
 * acknowledged". Proven with real processes: a private redis-server that is killed and restarted, and a TCP proxy
 * in front of Postgres that refuses, swallows or stalls connections. Requests go over real HTTP with a client-side
 * deadline, so a hang fails the test instead of stalling the run.
 */
import type { FastifyInstance } from 'fastify';
import t, { type Test } from 'tap';
import { admin, buildTestApp, createProduct, createTestDatabase, listen } from './support/app.js';
import { client, type Client, type HttpAnswer } from './support/http.js';
import { privateRedis } from './support/private-redis.js';
import { proxyInFrontOf } from './support/tcp-proxy.js';
import { poll } from './support/wait.js';

// What "fast" means here: the stores' timeouts are 500 ms; the rest is room for a busy CI machine.
const REDIS_OUTAGE_ANSWER_MS = 1500;
const POSTGRES_OUTAGE_ANSWER_MS = 2000;
// Longer than any answer may take: a request still running then is a hang.
const CLIENT_DEADLINE_MS = 5000;

type Answer = HttpAnswer<unknown>;

/** Serves the app on a real port and returns a timed HTTP client for it. */
async function serve(app: FastifyInstance): Promise<Client<unknown>> {
  return client<unknown>(await listen(app), CLIENT_DEADLINE_MS);
}

/** Polls /readyz until the app says both stores answer again. */
function waitUntilReady(call: Client<unknown>, timeoutMs = 10_000): Promise<Answer> {
  return poll(
    () => call('GET', '/readyz'),
    (answer) => answer.status === 200,
    timeoutMs,
    100,
  );
}

function productCount(answer: Answer): number {
  if (answer.status !== 200 || !Array.isArray(answer.body)) throw new Error(`product list answered ${answer.status}`);
  return answer.body.length;
}

function holdIdOf(answer: Answer): string {
  const body = answer.body;
  if (typeof body !== 'object' || body === null || !('hold_id' in body) || typeof body.hold_id !== 'string') {
    throw new Error(`no hold in answer ${answer.status}: ${JSON.stringify(body)}`);
  }
  return body.hold_id;
}

const unavailable = { code: 'SERVICE_UNAVAILABLE' };

t.test('when Redis dies, requests that need it get a fast 503, and the service recovers by itself', async (t) => {
  const redisServer = await privateRedis(t);
  const { app } = await buildTestApp(t, { REDIS_URL: redisServer.url, REDIS_COMMAND_TIMEOUT_MS: 500 });
  const call = await serve(app);

  const product = await createProduct(app, { stock: 5 });
  const before = await call('POST', '/api/holds', { product_id: product.id, qty: 2 });
  t.equal(before.status, 201, 'a hold is placed while Redis is up');
  const holdId = holdIdOf(before);

  await redisServer.kill();

  const hold = await call('POST', '/api/holds', { product_id: product.id, qty: 1 });
  t.equal(hold.status, 503, 'placing a hold answers 503');
  t.match(hold.body, unavailable);
  t.ok(hold.ms < REDIS_OUTAGE_ANSWER_MS, `placing a hold answered in ${hold.ms.toFixed(0)} ms, not a hang`);

  for (const path of [`/api/products/${product.id}`, `/api/holds/${holdId}`]) {
    const answer = await call('GET', path);
    t.equal(answer.status, 503, `GET ${path} answers 503`);
    t.match(answer.body, unavailable);
    t.ok(answer.ms < REDIS_OUTAGE_ANSWER_MS, `GET ${path} answered in ${answer.ms.toFixed(0)} ms`);
  }

  // A product is written to Postgres and Redis together: Redis refusing must roll the Postgres row back.
  const creation = await call(
    'POST',
    '/api/products',
    { name: 'Lost in the outage', price_cents: 500, stock: 3 },
    admin,
  );
  t.equal(creation.status, 503, 'creating a product answers 503');
  t.match(creation.body, unavailable);

  const ready = await call('GET', '/readyz');
  t.equal(ready.status, 503, 'not ready');
  t.match(ready.body, { status: 'unavailable', redis: 'unavailable', postgres: 'ok' });
  t.ok(ready.ms < REDIS_OUTAGE_ANSWER_MS, `/readyz answered in ${ready.ms.toFixed(0)} ms`);
  const health = await call('GET', '/healthz');
  t.equal(health.status, 200, 'still alive: the process itself is fine, only a store is away');

  // Restarted without persistence: Redis comes back empty and the app reconnects in the background.
  await redisServer.start();
  const recovered = await waitUntilReady(call);
  t.equal(recovered.status, 200, 'ready again once Redis is back');

  const after = await call('POST', '/api/holds', { product_id: product.id, qty: 1 });
  t.equal(after.status, 201, 'a hold succeeds again: the product is loaded from Postgres on demand');
  const reloaded = await call('GET', `/api/products/${product.id}`);
  t.equal(reloaded.status, 200);
  t.match(reloaded.body, { id: product.id, stock: 5 }, "the product's stock comes from Postgres");
  t.equal(productCount(await call('GET', '/api/products')), 1, 'the refused product was not created');
});

t.test('when Redis freezes, requests that need it get a 503 after the command timeout, not a hang', async (t) => {
  const redisServer = await privateRedis(t);
  const { app } = await buildTestApp(t, { REDIS_URL: redisServer.url, REDIS_COMMAND_TIMEOUT_MS: 500 });
  const call = await serve(app);
  const product = await createProduct(app, { stock: 5 });

  redisServer.freeze();

  // A frozen server keeps the connection open, so only the command timeout stands between a client and a hang.
  // The script was sent and runs when Redis resumes: its deadline must make it do nothing then.
  const hold = await call('POST', '/api/holds', { product_id: product.id, qty: 1 });
  t.equal(hold.status, 503, 'placing a hold answers 503');
  t.match(hold.body, unavailable);
  t.ok(hold.ms < REDIS_OUTAGE_ANSWER_MS, `placing a hold answered in ${hold.ms.toFixed(0)} ms, not a hang`);
  const ready = await call('GET', '/readyz');
  t.equal(ready.status, 503, 'not ready');
  t.match(ready.body, { redis: 'unavailable', postgres: 'ok' });
  t.ok(ready.ms < REDIS_OUTAGE_ANSWER_MS, `/readyz answered in ${ready.ms.toFixed(0)} ms`);

  const more = await Promise.all([1, 2].map(() => call('POST', '/api/holds', { product_id: product.id, qty: 1 })));
  t.ok(
    more.every((a) => a.status === 503),
    'every hold during the freeze answers 503',
  );

  redisServer.thaw();
  t.equal((await waitUntilReady(call)).status, 200, 'ready again once Redis resumes');
  t.match(
    await call('GET', `/api/products/${product.id}`),
    { status: 200, body: { held: 0, available_stock: 5 } },
    'the holds that answered 503 reserved nothing when Redis resumed',
  );
  const after = await call('POST', '/api/holds', { product_id: product.id, qty: 1 });
  t.equal(after.status, 201, 'holds succeed again on the same connection');
});

/** The app on its own database, reached through a proxy the test can cut; Postgres timeouts of 500 ms. */
async function appBehindPostgresProxy(t: Test) {
  const { proxy, url } = await proxyInFrontOf(t, await createTestDatabase(t));
  const { app } = await buildTestApp(t, { DATABASE_URL: url, DATABASE_TIMEOUT_MS: 500 });
  return { app, proxy };
}

const postgresOutages = {
  refuse: 'refuses connections',
  blackhole: 'swallows new connections without answering',
  stall: 'stops answering on open connections',
} as const;

for (const mode of ['refuse', 'blackhole', 'stall'] as const) {
  const outage = postgresOutages[mode];

  t.test(`when Postgres ${outage}, catalogue requests get a fast 503 while holds go on`, async (t) => {
    const { app, proxy } = await appBehindPostgresProxy(t);
    const call = await serve(app);

    const product = await createProduct(app, { stock: 5 });

    await proxy.cut(mode);

    const list = await call('GET', '/api/products');
    t.equal(list.status, 503, 'listing products answers 503');
    t.match(list.body, unavailable);
    t.ok(list.ms < POSTGRES_OUTAGE_ANSWER_MS, `listing products answered in ${list.ms.toFixed(0)} ms, not a hang`);

    const creation = await call(
      'POST',
      '/api/products',
      { name: 'Lost in the outage', price_cents: 500, stock: 3 },
      admin,
    );
    t.equal(creation.status, 503, 'creating a product answers 503');
    t.match(creation.body, unavailable);
    t.ok(creation.ms < POSTGRES_OUTAGE_ANSWER_MS, `creating a product answered in ${creation.ms.toFixed(0)} ms`);

    // Holds live in Redis: a Postgres outage must not stop the sale.
    const hold = await call('POST', '/api/holds', { product_id: product.id, qty: 2 });
    t.equal(hold.status, 201, 'a hold on a loaded product still succeeds');
    const holdId = holdIdOf(hold);
    const live = await call('GET', `/api/products/${product.id}`);
    t.equal(live.status, 200, "a loaded product's live figures are still served from Redis");

    const ready = await call('GET', '/readyz');
    t.equal(ready.status, 503, 'not ready');
    t.match(ready.body, { status: 'unavailable', redis: 'ok', postgres: 'unavailable' });
    t.ok(ready.ms < POSTGRES_OUTAGE_ANSWER_MS, `/readyz answered in ${ready.ms.toFixed(0)} ms`);
    t.equal((await call('GET', '/healthz')).status, 200, 'still alive');

    await proxy.restore();

    t.equal((await waitUntilReady(call)).status, 200, 'ready again once Postgres is reachable');
    const listAfter = await call('GET', '/api/products');
    t.equal(productCount(listAfter), 1, 'the refused product was not created');
    const held = await call('GET', `/api/holds/${holdId}`);
    t.equal(held.status, 200, 'the hold acknowledged during the outage is kept');
    t.match(held.body, { hold_id: holdId, status: 'held', qty: 2 });
    t.match(await call('GET', `/api/products/${product.id}`), { status: 200, body: { held: 2, available_stock: 3 } });
  });
}

t.test('a Postgres connection stuck behind a timed-out query is dropped, not reused', async (t) => {
  const { app, proxy } = await appBehindPostgresProxy(t);
  const call = await serve(app);
  await createProduct(app, { stock: 5 });
  // Warm several pooled connections, then strand them all: new connections still reach Postgres.
  await Promise.all(Array.from({ length: 5 }, () => call('GET', '/api/products')));
  await proxy.cut('strand');

  const answers: number[] = [];
  for (let i = 0; i < 20 && answers.at(-1) !== 200; i++) answers.push((await call('GET', '/api/products')).status);
  t.ok(
    answers.every((s) => s === 503 || s === 200),
    `only 503 then 200: ${answers.join(' ')}`,
  );
  t.equal(answers.at(-1), 200, 'the service recovers without the stuck connections coming back');
  // After the first success, the pool holds only fresh connections.
  const later = await Promise.all(Array.from({ length: 5 }, () => call('GET', '/api/products')));
  t.ok(
    later.every((a) => a.status === 200),
    'later requests all succeed',
  );
});
