/**
 * Overload: while the event loop lags or the heap is past its bound, /readyz answers 503 with Retry-After (so a
 * load balancer sends the instance less), and the API keeps serving the requests that still reach it.
 */
import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { loadConfig } from '../src/config.js';
import { buildTestApp, createProduct } from './support/app.js';
import { poll } from './support/wait.js';

/** Keeps the event loop busy `busyMs` at a time, yielding between turns, until the returned stop is called. */
function lagTheLoop(busyMs: number): () => Promise<void> {
  let running = true;
  const done = (async () => {
    while (running) {
      const until = performance.now() + busyMs;
      while (performance.now() < until) {
        // busy: what a CPU-bound request or a long GC pause does to every other request
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  return async () => {
    running = false;
    await done;
  };
}

const readiness = (app: FastifyInstance) => app.inject({ method: 'GET', url: '/readyz' });

t.test('the thresholds: 1 s of mean event-loop delay by default, no heap bound, 0 turns either off', async (t) => {
  const defaults = loadConfig({});
  t.equal(defaults.READY_MAX_EVENT_LOOP_DELAY_MS, 1000);
  t.equal(defaults.READY_MAX_HEAP_USED_BYTES, 0);
  const set = loadConfig({ READY_MAX_EVENT_LOOP_DELAY_MS: '0', READY_MAX_HEAP_USED_BYTES: '536870912' });
  t.equal(set.READY_MAX_EVENT_LOOP_DELAY_MS, 0);
  t.equal(set.READY_MAX_HEAP_USED_BYTES, 536_870_912);
  t.throws(() => loadConfig({ READY_MAX_HEAP_USED_BYTES: '512MB' }), /READY_MAX_HEAP_USED_BYTES/);
});

t.test('while the event loop lags, /readyz answers 503 overloaded and the API still serves', async (t) => {
  const { app } = await buildTestApp(t, { READY_MAX_EVENT_LOOP_DELAY_MS: 50 });
  const product = await createProduct(app, { stock: 10 });
  t.equal((await readiness(app)).statusCode, 200, 'ready before the lag');

  const stop = lagTheLoop(150);
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await stop();
  });
  // The figure is sampled once a second: the lag shows at the next sample.
  const overloaded = await poll(
    () => readiness(app),
    (answer) => answer.statusCode === 503,
    10_000,
    20,
  );
  t.equal(overloaded.statusCode, 503, '/readyz answers 503 under the lag');
  t.equal(overloaded.headers['retry-after'], '1', 'with Retry-After');
  const body = overloaded.json();
  t.match(body, { status: 'overloaded', redis: 'ok', postgres: 'ok' });
  t.ok(body.event_loop_delay_ms > 50, `the mean delay it saw: ${body.event_loop_delay_ms} ms, above the 50 ms bound`);

  // The API is not refused for it: only the readiness probe says overloaded.
  const read = await app.inject({ method: 'GET', url: `/api/products/${product.id}` });
  t.equal(read.statusCode, 200, 'a product is still read');
  const hold = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } });
  t.equal(hold.statusCode, 201, 'a hold is still made');
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'liveness is not overload');

  await stop();
  stopped = true;
  const recovered = await poll(
    () => readiness(app),
    (answer) => answer.statusCode === 200,
    10_000,
    50,
  );
  t.equal(recovered.statusCode, 200, 'ready again once the loop keeps up');
});

t.test('past READY_MAX_HEAP_USED_BYTES, /readyz answers 503 overloaded with the heap in use', async (t) => {
  // One byte: any heap is past it, from the first sample on.
  const { app } = await buildTestApp(t, { READY_MAX_HEAP_USED_BYTES: 1, READY_MAX_EVENT_LOOP_DELAY_MS: 0 });
  const product = await createProduct(app, { stock: 10 });
  const overloaded = await poll(
    () => readiness(app),
    (answer) => answer.statusCode === 503,
    10_000,
    50,
  );
  t.equal(overloaded.statusCode, 503);
  t.equal(overloaded.headers['retry-after'], '1');
  const body = overloaded.json();
  t.match(body, { status: 'overloaded' });
  t.ok(body.heap_used_bytes > 1_000_000, `the heap in use: ${body.heap_used_bytes} bytes`);
  t.equal((await app.inject({ method: 'GET', url: '/api/products' })).statusCode, 200, 'the API still serves');
  const hold = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } });
  t.equal(hold.statusCode, 201);
});

t.test('with both thresholds off, a lagging loop leaves the service ready', async (t) => {
  const { app } = await buildTestApp(t, { READY_MAX_EVENT_LOOP_DELAY_MS: 0, READY_MAX_HEAP_USED_BYTES: 0 });
  const stop = lagTheLoop(150);
  // Longer than two samples of the figure, which would have tripped a 50 ms bound (the test above).
  const answers: number[] = [];
  const until = Date.now() + 2500;
  while (Date.now() < until) answers.push((await readiness(app)).statusCode);
  await stop();
  t.ok(answers.length > 5, `${answers.length} probes`);
  t.same([...new Set(answers)], [200], 'every probe answered 200');
});
