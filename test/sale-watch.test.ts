import { Counter, Gauge, Registry } from 'prom-client';
import t from 'tap';
import { countersFromRegistry, type CounterReading } from '../src/ops/counters.js';
import { createSaleWatch, OPS_HISTORY_MS, OPS_ROWS, OPS_SAMPLE_MS } from '../src/ops/sale-watch.js';
import { admin, buildTestApp, createProduct } from './support/app.js';
import { manualClock } from './support/clock.js';

/** Counters a test moves by hand, as the metrics registry would count. */
function handCounters() {
  const reading = {
    holdsCreated: new Map<number, number>(),
    holdsRefused: new Map<number, number>(),
    soldOut: new Map<number, number>(),
    unavailable: 0,
    webhooks: { paid: 0 } as Record<string, number>,
    sweeperLagSeconds: 0,
  } satisfies CounterReading;
  const add = (counter: Map<number, number>, id: number, n: number) => counter.set(id, (counter.get(id) ?? 0) + n);
  return { reading, add, counters: { read: async (): Promise<CounterReading> => structuredClone(reading) } };
}

const hold = (app: Awaited<ReturnType<typeof buildTestApp>>['app'], productId: number, qty: number) =>
  app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: productId, qty } });

t.test('rates are the changes of the counters and of held + sold between samples, per second', async (t) => {
  const { app } = await buildTestApp(t);
  const product = await createProduct(app, { stock: 100 });
  const clock = manualClock();
  const hand = handCounters();
  const watch = createSaleWatch({ catalogue: app.catalogue, counters: hand.counters, now: clock.now });

  const first = await watch.snapshot(0);
  t.equal(first.rates_from, 'counters');
  t.match(first.points, [{ products: [{ id: product.id, holds_per_s: null, units_taken_per_s: null }] }]);

  clock.advance(2000);
  t.equal((await hold(app, product.id, 3)).statusCode, 201);
  t.equal((await hold(app, product.id, 3)).statusCode, 201);
  hand.add(hand.reading.holdsCreated, product.id, 2);
  hand.add(hand.reading.holdsRefused, product.id, 4);
  hand.reading.unavailable = 6;
  hand.reading.webhooks.paid = 1;
  hand.reading.sweeperLagSeconds = 0.5;
  const second = await watch.snapshot(first.t);
  t.equal(second.points.length, 1, 'only the new point');
  t.same(second.points[0], {
    t: first.t + 2000,
    products: [{ id: product.id, holds_per_s: 1, refusals_per_s: 2, units_taken_per_s: 3 }],
    unavailable_per_s: 3,
    sweeper_lag_seconds: 0.5,
  });
  t.match(second.products[0], { held: 6, available_stock: 94, holds_total: 2, refusals_total: 4 });
  t.same(second.webhooks, { paid: 1 });
  t.equal(second.unavailable_total, 6);

  clock.advance(OPS_SAMPLE_MS / 2);
  const soon = await watch.snapshot(0);
  t.equal(soon.t, second.t, 'asked again within a second: the same sample');
  t.equal(soon.points.length, 2, 'all the points with after=0');

  clock.advance(60_000);
  hand.add(hand.reading.holdsCreated, product.id, 600);
  const afterPause = await watch.snapshot(second.t);
  t.match(afterPause.points, [{ products: [{ holds_per_s: null, units_taken_per_s: null }], unavailable_per_s: null }]);
  t.pass('nobody watched for a minute: a gap, not a minute-long average');

  clock.advance(OPS_HISTORY_MS + 1);
  const later = await watch.snapshot(0);
  t.equal(later.points.length, 1, 'points older than the history are dropped');
});

t.test('without counters, the stock figures alone: units taken per second, and no other rate', async (t) => {
  const { app } = await buildTestApp(t);
  const product = await createProduct(app, { stock: 4 });
  const clock = manualClock();
  const watch = createSaleWatch({ catalogue: app.catalogue, counters: { read: async () => ({}) }, now: clock.now });
  await watch.snapshot(0);
  t.equal((await hold(app, product.id, 4)).statusCode, 201);
  clock.advance(1000);
  const snapshot = await watch.snapshot(0);
  t.equal(snapshot.rates_from, 'stock figures');
  t.same(snapshot.points[1]!.products, [
    { id: product.id, holds_per_s: null, refusals_per_s: null, units_taken_per_s: 4 },
  ]);
  t.same(snapshot.sweeper_lag_seconds, null);
  t.same(snapshot.webhooks, null);
  t.same(snapshot.products[0]!.sold_out_at, [snapshot.t], 'available went from 4 to 0: a sold-out moment');
  t.match(snapshot.products[0], { holds_total: null, refusals_total: null });

  clock.advance(1000);
  t.same((await watch.snapshot(0)).products[0]!.sold_out_at, [snapshot.t], 'still sold out: no second moment');
});

