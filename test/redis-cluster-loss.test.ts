/**
 * Data loss on one shard of a Redis Cluster (docs/redis-loss.md): a master replaced by a replica that missed
 * acknowledged sales, and a master restarted empty on its own slots. The loss watcher finds exactly the products
 * on that shard, rebuilds them from Postgres under a new generation, leaves the others alone, and nothing is sold
 * twice. Each test starts its own cluster, since it kills nodes of it.
 */
import calculateSlot from 'cluster-key-slot';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import t, { type Test } from 'tap';
import { SOLD_ORDER_STATUSES } from '../src/db/schema.js';
import { productTag } from '../src/redis/keys.js';
import { buildTestApp, createProduct, type TestApp } from './support/app.js';
import { startRedisCluster, type ClusterNode, type PrivateRedisCluster } from './support/private-redis-cluster.js';
import { inventory } from './support/redis-state.js';
import { poll } from './support/wait.js';

const STOCK = 4;
// The watcher's pass: a loss is found within a few of them.
const LOSS_CHECK_MS = 50;
const DETECTION_DEADLINE_MS = 10_000;

t.setTimeout(60_000);

interface Product {
  id: number;
  master: ClusterNode;
}

async function lossWorld(t: Test, cluster: PrivateRedisCluster) {
  const service = await buildTestApp(t, {
    REDIS_CLUSTER_NODES: cluster.nodeList,
    REDIS_LOSS_CHECK_MS: LOSS_CHECK_MS,
    RECOVERY_INTERVAL_MS: 0,
    RATE_LIMIT: 'off',
    DATABASE_TIMEOUT_MS: 15_000,
    REDIS_COMMAND_TIMEOUT_MS: 2000,
  });
  const pool = new pg.Pool({ connectionString: service.config.DATABASE_URL, max: 2 });
  t.teardown(() => pool.end());
  const generations = async (ids: number[]): Promise<Map<number, number>> => {
    const { rows } = await pool.query<{ id: number; g: number }>(
      'SELECT id::int AS id, redis_generation::int AS g FROM products WHERE id = ANY($1)',
      [ids],
    );
    return new Map(rows.map((r) => [r.id, r.g]));
  };
  const liveUnits = async (id: number): Promise<number> => {
    const { rows } = await pool.query(
      `SELECT coalesce(sum(i.qty), 0)::int AS n FROM order_items i JOIN orders o ON o.id = i.order_id
        WHERE i.product_id = $1 AND o.status = ANY($2)`,
      [id, [...SOLD_ORDER_STATUSES]],
    );
    return rows[0].n;
  };
  return { ...service, generations, liveUnits };
}

/** Two products on `victim`'s slots and one on every other master, each of stock STOCK. */
async function productsAround(service: TestApp, cluster: PrivateRedisCluster, victim: ClusterNode): Promise<Product[]> {
  const masters = await cluster.masters();
  const wanted = new Map(masters.map((m) => [m, m === victim ? 2 : 1]));
  const products: Product[] = [];
  for (let tries = 0; [...wanted.values()].some((n) => n > 0); tries++) {
    if (tries > 80) throw new Error('products do not spread over the masters');
    const { id } = await createProduct(service.app, { stock: STOCK });
    const master = await cluster.ownerOf(calculateSlot(`${productTag(service.prefix, id)}:inventory`));
    if ((wanted.get(master) ?? 0) === 0) continue; // a product this test leaves alone
    wanted.set(master, wanted.get(master)! - 1);
    products.push({ id, master });
  }
  return products;
}

/** A hold of `qty` converted into an order; the order's status code. */
async function buy(service: TestApp, productId: number, qty: number, customer: string): Promise<number> {
  const hold = await service.app.inject({
    method: 'POST',
    url: '/api/holds',
    payload: { product_id: productId, qty, customer_id: customer },
  });
  if (hold.statusCode !== 201) return hold.statusCode;
  const order = await service.app.inject({
    method: 'POST',
    url: '/api/orders',
    payload: { hold_id: hold.json().hold_id },
  });
  return order.statusCode;
}

/** Buys one unit at a time until refused; returns the units bought. */
async function buyAll(service: TestApp, productId: number): Promise<{ bought: number; refusal: number }> {
  for (let bought = 0; ; bought++) {
    const status = await buy(service, productId, 1, `late-${bought}`);
    if (status !== 201) return { bought, refusal: status };
  }
}

/** The replica of `master`, from its INFO replication. */
async function replicaOf(cluster: PrivateRedisCluster, master: ClusterNode): Promise<ClusterNode> {
  const info = (await master.client().call('INFO', 'replication')) as string;
  const port = Number(/slave0:ip=[^,]+,port=(\d+)/.exec(info)?.[1]);
  const replica = cluster.nodes.find((n) => n.port === port);
  if (!replica) throw new Error(`no replica of ${master.address}: ${info}`);
  return replica;
}

/**
 * Waits until the watcher has rebuilt every product of `lost` (a new generation in Postgres); returns the
 * generations of all `products` then.
 */
async function rebuilt(
  w: Awaited<ReturnType<typeof lossWorld>>,
  products: Product[],
  lost: Product[],
  before: Map<number, number>,
) {
  return poll(
    () => w.generations(products.map((p) => p.id)),
    (now) => lost.every((p) => now.get(p.id)! > before.get(p.id)!),
    DETECTION_DEADLINE_MS,
    25,
  );
}

