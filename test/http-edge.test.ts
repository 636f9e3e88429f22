import { connect } from 'node:net';
import t from 'tap';
import { signPayload } from '../src/domain/signatures.js';
import { buildTestApp, createProduct, listen } from './support/app.js';
import { sendRaw } from './support/http.js';
import { serviceWorld } from './support/service-process.js';
import { poll } from './support/wait.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

t.test('every answer has a request id and nosniff; holds and orders are never cached', async (t) => {
  const { app } = await buildTestApp(t);
  const product = await createProduct(app, { stock: 2 });
  const cases = [
    { method: 'GET', url: '/healthz', status: 200, noStore: false },
    { method: 'GET', url: `/api/products/${product.id}`, status: 200, noStore: false },
    { method: 'GET', url: '/no/such/route', status: 404, noStore: false },
    { method: 'GET', url: `/api/holds/${product.id}-AAAAAAAAAAAA`, status: 404, noStore: true },
    { method: 'GET', url: '/api/orders/1', status: 404, noStore: true },
    { method: 'POST', url: '/api/orders', payload: { hold_id: 'x' }, status: 404, noStore: true },
    { method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 }, status: 201, noStore: true },
    { method: 'POST', url: '/api/holds', payload: { product_id: 'one' }, status: 400, noStore: true },
  ] as const;
  for (const c of cases) {
    const answer = await app.inject({
      method: c.method,
      url: c.url,
      ...('payload' in c ? { payload: c.payload } : {}),
    });
    const name = `${c.method} ${c.url}`;
    t.equal(answer.statusCode, c.status, `${name}: ${c.status}`);
    t.equal(answer.headers['x-content-type-options'], 'nosniff', `${name}: nosniff`);
    t.match(answer.headers['x-request-id'], UUID, `${name}: a generated request id`);
    if (c.noStore) t.equal(answer.headers['cache-control'], 'no-store', `${name}: no-store`);
    else t.notOk(answer.headers['cache-control'], `${name}: no cache-control`);
  }
});

t.test('a well-formed client X-Request-Id is echoed; any other is replaced', async (t) => {
  const { app } = await buildTestApp(t);
  const idOf = async (given: string) =>
    (await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': given } })).headers['x-request-id'];
  for (const good of ['abc', 'trace.0f-9_Z', 'x'.repeat(64)]) t.equal(await idOf(good), good, `${good}: kept`);
  for (const bad of ['x'.repeat(65), 'a b', 'id\u00e9', 'a,b', '../etc', '{"x":1}']) {
    const id = await idOf(bad);
    t.not(id, bad, `${JSON.stringify(bad)}: replaced`);
    t.match(id, UUID);
  }
  const one = await idOf('');
  const two = await idOf('');
  t.not(one, two, 'generated ids differ');
});

t.test('CORS: preflights are answered for listed origins only, and closed by default', async (t) => {
  const listed = 'https://shop.example';
  const preflight = (base: string, origin: string) =>
    sendRaw(base, 'OPTIONS', '/api/holds', undefined, {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'content-type, idempotency-key, authorization',
    });

  const open = await buildTestApp(t, { CORS_ORIGINS: `${listed}, http://localhost:5173` });
  const base = await listen(open.app);
  const allowed = await preflight(base, listed);
  t.equal(allowed.status, 204, 'a listed origin gets its preflight answered');
  t.equal(allowed.headers.get('access-control-allow-origin'), listed);
  const allowedHeaders = allowed.headers.get('access-control-allow-headers') ?? '';
  for (const header of ['content-type', 'idempotency-key', 'authorization']) {
    t.match(allowedHeaders, header, `${header} may be sent`);
  }
  t.match(allowed.headers.get('access-control-allow-methods') ?? '', 'POST');
  const refused = await preflight(base, 'https://evil.example');
  t.equal(refused.status, 404, 'another origin gets no preflight');
  t.equal(refused.headers.get('access-control-allow-origin'), null);

  const simple = await sendRaw(base, 'GET', '/healthz', undefined, { origin: listed });
  t.equal(simple.headers.get('access-control-allow-origin'), listed, 'a listed origin may read answers');
  const exposed = simple.headers.get('access-control-expose-headers') ?? '';
  t.match(exposed, 'retry-after');
  t.match(exposed, 'idempotent-replayed');
  const foreign = await sendRaw(base, 'GET', '/healthz', undefined, { origin: 'https://evil.example' });
  t.equal(foreign.headers.get('access-control-allow-origin'), null, 'another origin may not');

  const closed = await buildTestApp(t);
  const closedBase = await listen(closed.app);
  const none = await preflight(closedBase, listed);
  t.equal(none.status, 404, 'with no CORS_ORIGINS, no preflight is answered');
  t.equal(none.headers.get('access-control-allow-origin'), null);
});

/**
 * Opens a socket, writes `head` at once and then `trickle` one byte every `everyMs`, and resolves with what the
 * server answered and when the socket was closed (ms after opening), or `finished` if it never was.
 */
function trickle(base: string, head: string, trickled: string, everyMs: number) {
  const { hostname, port } = new URL(base);
  return new Promise<{ answer: string; closedAfterMs: number | 'finished' }>((resolve) => {
    const started = performance.now();
    const socket = connect(Number(port), hostname);
    let answer = '';
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    socket.on('data', (chunk) => (answer += chunk.toString()));
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ answer, closedAfterMs: sent < trickled.length ? performance.now() - started : 'finished' });
    });
    socket.on('error', () => {});
    socket.on('connect', () => {
      socket.write(head);
      timer = setInterval(() => {
        if (sent < trickled.length && !socket.destroyed) socket.write(trickled[sent++]!);
        if (sent >= trickled.length) {
          clearInterval(timer);
          socket.end();
        }
      }, everyMs);
    });
  });
}