t.test('with counters, a sold-out moment is one the counter saw, even between two samples', async (t) => {
  const { app } = await buildTestApp(t);
  const product = await createProduct(app, { stock: 2 });
  const clock = manualClock();
  const hand = handCounters();
  const watch = createSaleWatch({ catalogue: app.catalogue, counters: hand.counters, now: clock.now });
  await watch.snapshot(0);
  t.equal((await hold(app, product.id, 2)).statusCode, 201);
  hand.add(hand.reading.holdsCreated, product.id, 1);
  hand.add(hand.reading.soldOut, product.id, 1);
  clock.advance(1000);
  const soldOut = await watch.snapshot(0);
  t.same(soldOut.products[0]!.sold_out_at, [soldOut.t]);

  // Sold out already at one sample and at the next, but the counter says it sold out again in between (a
  // restock, then a sale): a second moment.
  hand.add(hand.reading.soldOut, product.id, 1);
  clock.advance(1000);
  const again = await watch.snapshot(0);
  t.same(again.products[0]!.sold_out_at, [soldOut.t, again.t]);
});

t.test(`rows: products with hold activity first, at most ${OPS_ROWS}, shown in id order`, async (t) => {
  const { app } = await buildTestApp(t);
  const ids: number[] = [];
  for (let i = 0; i < OPS_ROWS + 2; i++) ids.push((await createProduct(app, { stock: 10 })).id);
  const hand = handCounters();
  const busy = ids.at(-1)!;
  hand.add(hand.reading.holdsCreated, busy, 5);
  hand.add(hand.reading.holdsRefused, 999_999, 1); // a product that does not exist is no row
  const watch = createSaleWatch({ catalogue: app.catalogue, counters: hand.counters });
  const rows = (await watch.snapshot(0)).products.map((product) => product.id);
  t.equal(rows.length, OPS_ROWS);
  t.same(rows, [...ids.slice(0, OPS_ROWS - 1), busy], 'the busy product, then the first of the catalogue');
});

t.test('a product the counters do not count (past their label bound) has unknown rates, not 0', async (t) => {
  const { app } = await buildTestApp(t);
  const counted = await createProduct(app, { stock: 10 });
  const uncounted = await createProduct(app, { stock: 10 });
  const clock = manualClock();
  const hand = handCounters();
  hand.add(hand.reading.holdsCreated, counted.id, 1);
  const watch = createSaleWatch({ catalogue: app.catalogue, counters: hand.counters, now: clock.now });
  await watch.snapshot(0);
  t.equal((await hold(app, uncounted.id, 3)).statusCode, 201);
  hand.add(hand.reading.holdsCreated, counted.id, 1);
  clock.advance(1000);
  const snapshot = await watch.snapshot(0);
  t.same(snapshot.points[1]!.products, [
    { id: counted.id, holds_per_s: 1, refusals_per_s: 0, units_taken_per_s: 0 },
    { id: uncounted.id, holds_per_s: null, refusals_per_s: null, units_taken_per_s: 3 },
  ]);
  t.match(snapshot.products, [
    { id: counted.id, holds_total: 2, refusals_total: 0 },
    { id: uncounted.id, holds_total: null, refusals_total: null },
  ]);
});

t.test(
  'the counters of a metrics registry: per product id (not `other`), 503s summed, webhooks by result',
  async (t) => {
    const registry = new Registry();
    const counter = (name: string, labelNames: string[]) =>
      new Counter({ name, help: name, labelNames, registers: [registry] });
    const created = counter('flashsale_holds_created_total', ['product']);
    const refused = counter('flashsale_holds_refused_total', ['product', 'reason']);
    const requests = counter('flashsale_http_requests_total', ['route', 'method', 'status']);
    const webhooks = counter('flashsale_webhooks_total', ['result']);
    const lag = new Gauge({ name: 'flashsale_sweeper_lag_seconds', help: 'lag', registers: [registry] });
    created.inc({ product: '7' }, 3);
    created.inc({ product: 'other' }, 50);
    refused.inc({ product: '7', reason: 'INSUFFICIENT_STOCK' }, 2);
    refused.inc({ product: '7', reason: 'CUSTOMER_LIMIT_EXCEEDED' });
    requests.inc({ route: '/api/holds', method: 'POST', status: '503' }, 4);
    requests.inc({ route: '/api/orders', method: 'POST', status: '503' });
    requests.inc({ route: '/api/holds', method: 'POST', status: '201' }, 3);
    webhooks.inc({ result: 'paid' }, 2);
    let refreshed = 0;
    const reading = await countersFromRegistry(registry, async () => {
      refreshed++;
      lag.set(1.5);
    }).read();
    t.equal(refreshed, 1, 'the live figures are read first');
    t.same([...reading.holdsCreated!], [[7, 3]], '`other` is no product');
    t.same([...reading.holdsRefused!], [[7, 3]], 'refusals of every reason');
    t.equal(reading.soldOut, undefined, 'a metric the registry lacks is left out');
    t.equal(reading.unavailable, 5);
    t.same(reading.webhooks, { paid: 2 });
    t.equal(reading.sweeperLagSeconds, 1.5);
  },
);

t.test('with METRICS=off the page has the stock figures alone, and says so', async (t) => {
  const { app } = await buildTestApp(t, { METRICS: 'off' });
  await createProduct(app, { stock: 5 });
  const snapshot = (await app.inject({ url: '/ops/snapshot', headers: admin })).json();
  t.equal(snapshot.rates_from, 'stock figures');
  t.match(snapshot, { unavailable_total: null, webhooks: null, sweeper_lag_seconds: null });
  t.match(snapshot.products, [{ stock: 5, available_stock: 5, holds_total: null }]);
});
