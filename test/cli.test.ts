/**
 * The flashsale program, run as a real child process against the test's own database and key prefix: what it
 * prints (text and --json) and its exit codes (0 done, 1 a problem found or the work failed, 2 usage).
 */
import t, { type Test } from 'tap';
import { buildTestApp, createProduct } from './support/app.js';
import { flashsale, type Run } from './support/cli.js';
import { waitPastOnRedisClock } from './support/clock.js';
import { sweepScheduleKey } from '../src/redis/keys.js';
import { inventory, keysOf, nextSweepOf } from './support/redis-state.js';

/** A shop: a limited product with a hold of ann's, an open one with an order; returns their ids and the hold's. */
async function shop(t: Test) {
  const w = await buildTestApp(t);
  const limited = (await createProduct(w.app, { name: 'Sneaker', stock: 10, per_customer_limit: 3 })).id;
  const open = (await createProduct(w.app, { name: 'Ticket', stock: 100 })).id;
  const hold = await w.app.inject({
    method: 'POST',
    url: '/api/holds',
    payload: { product_id: limited, qty: 2, customer_id: 'ann' },
  });
  const toOrder = await w.app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: open, qty: 4 } });
  const order = await w.app.inject({
    method: 'POST',
    url: '/api/orders',
    payload: { hold_id: toOrder.json().hold_id },
  });
  t.equal(order.statusCode, 201, 'setup: an order');
  return { w, limited, open, holdId: hold.json().hold_id as string, orderId: order.json().order_id as number };
}

// Each run is a fresh node loading the service's modules through tsx (about a second of CPU): on a machine
// shared with other test runs, the file takes longer than tap's default timeout.
t.setTimeout(300_000);

t.test('stock: the figures GET /api/products answers, as a table and as JSON', async (t) => {
  const { w, limited, open } = await shop(t);
  const api = (await w.app.inject({ method: 'GET', url: '/api/products' })).json();

  const [json, text, one, missing, bad] = await Promise.all([
    flashsale(w, ['stock', '--json']),
    flashsale(w, ['stock']),
    flashsale(w, ['stock', '--product', String(open), '--json']),
    flashsale(w, ['stock', '--product', '999999']),
    flashsale(w, ['stock', '--product', 'x']),
  ]);
  t.equal(json.code, 0, json.stderr);
  t.same(JSON.parse(json.stdout), api, '--json: what the API answers');
  t.equal(text.code, 0);
  const rows = text.stdout.trim().split('\n');
  t.match(rows[0], /^id\s+name\s+stock\s+held\s+sold\s+available\s+limit$/, 'a header');
  t.match(rows[1], new RegExp(`^\\s*${limited}\\s+Sneaker\\s+10\\s+2\\s+0\\s+8\\s+3$`), 'the limited product');
  t.match(rows[2], new RegExp(`^\\s*${open}\\s+Ticket\\s+100\\s+0\\s+4\\s+96\\s+-$`), 'the open product');
  t.match(JSON.parse(one.stdout), [{ id: open, available_stock: 96 }], '--product: that one');
  t.equal(missing.code, 1, 'an unknown product: exit 1');
  t.match(missing.stderr, /PRODUCT_NOT_FOUND/);
  t.equal(bad.code, 2, 'not a product id: exit 2');
  t.match(bad.stderr, /not a --product id: x/);
});

t.test('expire-holds: one sweep now, saying what it released per product', async (t) => {
  const w = await buildTestApp(t, { HOLD_TTL_SECONDS: 1 });
  const a = (await createProduct(w.app, { stock: 10 })).id;
  const b = (await createProduct(w.app, { stock: 10 })).id;
  let last = '';
  for (const [product, qty] of [
    [a, 1],
    [a, 2],
    [b, 3],
  ]) {
    const hold = await w.app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product, qty } });
    last = hold.json().expires_at;
  }
  const before = await flashsale(w, ['expire-holds']);
  // The holds may have expired by now on a slow machine: then this run released them.
  await waitPastOnRedisClock(w.redis, last);
  const run = await flashsale(w, ['expire-holds', '--json']);
  t.equal(run.code, 0, run.stderr);
  const released = [...parseSweep(before), ...JSON.parse(run.stdout)] as { product_id: number; expired: number }[];
  const total = (id: number) => released.filter((r) => r.product_id === id).reduce((n, r) => n + r.expired, 0);
  t.same([total(a), total(b)], [2, 1], 'every expired hold, counted per product');
  t.same([(await inventory(w, a)).held, (await inventory(w, b)).held], [0, 0], 'their units are back on sale');
  const again = await flashsale(w, ['expire-holds']);
  t.equal(again.code, 0);
  t.equal(again.stdout.trim(), 'nothing to release: no expired holds', 'a second sweep has nothing to do');
});

