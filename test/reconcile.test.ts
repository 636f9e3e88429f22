import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Kysely } from 'kysely';
import t, { type Test } from 'tap';
import { createDatabase } from '../src/db/connection.js';
import type { Database } from '../src/db/schema.js';
import { reconcile, type ReconcileReport } from '../src/domain/reconcile.js';
import { buildTestApp, createProduct, TEST_REDIS_URL, type TestApp } from './support/app.js';
import { holdRecords, inventory, keysOf } from './support/redis-state.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The service, and a Kysely handle on its database for the reconciliation. */
async function world(t: Test): Promise<TestApp & { db: Kysely<Database> }> {
  // Repairs raced by hundreds of holds from one address: the rate limits are not the subject.
  const testApp = await buildTestApp(t, { WEBHOOK_ALLOW_UNSIGNED: true, RATE_LIMIT: 'off' });
  const db = createDatabase({ url: testApp.config.DATABASE_URL, timeoutMs: 10_000, poolSize: 2 });
  t.teardown(() => db.destroy());
  return { ...testApp, db };
}

async function hold(w: TestApp, productId: number, qty: number, customerId?: string): Promise<string> {
  const response = await w.app.inject({
    method: 'POST',
    url: '/api/holds',
    payload: { product_id: productId, qty, ...(customerId ? { customer_id: customerId } : {}) },
  });
  if (response.statusCode !== 201) throw new Error(`hold answered ${response.statusCode}: ${response.body}`);
  return response.json<{ hold_id: string }>().hold_id;
}

async function order(w: TestApp, holdId: string): Promise<number> {
  const response = await w.app.inject({ method: 'POST', url: '/api/orders', payload: { hold_id: holdId } });
  if (response.statusCode !== 201) throw new Error(`order answered ${response.statusCode}: ${response.body}`);
  return response.json<{ order_id: number }>().order_id;
}

async function payment(w: TestApp, orderId: number, eventType: 'success' | 'failure'): Promise<void> {
  const response = await w.app.inject({
    method: 'POST',
    url: '/api/webhooks/payment',
    payload: { idempotency_key: `evt-${orderId}-${eventType}`, order_id: orderId, event_type: eventType },
  });
  if (response.statusCode !== 200) throw new Error(`webhook answered ${response.statusCode}: ${response.body}`);
}

async function release(w: TestApp, holdId: string): Promise<void> {
  const response = await w.app.inject({ method: 'DELETE', url: `/api/holds/${holdId}` });
  if (response.statusCode !== 200) throw new Error(`release answered ${response.statusCode}: ${response.body}`);
}

/** Two products with a day's business on them: holds, a release, orders paid, failed and pending. */
async function busyShop(w: TestApp) {
  const limited = (await createProduct(w.app, { stock: 20, per_customer_limit: 4 })).id;
  const open = (await createProduct(w.app, { stock: 50 })).id;
  const kept = await hold(w, limited, 2, 'ann');
  await release(w, await hold(w, limited, 1, 'bob'));
  const paid = await order(w, await hold(w, limited, 2, 'bob'));
  await payment(w, paid, 'success');
  const failed = await order(w, await hold(w, limited, 3, 'cat'));
  await payment(w, failed, 'failure');
  await order(w, await hold(w, limited, 1, 'ann'));
  await hold(w, open, 5, 'dan');
  await payment(w, await order(w, await hold(w, open, 4)), 'success');
  await payment(w, await order(w, await hold(w, open, 2)), 'failure');
  return { limited, open, kept };
}

const fields = (report: ReconcileReport) => report.drifts.map((d) => `${d.product_id}:${d.field}`).sort();

t.test('a service after holds, releases, orders, payments and cancellations reconciles clean', async (t) => {
  const w = await world(t);
  const { limited } = await busyShop(w);
  const report = await reconcile(w);
  t.same(report.drifts, []);
  t.equal(report.clean, true);
  t.equal(report.products_checked, 2);
  t.same(await inventory(w, limited), { stock: 20, held: 2, sold: 3 }, 'ann holds 2; bob paid 2, ann ordered 1');
});