t.test('a client trickling its headers or its body is cut at REQUEST_TIMEOUT_MS with 408', async (t) => {
  const { app } = await buildTestApp(t, { REQUEST_TIMEOUT_MS: 1000 });
  const base = await listen(app);
  // Both trickles would take 40 s to finish; a cut at the bound (plus Node's check interval) comes well before.
  const body = JSON.stringify({ product_id: 1, qty: 1, customer_id: 'x'.repeat(60) });
  const cuts = await Promise.all([
    trickle(base, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', 'X-Slow: ' + 'a'.repeat(192), 200),
    trickle(
      base,
      `POST /api/holds HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
      body.padEnd(200, ' '),
      200,
    ),
  ]);
  for (const [name, cut] of [
    ['headers', cuts[0]],
    ['body', cuts[1]],
  ] as const) {
    t.not(cut.closedAfterMs, 'finished', `trickled ${name}: the connection is cut before the client finished`);
    t.ok(typeof cut.closedAfterMs === 'number' && cut.closedAfterMs < 15_000, `trickled ${name}: cut in time`);
    t.match(cut.answer, /^HTTP\/1.1 408/, `trickled ${name}: answered 408`);
  }
  t.equal((await sendRaw(base, 'GET', '/healthz', undefined)).status, 200, 'a client that is quick is served');
});

t.test(
  'a service process: the request id is in the log lines about the request, and a loud boot warning',
  async (t) => {
    const world = await serviceWorld(t, { WEBHOOK_SECRET: '', WEBHOOK_ALLOW_UNSIGNED: 'true' });
    const service = await world.start();
    const warnings = service.output().map((line) => JSON.parse(line) as { level: number; msg: string });
    t.ok(
      warnings.some((line) => line.level === 40 && /WEBHOOK_ALLOW_UNSIGNED=true .*ANYONE/.test(line.msg)),
      'accepting unsigned webhooks is warned about at start',
    );

    const wrong = await sendRaw(service.base, 'POST', '/api/products', '{}', {
      'content-type': 'application/json',
      authorization: 'Bearer not-the-token-at-all',
      'x-request-id': 'trace-4711.a',
    });
    t.equal(wrong.status, 401);
    t.equal(wrong.headers.get('x-request-id'), 'trace-4711.a');
    const line = await poll(
      async () =>
        service
          .output()
          .map((text) => JSON.parse(text) as { reqId?: string; msg: string })
          .find((entry) => entry.msg === 'wrong admin token'),
      (found) => found !== undefined,
      10_000,
    );
    t.equal(line?.reqId, 'trace-4711.a', "the log line carries the client's request id");
  },
);

t.test(
  'a signed webhook with an unstorable body through a real process is a 400 with the id in the answer',
  async (t) => {
    const world = await serviceWorld(t, { WEBHOOK_SECRET: 'whsec_edge' });
    const service = await world.start();
    const body = '{"idempotency_key":"k","order_id":1,"event_type":"success","note":"\\ud800"}';
    const answer = await sendRaw(service.base, 'POST', '/api/webhooks/payment', body, {
      'content-type': 'application/json',
      'x-signature': signPayload(body, 'whsec_edge'),
    });
    t.equal(answer.status, 400);
    t.match(answer.body, { code: 'VALIDATION_ERROR' });
    t.match(answer.headers.get('x-request-id'), UUID);
    t.same(
      (await world.db.query('SELECT count(*)::int AS n FROM webhook_deliveries')).rows,
      [{ n: 0 }],
      'nothing recorded',
    );
  },
);
