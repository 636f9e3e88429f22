/**
 * The standard: "A connection that never answers the wrong command". Replies lost, late or swallowed on an open
 * Redis connection, a script cache flushed over and over, a Redis that stops answering: every request gets its
 * own answer or a 503, never another command's reply, never a 500, and a stalled Redis is a 503 within the
 * command timeout. Proven with real HTTP load against a private redis-server or a TCP proxy in front of Redis.
 * The load comes from one address, so the rate limits are off (RATE_LIMIT=off): the hold scripts are the subject.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import t, { type Test } from 'tap';
import { buildTestApp, createProduct, listen, TEST_REDIS_URL } from './support/app.js';
import { client, percentile, tally, type Client } from './support/http.js';
import { privateRedis } from './support/private-redis.js';
import { inventory } from './support/redis-state.js';
import { startTcpProxy } from './support/tcp-proxy.js';
import { eventually } from './support/wait.js';

type HoldBody = { hold_id?: string; code?: string };

/** A plain client of the test's own, closed when the test ends. */
function controlClient(t: Test, url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 0 });
  t.teardown(() => redis.disconnect());
  return redis;
}

/** Runs `work` in `clients` concurrent loops until `running()` says stop; each loop ends when its call does. */
async function concurrently(clients: number, running: () => boolean, work: (i: number) => Promise<void>) {
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      while (running()) await work(i);
    }),
  );
}

const summary = (statuses: number[]) => JSON.stringify(Object.fromEntries(tally(statuses)));

t.test('a script cache flushed back to back under load fails no request', async (t) => {
  const redisServer = await privateRedis(t);
  const { app } = await buildTestApp(t, {
    RATE_LIMIT: 'off',
    REDIS_URL: redisServer.url,
    REDIS_COMMAND_TIMEOUT_MS: 2000,
  });
  const call: Client<HoldBody> = client(await listen(app), 10_000);
  const product = await createProduct(app, { stock: 1_000_000 });

  const flusher = controlClient(t, redisServer.url);
  let flushing = true;
  let flushes = 0;
  const flushLoop = (async () => {
    while (flushing) {
      await flusher.script('FLUSH');
      flushes++;
    }
  })();

  const statuses: number[] = [];
  const stopAt = Date.now() + 3000;
  await concurrently(
    20,
    () => Date.now() < stopAt,
    async (i) => {
      const hold = await call('POST', '/api/holds', { product_id: product.id, qty: 1, customer_id: `c${i}` });
      statuses.push(hold.status);
      if (hold.status !== 201 || !hold.body.hold_id) return;
      // Reading and releasing run other scripts (getHold, releaseHold) against the same flushes.
      statuses.push((await call('GET', `/api/holds/${hold.body.hold_id}`)).status);
      statuses.push((await call('DELETE', `/api/holds/${hold.body.hold_id}`)).status);
    },
  );
  flushing = false;
  await flushLoop;

  t.comment(`${statuses.length} requests during ${flushes} SCRIPT FLUSHes: ${summary(statuses)}`);
  t.ok(flushes > 20, `the cache was flushed ${flushes} times`);
  t.ok(statuses.length > 100, `${statuses.length} requests were answered`);
  t.same(
    statuses.filter((s) => s !== 200 && s !== 201 && s !== 409),
    [],
    'every request was answered 200, 201 or 409: no 500, no 503',
  );
});