t.test('work between the two stores is not drift: a committed order still converting, a return not done', async (t) => {
  const w = await world(t);
  const product = (await createProduct(w.app, { stock: 10, per_customer_limit: 5 })).id;
  const converting = await hold(w, product, 2, 'ann');
  const convertingOrder = await order(w, converting);
  const unreturned = await hold(w, product, 3, 'bob');
  const unreturnedOrder = await order(w, unreturned);
  const keys = keysOf(w, product);
  // As a crash between the order's commit and finishConversion leaves it: units still held, not yet sold.
  const record = JSON.parse((await w.redis.hget(keys.holds, converting))!) as Record<string, unknown>;
  record.status = 'converting';
  record.claim_id = 'claim-1';
  delete record.order_id;
  await w.redis.hset(keys.holds, converting, JSON.stringify(record));
  await w.redis.hincrby(keys.inventory, 'held', 2);
  await w.redis.hincrby(keys.inventory, 'sold', -2);
  await w.redis.zadd(keys.conversions, Date.now() + 10_000, converting);
  // As a crash between a cancellation's commit and returnSoldUnits leaves it: Postgres cancelled, Redis sold.
  await w.db
    .updateTable('orders')
    .set({ status: 'cancelled', payment_status: 'failed' })
    .where('id', '=', unreturnedOrder)
    .execute();
  t.ok(convertingOrder > 0);

  const report = await reconcile(w);
  t.same(report.drifts, [], 'both are counted where they are for now');
  const repaired = await reconcile({ ...w, productIds: [product], repair: true });
  t.equal(repaired.clean, true);
  t.same(await inventory(w, product), { stock: 10, held: 2, sold: 3 }, 'the repair left them as they were');
});

t.test('each kind of drift is reported, and repaired', async (t) => {
  const w = await world(t);
  const { limited, open, kept } = await busyShop(w);
  const keys = keysOf(w, limited);
  const injections: [string, string[], () => Promise<unknown>][] = [
    ['held off by 3', [`${limited}:held`], () => w.redis.hincrby(keys.inventory, 'held', 3)],
    ['sold off by -2', [`${limited}:sold`], () => w.redis.hincrby(keys.inventory, 'sold', -2)],
    [
      'customer units off',
      [`${limited}:customer_units[ann]`, `${limited}:customer_units[zed]`],
      () => w.redis.hset(keys.customerUnits, 'ann', 9, 'zed', 1),
    ],
    ['stock differs from Postgres', [`${open}:stock`], () => w.redis.hset(keysOf(w, open).inventory, 'stock', 45)],
    [
      'a hold missing from the expiry index',
      [`${limited}:hold-expiries[${kept}]`],
      () => w.redis.zrem(keys.holdExpiries, kept),
    ],
    [
      'a stale expiry index entry',
      [`${limited}:hold-expiries[${limited}-gone]`],
      () => w.redis.zadd(keys.holdExpiries, Date.now() + 60_000, `${limited}-gone`),
    ],
    ['the product lost from Redis', [`${open}:inventory`], () => w.redis.del(keysOf(w, open).inventory)],
  ];
  for (const [name, expected, inject] of injections) {
    await t.test(name, async (t) => {
      await inject();
      const check = await reconcile(w);
      t.same(fields(check), expected.sort(), 'reported');
      t.equal(check.clean, false);
      for (const drift of check.drifts) t.ok(drift.source.length > 0, `${drift.field} says where its value comes from`);
      const repair = await reconcile({ ...w, repair: true });
      t.equal(repair.clean, true, 'repaired');
      t.same(repair.remaining, []);
      t.same(fields(await reconcile(w)), [], 'a second check is clean');
    });
  }
  t.same(await inventory(w, limited), { stock: 20, held: 2, sold: 3 });
  t.equal((await w.redis.zscore(keys.holdExpiries, kept)) !== null, true, 'the hold can expire again');
});

