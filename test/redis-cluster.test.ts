import calculateSlot from 'cluster-key-slot';
import t, { type Test } from 'tap';
import { productState } from './support/api.js';
import { buildTestApp, createProduct, listen, type TestApp } from './support/app.js';
import { request, tally } from './support/http.js';
import { startRedisCluster, type ClusterNode, type PrivateRedisCluster } from './support/private-redis-cluster.js';
import { heldUnits, indexedHolds, inventory } from './support/redis-state.js';
import type { Config } from '../src/config.js';
import { productTag } from '../src/redis/keys.js';

// The service on a Redis Cluster of this file's own: three masters, no replicas (test/redis-cluster-failover
// kills masters; here the slots move by resharding only).
const UNLIMITED = { RATE_LIMIT: 'off' } as const;

let cluster: PrivateRedisCluster;
t.before(async () => {
  cluster = await startRedisCluster({ masters: 3 });
});
t.teardown(() => cluster.stop());

async function clusterApp(t: Test, overrides: Partial<Config> = {}): Promise<TestApp> {
  return buildTestApp(t, { REDIS_CLUSTER_NODES: cluster.nodeList, ...UNLIMITED, ...overrides });
}

/** The slot of a product's keys (all share its hash tag). */
function slotOf(prefix: string, productId: number): number {
  return calculateSlot(`${productTag(prefix, productId)}:inventory`);
}

/** Creates products until every master serves at least `perMaster` of them; returns them with their master. */
async function productsOnEveryMaster(
  service: TestApp,
  stock: number,
  perMaster = 1,
): Promise<{ id: number; master: ClusterNode }[]> {
  const masters = await cluster.masters();
  const products: { id: number; master: ClusterNode }[] = [];
  const count = (m: ClusterNode) => products.filter((p) => p.master === m).length;
  while (masters.some((m) => count(m) < perMaster)) {
    const { id } = await createProduct(service.app, { stock });
    products.push({ id, master: await cluster.ownerOf(slotOf(service.prefix, id)) });
    if (products.length > 60) throw new Error('products do not spread over the masters');
  }
  return products;
}

const hold = (base: string, body: Record<string, unknown>) =>
  request<{ hold_id?: string; code?: string }>(base, 'POST', '/api/holds', body);

t.test('concurrent holds on products spread over all three masters: exact per product', async (t) => {
  const service = await clusterApp(t);
  const base = await listen(service.app);
  const products = await productsOnEveryMaster(service, 40);
  t.equal(new Set(products.map((p) => p.master)).size, 3, 'the products live on three masters');

  // 100 one-unit requests per product, all at once and interleaved: the batches of one turn span all masters.
  const requests = products.flatMap((p) =>
    Array.from({ length: 100 }, (_, i) => ({ product_id: p.id, qty: 1, customer_id: `c${p.id}-${i}` })),
  );
  const answers = await Promise.all(requests.map((body) => hold(base, body)));
  for (const p of products) {
    const mine = answers.filter((_a, i) => requests[i]!.product_id === p.id);
    const statuses = tally(mine.map((a) => a.status));
    t.equal(statuses.get(201), 40, `product ${p.id} (${p.master.address}): 40 granted`);
    t.equal(statuses.get(409), 60, `product ${p.id}: 60 refused`);
    t.equal(statuses.size, 2, `product ${p.id}: no other answer`);
    t.match(await productState(base, p.id), { stock: 40, held: 40, sold: 0, available_stock: 0 });
    t.equal(await heldUnits(service, p.id), 40, `product ${p.id}: its records agree`);
    t.equal(await indexedHolds(service, p.id), 40, `product ${p.id}: its expiry index agrees`);
    const ids = mine.flatMap((a) => (a.status === 201 ? [a.body.hold_id] : []));
    t.equal(new Set(ids).size, 40, `product ${p.id}: every hold its own id`);
  }
  // The keys are on the master that serves the product's slot, and nowhere else.
  for (const p of products) {
    const keys = await p.master.client().call('CLUSTER', 'COUNTKEYSINSLOT', slotOf(service.prefix, p.id));
    t.ok(Number(keys) >= 3, `product ${p.id}: its keys are on ${p.master.address}`);
  }
  t.match(await inventory(service, products[0]!.id), { stock: 40, held: 40 });
});
