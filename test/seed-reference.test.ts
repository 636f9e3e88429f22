/**
 * The seed's design as the bench measures it (bench/baselines/seed.ts): its checkout must be a real one, with the
 * service's request shapes, or the ratio the bench reports against it means nothing.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import t from 'tap';
import { signPayload } from '../src/domain/signatures.js';
import { TEST_PG_URL } from './support/app.js';
import { request, sendRaw } from './support/http.js';
import { freePort, startProcess } from './support/processes.js';

const SECRET = 'whsec_seed_reference';

interface Answer {
  code?: string;
  hold_id?: string;
  order_id?: number;
  status?: string;
  payment_status?: string;
  total_cents?: number;
  available_stock?: number;
  items?: { product_id: number; qty: number; unit_price_cents: number; subtotal_cents: number }[];
}

// Its own raw database: the seed creates tables named as the service's, so a migrated test database would clash.
const name = `flashsale_test_seed_${randomBytes(6).toString('hex')}`;
const admin = new pg.Client({ connectionString: TEST_PG_URL });
await admin.connect();
await admin.query(`CREATE DATABASE ${name}`);
await admin.end();
const databaseUrl = new URL(TEST_PG_URL);
databaseUrl.pathname = `/${name}`;
const db = new pg.Pool({ connectionString: databaseUrl.toString(), max: 1 });

const port = await freePort();
const seed = startProcess(process.execPath, ['--import', 'tsx', 'bench/baselines/seed.ts'], {
  env: { ...process.env, DATABASE_URL: databaseUrl.toString(), PORT: String(port), WEBHOOK_SECRET: SECRET },
  stdio: 'inherit',
});
t.teardown(async () => {
  await seed.stop();
  await db.end();
  const client = new pg.Client({ connectionString: TEST_PG_URL });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await client.end();
});
const url = `http://127.0.0.1:${port}`;
for (let tries = 0; ; tries++) {
  const up = await fetch(`${url}/api/orders`, { method: 'POST' }).then(
    () => true,
    () => false,
  );
  if (up) break;
  if (tries > 300) throw new Error('the seed reference did not start');
  await sleep(50);
}

const post = (path: string, body: unknown) => request<Answer>(url, 'POST', path, body);
const deliver = (body: Record<string, unknown>, secret = SECRET) => {
  const raw = JSON.stringify(body);
  return sendRaw<Answer>(url, 'POST', '/api/webhooks/payment', raw, {
    'content-type': 'application/json',
    'x-signature': signPayload(raw, secret),
  });
};
const product = async (stock: number) =>
  (await post('/api/products', { name: 'p', price_cents: 4_999, stock })).body as unknown as { id: number };

t.test('a checkout: hold, order under the hold lock, signed webhook cached per delivery', async (t) => {
  const { id } = await product(3);
  const hold = await post('/api/holds', { product_id: id, qty: 2 });
  t.equal(hold.status, 201);
  const holdId = hold.body.hold_id!;

  const order = await post('/api/orders', { hold_id: holdId, payment_method: 'card' });
  t.equal(order.status, 201);
  t.match(order.body, { status: 'pending_payment', payment_status: 'pending', total_cents: 9_998 });
  t.same(order.body.items, [{ product_id: id, qty: 2, unit_price_cents: 4_999, subtotal_cents: 9_998 }]);
  const again = await post('/api/orders', { hold_id: holdId, payment_status: 'card' });
  t.equal(again.status, 200, 'the order a hold already became is answered again');
  t.equal(again.body.order_id, order.body.order_id);
  const short = await post('/api/holds', { product_id: id, qty: 2 });
  t.equal(short.status, 409, 'the converted units left the stock');
  t.equal(short.body.available_stock, 1);

  const event = { idempotency_key: `evt-${holdId}`, order_id: order.body.order_id, event_type: 'success' };
  const paid = await deliver(event);
  t.equal(paid.status, 200);
  t.match(paid.body, { status: 'paid', payment_status: 'completed' });
  t.equal(paid.headers.get('idempotent-replayed'), null);
  const repeat = await deliver(event);
  t.equal(repeat.status, 200);
  t.equal(repeat.headers.get('idempotent-replayed'), 'true', 'a repeat is answered from the cache');
  t.equal((await deliver({ ...event, event_type: 'failure' })).body.code, 'IDEMPOTENCY_KEY_REUSED');
  const late = await deliver({ ...event, idempotency_key: `evt2-${holdId}`, event_type: 'failure' });
  t.equal(late.status, 409);
  t.equal(late.body.code, 'ORDER_ALREADY_FINAL');
  const forged = await deliver({ ...event, idempotency_key: `evt3-${holdId}` }, 'not-the-secret');
  t.equal(forged.status, 401);
  t.equal(forged.body.code, 'INVALID_SIGNATURE');
  const { rows } = await db.query<{ status: string; cached: number }>(
    `SELECT o.status, (SELECT count(*)::int FROM webhook_events e WHERE e.order_id = o.id) AS cached
     FROM orders o WHERE o.id = $1`,
    [order.body.order_id],
  );
  t.same(rows, [{ status: 'paid', cached: 2 }], 'paid once; the success and the refused late failure cached');
});

t.test('a failed payment cancels the order and puts its units back', async (t) => {
  const { id } = await product(1);
  const hold = await post('/api/holds', { product_id: id, qty: 1 });
  const order = await post('/api/orders', { hold_id: hold.body.hold_id });
  const failed = await deliver({ idempotency_key: `f-${id}`, order_id: order.body.order_id, event_type: 'failure' });
  t.match(failed.body, { status: 'cancelled', payment_status: 'failed' });
  t.equal((await post('/api/holds', { product_id: id, qty: 1 })).status, 201, 'the unit is for sale again');
});

t.test('refusals: unknown hold, expired hold, unknown order', async (t) => {
  const { id } = await product(5);
  t.equal((await post('/api/orders', { hold_id: `${id}-nosuchhold` })).body.code, 'HOLD_NOT_FOUND');
  const hold = await post('/api/holds', { product_id: id, qty: 1 });
  await db.query(`UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = $1`, [hold.body.hold_id]);
  const expired = await post('/api/orders', { hold_id: hold.body.hold_id });
  t.equal(expired.status, 410);
  t.equal(expired.body.code, 'HOLD_EXPIRED');
  const unknown = await deliver({ idempotency_key: `u-${id}`, order_id: 987_654, event_type: 'success' });
  t.equal(unknown.status, 404);
  t.equal(unknown.body.code, 'ORDER_NOT_FOUND');
});