t.test(
  'expire-holds releases an expired hold whose sweep was planned later, as a longer hold time plans it',
  async (t) => {
    const w = await buildTestApp(t, { HOLD_TTL_SECONDS: 1 });
    const product = (await createProduct(w.app, { stock: 10 })).id;
    const hold = await w.app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product, qty: 3 } });
    t.equal(hold.statusCode, 201);
    // What a sweep by an instance with HOLD_TTL_SECONDS=120 plans for a product with no hold: a look in 120 s.
    await w.redis.zadd(sweepScheduleKey(w.prefix), Date.now() + 120_000, String(product));
    await waitPastOnRedisClock(w.redis, hold.json().expires_at);
    const run = await flashsale(w, ['expire-holds', '--json']);
    t.equal(run.code, 0, run.stderr);
    t.match(JSON.parse(run.stdout), [{ product_id: product, expired: 1 }], 'the expired hold is released now');
    t.equal((await inventory(w, product)).held, 0, 'its units are back on sale');
    const next = await nextSweepOf(w, product);
    t.ok(next !== null && next < Date.now() + 120_000, "and the product is scheduled by this run's hold time");
  },
);

/** The rows of a text sweep report (before the holds expired it is usually "nothing to release"). */
function parseSweep(run: Run): { product_id: number; expired: number }[] {
  return run.stdout
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/).map(Number))
    .filter((cells) => cells.length === 4 && cells.every(Number.isInteger))
    .map(([product_id, expired]) => ({ product_id: product_id!, expired: expired! }));
}

t.test('restock: the API rule, from a terminal', async (t) => {
  const { w, open } = await shop(t);
  const [below, fine, missing, negative, noStock] = await Promise.all([
    flashsale(w, ['restock', String(open), '3']),
    flashsale(w, ['restock', String(open), '250', '--json']),
    flashsale(w, ['restock', '999999', '5']),
    flashsale(w, ['restock', String(open), '--', '-1']),
    flashsale(w, ['restock', String(open)]),
  ]);
  t.equal(below.code, 1, 'below the units sold: exit 1');
  t.match(below.stderr, /STOCK_BELOW_COMMITTED/);
  t.equal(fine.code, 0, fine.stderr);
  t.match(JSON.parse(fine.stdout), { id: open, stock: 250, sold: 4, available_stock: 246 });
  const product = (await w.app.inject({ method: 'GET', url: `/api/products/${open}` })).json();
  t.match(product, { stock: 250, available_stock: 246 }, 'the API sees the new stock');
  t.equal(missing.code, 1);
  t.match(missing.stderr, /PRODUCT_NOT_FOUND/);
  t.same([negative.code, noStock.code], [2, 2], 'a bad or missing STOCK is a usage error');
  t.match(negative.stderr, /STOCK must be an integer from 0/);
});

t.test('inspect: the keys and rows behind a hold, an order, a product', async (t) => {
  const { w, limited, open, holdId, orderId } = await shop(t);
  const keys = keysOf(w, limited);
  const [hold, holdText, order, product, none, wrong] = await Promise.all([
    flashsale(w, ['inspect', 'hold', holdId, '--json']),
    flashsale(w, ['inspect', 'hold', holdId]),
    flashsale(w, ['inspect', 'order', String(orderId), '--json']),
    flashsale(w, ['inspect', 'product', String(limited), '--json']),
    flashsale(w, ['inspect', 'order', '999999']),
    flashsale(w, ['inspect', 'hold', 'nope']),
  ]);
  t.equal(hold.code, 0, hold.stderr);
  const h = JSON.parse(hold.stdout);
  t.match(h.redis, [
    { key: keys.holds, field: holdId, value: { qty: 2, status: 'held', customer_id: 'ann', limited: true } },
    { key: keys.holdExpiries, field: holdId, value: /^\d+ \(\d{4}-/ },
    { key: keys.endedHolds, field: holdId, value: null },
    { key: keys.conversions, field: holdId, value: null },
    { key: keys.customerUnits, field: 'ann', value: '2' },
  ]);
  t.same(h.postgres.orders, [], 'no order yet');
  t.match(holdText.stdout, `\n  ${keys.holds} (hash) [${holdId}]:\n`, 'the text names each key');
  t.match(holdText.stdout, /\n {6}qty: 2\n/, 'and shows what it holds');

  t.equal(order.code, 0, order.stderr);
  const o = JSON.parse(order.stdout);
  t.match(o.postgres.orders, [{ id: orderId, status: 'pending_payment' }]);
  t.match(o.postgres.order_items, [{ order_id: orderId, product_id: open, qty: 4 }]);
  t.match(o.postgres.payments, [{ order_id: orderId, status: 'pending' }]);
  t.match(o.postgres.hold_claims, [{ outcome: 'ordered' }]);
  t.match(o.redis, [
    { key: keysOf(w, open).holds, value: { status: 'converted', order_id: String(orderId) } },
    {},
    { key: keysOf(w, open).endedHolds, value: /^\d+/ },
    {},
    { key: keysOf(w, open).inventory, value: { stock: '100', sold: '4' } },
  ]);

  t.equal(product.code, 0, product.stderr);
  const p = JSON.parse(product.stdout);
  t.match(p.redis[0], { key: keys.inventory, value: { stock: '10', held: '2', per_customer_limit: '3' } });
  t.match(p.redis, [{}, { key: `${w.prefix}sweep-schedule`, field: String(limited) }]);
  t.match(p.postgres.products, [{ id: limited, name: 'Sneaker', stock: 10 }]);
  t.same(p.postgres.product_sales, [{ product_id: limited, sold_units: 0 }], "the ledger's count: nothing sold yet");

  t.equal(none.code, 1, 'nothing by that id: exit 1');
  t.match(none.stderr, /no order 999999/);
  t.equal(wrong.code, 2, 'not a hold id: exit 2');
});