t.test('an oversold product is reported and not repairable', async (t) => {
  const w = await world(t);
  const product = (await createProduct(w.app, { stock: 5 })).id;
  await order(w, await hold(w, product, 3));
  await hold(w, product, 2);
  // Postgres says fewer units than are already committed (a stock change Redis never saw, say).
  await w.db.updateTable('products').set({ stock: 4 }).where('id', '=', product).execute();
  const check = await reconcile(w);
  t.same(fields(check), [`${product}:available`, `${product}:stock`]);
  const repair = await reconcile({ ...w, repair: true });
  t.equal(repair.clean, false);
  t.same(
    repair.remaining!.map((d) => d.field),
    ['available'],
  );
  t.match(repair.remaining![0]!.source, /oversold: stock 4 - held 2 - sold 3 = -1/);
  t.equal(repair.repairs![0]!.outcome, 'repaired', "the stock is Postgres's again");
  t.same(await inventory(w, product), { stock: 4, held: 2, sold: 3 });
});

t.test('a repair racing live holds keeps held equal to the hold records', async (t) => {
  const w = await world(t);
  const product = (await createProduct(w.app, { stock: 100_000, per_customer_limit: 1_000 })).id;
  const keys = keysOf(w, product);
  let holding = true;
  const buyers = Array.from({ length: 8 }, async (_, i) => {
    let n = 0;
    // Bounded, so no buyer reaches the per-customer limit however fast the machine is.
    while (holding && n < 150) {
      const holdId = await hold(w, product, 1 + (n % 3), `buyer-${i}`);
      if (n++ % 4 === 0) await release(w, holdId);
    }
  });
  for (let round = 0; round < 10; round++) {
    await w.redis.hincrby(keys.inventory, 'held', 5);
    const report = await reconcile({ ...w, productIds: [product], repair: true });
    t.equal(report.repairs?.[0]?.outcome, 'repaired', `round ${round}: repaired while holds are made`);
  }
  holding = false;
  await Promise.all(buyers);
  const records = await holdRecords(w, product);
  const held = records.filter((r) => r.status === 'held').reduce((sum, r) => sum + r.qty, 0);
  t.ok(records.length > 50, `holds were made meanwhile (${records.length})`);
  t.equal((await inventory(w, product)).held, held, 'held equals the records');
  t.same(fields(await reconcile(w)), []);
});

/** Runs `npm run reconcile`'s program as a child process against the test's stores. */
function runCli(w: TestApp, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/flashsale.ts', 'reconcile', ...args],
      {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? '/tmp',
          REDIS_URL: TEST_REDIS_URL,
          REDIS_CLUSTER_NODES: w.config.REDIS_CLUSTER_NODES,
          DATABASE_URL: w.config.DATABASE_URL,
          REDIS_KEY_PREFIX: w.prefix,
        },
      },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

t.test('the command: --check exits 1 with a report, --repair fixes, --check then says clean', async (t) => {
  const w = await world(t);
  const { limited, open } = await busyShop(w);
  await w.redis.hincrby(keysOf(w, limited).inventory, 'held', 4);
  await w.redis.hincrby(keysOf(w, open).inventory, 'sold', 1);

  const check = await runCli(w, ['--check']);
  t.equal(check.code, 1, check.stderr);
  t.match(check.stdout, /drift in 2 of 2 product\(s\)/);
  t.match(
    check.stdout,
    new RegExp(`product ${limited}  held: redis 6, expected 2  \\(hold records: 1 held or converting\\)`),
  );
  t.match(check.stdout, new RegExp(`product ${open}  sold: redis 5, expected 4  \\(Postgres: 4 units in orders`));

  const only = await runCli(w, ['--check', '--json', '--product', String(open)]);
  t.equal(only.code, 1);
  const report = JSON.parse(only.stdout) as ReconcileReport;
  t.equal(report.products_checked, 1);
  t.match(report.drifts, [{ product_id: open, field: 'sold', redis: 5, expected: 4 }]);

  const repair = await runCli(w, ['--repair']);
  t.equal(repair.code, 0, 'everything was repairable');
  t.match(repair.stdout, new RegExp(`product ${limited}: repaired: held 6 -> 2`));
  t.match(repair.stdout, new RegExp(`product ${open}: repaired: sold 5 -> 4`));
  t.match(repair.stdout, /clean after repair: 2 product\(s\) checked/);

  const clean = await runCli(w, ['--check']);
  t.equal(clean.code, 0);
  t.equal(clean.stdout.trim(), 'clean: 2 product(s) checked');

  const wrong = await runCli(w, ['--check', '--repair']);
  t.equal(wrong.code, 2);
  t.match(wrong.stderr, /exclude each other/);
});
