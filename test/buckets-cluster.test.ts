import calculateSlot from 'cluster-key-slot';
import t from 'tap';
import { bucketOfHold } from '../src/domain/hold-ids.js';
import { formatReport, reconcile } from '../src/domain/reconcile.js';
import { bucketLabels, productKeys } from '../src/redis/keys.js';
import { productState } from './support/api.js';
import { buildTestApp, createProduct, listen } from './support/app.js';
import { request, tally } from './support/http.js';
import { startRedisCluster, type PrivateRedisCluster } from './support/private-redis-cluster.js';

// One hot product beyond one shard: its stock in three buckets on the three masters of a cluster of this file's
// own, sold out by real concurrent buyers.
let cluster: PrivateRedisCluster;
t.before(async () => {
  cluster = await startRedisCluster({ masters: 3 });
});
t.teardown(() => cluster.stop());

const STOCK = 10_000;
const BUYERS = 200;

t.test('stock 10,000 in 3 buckets on 3 masters, 200 buyers at once until sold out: exactly 10,000 units', async (t) => {
  t.setTimeout(300_000);
  const service = await buildTestApp(t, { REDIS_CLUSTER_NODES: cluster.nodeList, RATE_LIMIT: 'off' });
  const base = await listen(service.app);
  const product = await createProduct(service.app, { stock: STOCK, buckets: 3 });
  const labels = bucketLabels(product.id, 3);
  const masterOf = async (label: number) =>
    (await cluster.ownerOf(calculateSlot(productKeys(service.prefix, product.id, label).inventory))).address;
  const masters = new Map<number, string>();
  for (const label of labels) masters.set(label, await masterOf(label));
  t.equal(new Set(masters.values()).size, 3, `the three buckets on three masters: ${JSON.stringify([...masters])}`);

  // Each buyer asks for 1-3 units, again and again, until the product answers sold out.
  const granted: { holdId: string; qty: number }[] = [];
  const statuses: number[] = [];
  const started = Date.now();
  await Promise.all(
    Array.from({ length: BUYERS }, async (_, buyer) => {
      for (let i = 0; ; i++) {
        const qty = 1 + ((buyer + i) % 3);
        const answer = await request<{ hold_id: string; available_stock?: number }>(base, 'POST', '/api/holds', {
          product_id: product.id,
          qty,
        });
        statuses.push(answer.status);
        if (answer.status === 201) granted.push({ holdId: answer.body.hold_id, qty });
        else if (answer.status !== 409 || answer.body.available_stock === 0) return;
      }
    }),
  );
  const seconds = (Date.now() - started) / 1000;
  const byStatus = tally(statuses);
  t.same([...byStatus.keys()].sort(), [201, 409], `granted or refused only: ${JSON.stringify([...byStatus])}`);
  const units = granted.reduce((sum, g) => sum + g.qty, 0);
  t.equal(units, STOCK, 'exactly the stock was granted');
  t.comment(`${statuses.length} requests in ${seconds.toFixed(1)} s (${Math.round(statuses.length / seconds)}/s)`);

  // Per master: the units each bucket granted, from the answers and from Redis.
  const unitsPerBucket = new Map<number, number>();
  for (const g of granted) {
    const label = bucketOfHold(g.holdId);
    unitsPerBucket.set(label, (unitsPerBucket.get(label) ?? 0) + g.qty);
  }
  for (const label of labels) {
    const [stock, held, sold] = await service.redis.hmget(
      productKeys(service.prefix, product.id, label).inventory,
      'stock',
      'held',
      'sold',
    );
    const answered = unitsPerBucket.get(label) ?? 0;
    t.comment(
      `bucket ${label} on ${masters.get(label)}: ${answered} units held (share ${stock}, held ${held}, sold ${sold})`,
    );
    t.ok(answered > STOCK / 10, `bucket ${label} (${masters.get(label)}) took a part of the sale: ${answered} units`);
    t.equal(Number(held), answered, `bucket ${label}: its held units are the units granted in it`);
    t.equal(Number(stock) - Number(held) - Number(sold), 0, `bucket ${label}: sold out, not below zero`);
  }
  t.match(await productState(base, product.id), { stock: STOCK, held: STOCK, available_stock: 0 });

  // A sample of the holds becomes orders, on every master.
  const sample = labels.flatMap((label) => granted.filter((g) => bucketOfHold(g.holdId) === label).slice(0, 20));
  const orders = await Promise.all(sample.map((g) => request(base, 'POST', '/api/orders', { hold_id: g.holdId })));
  t.ok(
    orders.every((o) => o.status === 201),
    'every order of the sample created',
  );
  const sold = sample.reduce((sum, g) => sum + g.qty, 0);
  t.match(await productState(base, product.id), { stock: STOCK, held: STOCK - sold, sold, available_stock: 0 });

  const report = await reconcile({ db: service.app.db, redis: service.redis, prefix: service.prefix });
  t.ok(report.clean, `reconcile: clean\n${formatReport(report)}`);
});
