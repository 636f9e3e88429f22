/**
 * LOG_REQUESTS=true: one line per request (method, route template, url, status, ms, reqId), beside the domain
 * events, which keep their ids. Off by default: then no request is logged.
 */
import t from 'tap';
import { ADMIN_TOKEN } from './support/app.js';
import { serviceWorld, type Service } from './support/service-process.js';
import { poll } from './support/wait.js';

interface LogLine {
  level: number;
  msg: string;
  reqId?: string;
  [field: string]: unknown;
}

function parsed(service: Service): LogLine[] {
  return service.output().flatMap((line) => {
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });
}

const requestLines = (service: Service, reqId: string) =>
  parsed(service).filter((line) => line.msg === 'request' && line.reqId === reqId);

/** Sends one request with its own X-Request-Id; returns that id and the answer's status. */
async function send(service: Service, reqId: string, method: string, path: string, body?: unknown) {
  const headers: Record<string, string> = { 'x-request-id': reqId, authorization: `Bearer ${ADMIN_TOKEN}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${service.base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

t.test('with LOG_REQUESTS=true each request is logged once, with its route, status, time and id', async (t) => {
  const w = await serviceWorld(t, { LOG_LEVEL: 'info', LOG_REQUESTS: 'true' });
  const service = await w.start();
  const created = await send(service, 'req-create', 'POST', '/api/products', {
    name: 'Logged product',
    price_cents: 500,
    stock: 3,
  });
  t.equal(created.status, 201);
  const productId = created.body.id as number;
  const hold = await send(service, 'req-hold', 'POST', '/api/holds', { product_id: productId, qty: 1 });
  t.equal(hold.status, 201);
  const holdId = hold.body.hold_id as string;
  t.equal((await send(service, 'req-read', 'GET', `/api/holds/${holdId}`)).status, 200);
  t.equal((await send(service, 'req-missing', 'GET', `/api/products/999999`)).status, 404);
  t.equal((await send(service, 'req-noroute', 'GET', '/no/such/route?x=1')).status, 404);

  const expected = [
    { reqId: 'req-create', method: 'POST', route: '/api/products', url: '/api/products', status: 201 },
    { reqId: 'req-hold', method: 'POST', route: '/api/holds', url: '/api/holds', status: 201 },
    { reqId: 'req-read', method: 'GET', route: '/api/holds/:id', url: `/api/holds/${holdId}`, status: 200 },
    { reqId: 'req-missing', method: 'GET', route: '/api/products/:id', url: '/api/products/999999', status: 404 },
    { reqId: 'req-noroute', method: 'GET', url: '/no/such/route?x=1', status: 404 },
  ];
  // The line is written once the answer has gone out: it may follow the answer by a moment.
  await poll(
    async () => expected.every((e) => requestLines(service, e.reqId).length > 0),
    (all) => all,
    5000,
  );
  for (const want of expected) {
    const lines = requestLines(service, want.reqId);
    t.equal(lines.length, 1, `${want.method} ${want.url}: one line`);
    t.match(lines[0], { level: 30, ...want }, `${want.method} ${want.url}: what it was and how it ended`);
    t.type(lines[0]?.ms, 'number', 'with its time in ms');
    t.ok((lines[0]?.ms as number) >= 0);
  }
  // The domain events stay, with their ids.
  const events = parsed(service);
  t.ok(
    events.some((e) => e.msg === 'product created' && e.product_id === productId),
    'product created, with its id',
  );
  t.ok(
    events.some((e) => e.msg === 'hold created' && e.hold_id === holdId && e.product_id === productId),
    'hold created, with the hold and product ids',
  );
});

t.test('by default no request is logged, and the domain events still are', async (t) => {
  const w = await serviceWorld(t, { LOG_LEVEL: 'info' });
  const service = await w.start();
  const created = await send(service, 'req-quiet', 'POST', '/api/products', {
    name: 'Quiet product',
    price_cents: 500,
    stock: 3,
  });
  t.equal(created.status, 201);
  await poll(
    async () => parsed(service).some((e) => e.msg === 'product created'),
    (found) => found,
    5000,
  );
  t.ok(parsed(service).some((e) => e.msg === 'product created' && e.product_id === created.body.id));
  t.same(
    parsed(service).filter((e) => e.msg === 'request'),
    [],
    'no request line: not the readiness probes, not the product',
  );
});