t.test('a replica that missed acknowledged sales is promoted: its shard rebuilt, the others untouched', async (t) => {
  const cluster = await startRedisCluster({ masters: 3, replicas: 1, nodeTimeoutMs: 1000 });
  t.teardown(() => cluster.stop());
  const w = await lossWorld(t, cluster);
  const [victim] = await cluster.masters();
  const products = await productsAround(w, cluster, victim!);
  const onVictim = products.filter((p) => p.master === victim);
  const elsewhere = products.filter((p) => p.master !== victim);

  // Half of every product sold, and copied to the replicas.
  for (const p of products) t.equal(await buy(w, p.id, 2, 'early'), 201, `product ${p.id}: 2 sold`);
  const master = victim!.client();
  t.equal(await master.call('WAIT', 1, 5000), 1, 'the replica has every write so far');
  const replica = await replicaOf(cluster, victim!);

  // The replica stops hearing from its master (asleep, its link cut), and the rest of every stock is sold.
  const asleep = replica
    .client()
    .call('DEBUG', 'SLEEP', 3)
    .catch(() => undefined);
  await sleep(200);
  await master.call('CLIENT', 'KILL', 'TYPE', 'replica');
  for (const p of products) t.equal(await buy(w, p.id, 2, 'late'), 201, `product ${p.id}: sold out, acknowledged`);
  const before = await w.generations(products.map((p) => p.id));

  // The master dies; the stale replica is promoted (TAKEOVER: no wait for the election, same outcome).
  await victim!.kill();
  await asleep;
  await replica
    .client()
    .call('CLUSTER', 'FAILOVER', 'TAKEOVER')
    .catch(() => undefined); // already promoted by the election
  await poll(
    () => cluster.ownerOf(calculateSlot(`${productTag(w.prefix, onVictim[0]!.id)}:inventory`)),
    (owner) => owner === replica,
    10_000,
    50,
  );
  await cluster.waitUntilOk(10_000);
  const stale = await inventory(w, onVictim[0]!.id).catch(() => undefined);
  t.comment(`the promoted replica's copy of product ${onVictim[0]!.id}: ${JSON.stringify(stale)}`);

  const after = await rebuilt(w, products, onVictim, before);
  for (const p of onVictim) t.ok(after.get(p.id)! > before.get(p.id)!, `product ${p.id} (lost shard): rebuilt`);
  for (const p of elsewhere)
    t.equal(after.get(p.id), before.get(p.id), `product ${p.id} (${p.master.address}): untouched`);
  for (const p of products) {
    t.match(await inventory(w, p.id), { stock: STOCK, sold: STOCK }, `product ${p.id}: sold out in Redis`);
    const late = await buyAll(w, p.id);
    t.same(late, { bought: 0, refusal: 409 }, `product ${p.id}: nothing more to sell`);
    t.equal(await w.liveUnits(p.id), STOCK, `product ${p.id}: ${STOCK} units in live orders, not more`);
  }
});

t.test('a master restarted empty on its own slots: its products rebuilt, the others untouched', async (t) => {
  const cluster = await startRedisCluster({ masters: 3, nodeTimeoutMs: 1000 });
  t.teardown(() => cluster.stop());
  const w = await lossWorld(t, cluster);
  const [victim] = await cluster.masters();
  const products = await productsAround(w, cluster, victim!);
  const onVictim = products.filter((p) => p.master === victim);
  const elsewhere = products.filter((p) => p.master !== victim);
  for (const p of products) {
    t.equal(await buy(w, p.id, 2, 'early'), 201, `product ${p.id}: 2 sold`);
    const hold = await w.app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: p.id, qty: 1 } });
    t.equal(hold.statusCode, 201, `product ${p.id}: 1 held`);
  }
  const before = await w.generations(products.map((p) => p.id));

  // Killed, and started again on its port with its nodes.conf: it rejoins owning the same slots, with no data.
  await victim!.kill();
  await victim!.start();
  await cluster.waitUntilOk(10_000);
  t.equal(
    await cluster.ownerOf(calculateSlot(`${productTag(w.prefix, onVictim[0]!.id)}:inventory`)),
    victim,
    'it serves its slots again',
  );

  const after = await rebuilt(w, products, onVictim, before);
  for (const p of onVictim) {
    t.ok(after.get(p.id)! > before.get(p.id)!, `product ${p.id} (lost shard): rebuilt`);
    t.match(
      await inventory(w, p.id),
      { stock: STOCK, held: 0, sold: 2 },
      `product ${p.id}: sold from Postgres, its hold gone`,
    );
  }
  for (const p of elsewhere) {
    t.equal(after.get(p.id), before.get(p.id), `product ${p.id} (${p.master.address}): untouched`);
    t.match(await inventory(w, p.id), { stock: STOCK, held: 1, sold: 2 }, `product ${p.id}: its hold kept`);
  }
  for (const p of products) {
    const late = await buyAll(w, p.id);
    const left = p.master === victim ? STOCK - 2 : STOCK - 3;
    t.same(late, { bought: left, refusal: 409 }, `product ${p.id}: exactly the ${left} units left were sold`);
    t.equal(await w.liveUnits(p.id), p.master === victim ? STOCK : STOCK - 1, `product ${p.id}: no unit sold twice`);
  }
});