t.test(
  'replies dropped, late or swallowed on an open connection never answer another command: no duplicate hold, no wrong 422',
  async (t) => {
    const target = new URL(TEST_REDIS_URL);
    const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 6379) }, { resp: true });
    t.teardown(() => proxy.close());
    const timeoutMs = 200;
    const service = await buildTestApp(t, {
      RATE_LIMIT: 'off',
      REDIS_URL: `redis://127.0.0.1:${proxy.port}`,
      REDIS_COMMAND_TIMEOUT_MS: timeoutMs,
      LOG_LEVEL: 'error',
    });
    const call: Client<HoldBody> = client(await listen(service.app), 10_000);
    const product = await createProduct(service.app, { stock: 1_000_000 });

    const statuses: number[] = [];
    /** Idempotency-Key -> qty and every hold id a 201 gave for it. */
    const granted = new Map<string, { qty: number; holdIds: Set<string> }>();
    let issuing = true;
    const buyers = concurrently(
      12,
      () => issuing,
      async (i) => {
        // One purchase: retried with the same key until it has an answer that is not "try again".
        const key = `buyer-${i}-${randomBytes(6).toString('hex')}`;
        const qty = 1 + (i % 3);
        // A 201 is asked for once more with the key: it must replay the same hold, however the connection fared.
        let answers = 0;
        for (let attempt = 0; attempt < 300; attempt++) {
          const answer = await call(
            'POST',
            '/api/holds',
            { product_id: product.id, qty, customer_id: `c${i}` },
            { 'idempotency-key': key },
          );
          statuses.push(answer.status);
          if (answer.status === 503) {
            await sleep(10);
            continue;
          }
          if (answer.status === 201 && answer.body.hold_id) {
            const entry = granted.get(key) ?? { qty, holdIds: new Set<string>() };
            entry.holdIds.add(answer.body.hold_id);
            granted.set(key, entry);
          }
          if (++answers === 2 || answer.status !== 201) return;
        }
        throw new Error(`purchase ${key} got no final answer`);
      },
    );

    await sleep(300);
    proxy.faultReplies({ kind: 'drop', count: 3 });
    t.ok(await eventually(async () => proxy.droppedReplies >= 3, 5000), 'three replies were dropped');
    await sleep(500);
    proxy.faultReplies({ kind: 'delay', ms: timeoutMs * 2 });
    await sleep(800);
    proxy.faultReplies({ kind: 'forward' });
    await sleep(500);
    proxy.faultReplies({ kind: 'swallow' });
    await sleep(400);
    proxy.reset();
    proxy.faultReplies({ kind: 'forward' });
    await sleep(500);
    issuing = false;
    await buyers;

    const counts = tally(statuses);
    t.comment(`${statuses.length} hold requests, ${granted.size} purchases granted: ${summary(statuses)}`);
    t.ok((counts.get(503) ?? 0) > 0, 'the faults were felt (some 503s)');
    t.equal(counts.get(500) ?? 0, 0, 'no 500');
    t.equal(counts.get(422) ?? 0, 0, 'no Idempotency-Key was refused as reused: each key only ever had one body');
    const split = [...granted].filter(([, g]) => g.holdIds.size !== 1);
    t.same(split, [], 'every key answered one and the same hold');
    const grantedUnits = [...granted.values()].reduce((sum, g) => sum + g.qty, 0);
    t.equal(
      (await inventory(service, product.id)).held,
      grantedUnits,
      'units held = units of the distinct granted holds',
    );
  },
);

t.test('a stalled Redis is a 503 within the command timeout, auto-pipelined commands included', async (t) => {
  const redisServer = await privateRedis(t);
  const timeoutMs = 300;
  const { app } = await buildTestApp(t, {
    RATE_LIMIT: 'off',
    REDIS_URL: redisServer.url,
    REDIS_COMMAND_TIMEOUT_MS: timeoutMs,
  });
  // The service's own time to answer, from the request's arrival: the HTTP client shares this process's event
  // loop (and a busy CI machine's cores), so its figures add the time it waited to read the answer.
  const answered: number[] = [];
  let paused = false;
  app.addHook('onResponse', async (_request, reply) => {
    if (paused && reply.statusCode === 503) answered.push(reply.elapsedTime);
  });
  const call: Client<HoldBody> = client(await listen(app), 10_000);
  const product = await createProduct(app, { stock: 1_000_000 });
  const pauser = controlClient(t, redisServer.url);

  const unavailable: number[] = [];
  const statuses: number[] = [];
  let stopAt = Infinity;
  const load = concurrently(
    20,
    () => Date.now() < stopAt,
    async (i) => {
      // Holds with a key (SET, auto-pipelined, then the batched script) and product reads (HMGET, auto-pipelined).
      const answer =
        i % 2 === 0
          ? await call(
              'POST',
              '/api/holds',
              { product_id: product.id, qty: 1, customer_id: `c${i}` },
              { 'idempotency-key': randomBytes(8).toString('hex') },
            )
          : await call('GET', `/api/products/${product.id}`);
      if (!paused) return;
      statuses.push(answer.status);
      if (answer.status === 503) unavailable.push(answer.ms);
    },
  );
  await sleep(300);
  await pauser.client('PAUSE', 2500, 'ALL');
  paused = true;
  await sleep(2000);
  stopAt = 0;
  await load;

  const p99 = percentile(answered, 99);
  const figures = (ms: number[]) =>
    `p50 ${percentile(ms, 50).toFixed(0)} ms, p99 ${percentile(ms, 99).toFixed(0)} ms, max ${Math.max(...ms).toFixed(0)} ms`;
  t.comment(`${answered.length} answers 503 during the pause: by the service ${figures(answered)}`);
  t.comment(`as the client read them ${figures(unavailable)}; all: ${summary(statuses)}`);
  t.ok(answered.length >= 20, `${answered.length} requests met the stall`);
  t.ok(p99 <= timeoutMs + 100, `p99 of the 503s ${p99.toFixed(0)} ms <= ${timeoutMs + 100} ms`);
  t.equal(tally(statuses).get(500) ?? 0, 0, 'no 500');
});
