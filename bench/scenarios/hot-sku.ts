import { productKeys } from '../../src/redis/keys.js';
import { createProduct } from '../lib/api.js';
import { checkInvariants } from '../lib/invariants.js';
import { describeLoad, runLoad } from '../lib/load.js';
import { productKeysMemory, usedMemory } from '../lib/redis-memory.js';
import type { Redis } from 'ioredis';
import {
  countOf,
  holdRequest,
  HUGE_STOCK,
  type Figures,
  type Scenario,
  type ScenarioContext,
  type ScenarioResult,
} from '../lib/scenario.js';

/**
 * One product with huge stock, every request a hold of one unit: the hot path alone. Also measures Redis's
 * memory per active hold: INFO used_memory before and after the load (none of its holds expires meanwhile),
 * divided by the holds created, and, as a cross-check immune to other Redis clients, MEMORY USAGE of the
 * product's keys divided by its hold records.
 */
export const hotSku: Scenario = {
  name: 'hot-sku',
  summary: 'one product with huge stock; every request holds 1 unit (--buckets N: beside one split into N buckets)',
  async run(context) {
    if (context.settings.buckets > 1) return bucketsSideBySide(context);
    const { settings, deployment, log } = context;
    const productId = await createProduct(deployment.url, deployment.adminToken, {
      name: 'bench hot-sku',
      stock: HUGE_STOCK,
    });
    const stores = deployment.stores;
    const memoryBefore = stores ? await usedMemory(stores.redis) : undefined;
    const load = await runLoad({
      title: 'hot-sku',
      url: deployment.url,
      connections: settings.connections,
      duration: settings.duration,
      overallRate: settings.rate,
      requests: [holdRequest(productId)],
      expected: [201],
      pid: deployment.pid,
    });
    log(`hot-sku: ${describeLoad(load)}`);
    const granted = countOf(load, 201);
    const figures: Figures = { activeHolds: granted };
    const notes: string[] = [];
    if (stores && memoryBefore !== undefined && granted > 0) {
      const memoryAfter = await usedMemory(stores.redis);
      figures.bytesPerHold = (memoryAfter - memoryBefore) / granted;
      const records = await stores.redis.hlen(productKeys(stores.prefix, productId).holds);
      figures.bytesPerHoldKeys =
        (await productKeysMemory(stores.redis, stores.prefix, productId)) / Math.max(1, records);
      notes.push(
        `Redis: used_memory +${((memoryAfter - memoryBefore) / 2 ** 20).toFixed(1)} MiB for ${granted.toLocaleString('en-US')} ` +
          `active holds = ${figures.bytesPerHold.toFixed(0)} B/hold; the product's keys alone (MEMORY USAGE) ` +
          `${figures.bytesPerHoldKeys.toFixed(0)} B/hold`,
      );
    } else if (!stores) {
      notes.push('Redis memory per hold not measured: no store access');
    }
    const invariants = await checkInvariants(deployment, [productId], new Map([[productId, granted]]));
    return { name: 'hot-sku', load, figures, notes, invariants };
  },
};

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** Redis's own time in scripts so far (µs), from INFO commandstats: what a hold costs the shard. */
async function scriptMicros(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  let usec = 0;
  for (const match of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=\d+,usec=(\d+)/gm)) usec += Number(match[1]);
  return usec;
}

/**
 * hot-sku --buckets N: a product of one bucket and one split into N, loaded in turn, `rounds` rounds of each, in
 * one deployment: req/s, p99 and Redis script µs per granted hold (INFO commandstats), medians and the ratio.
 */
async function bucketsSideBySide({ settings, deployment, log }: ScenarioContext): Promise<ScenarioResult> {
  const products = new Map<number, number>();
  for (const buckets of [1, settings.buckets])
    products.set(
      buckets,
      await createProduct(deployment.url, deployment.adminToken, {
        name: `bench hot-sku ${buckets} bucket(s)`,
        stock: HUGE_STOCK,
        buckets,
      }),
    );
  const rounds = new Map<number, { rps: number; p99: number; scriptUsPerHold: number | undefined }[]>(
    [...products.keys()].map((k) => [k, []]),
  );
  const granted = new Map<number, number>([...products.values()].map((id) => [id, 0]));
  let last;
  for (let round = 1; round <= settings.rounds; round++) {
    for (const [buckets, productId] of products) {
      const before = deployment.stores ? await scriptMicros(deployment.stores.redis) : undefined;
      const load = await runLoad({
        title: `hot-sku ${buckets} bucket(s), round ${round}`,
        url: deployment.url,
        connections: settings.connections,
        duration: settings.duration,
        overallRate: settings.rate,
        requests: [holdRequest(productId)],
        expected: [201],
        pid: deployment.pid,
      });
      const holds = countOf(load, 201);
      granted.set(productId, granted.get(productId)! + holds);
      const after = deployment.stores ? await scriptMicros(deployment.stores.redis) : undefined;
      const scriptUsPerHold =
        before !== undefined && after !== undefined && holds > 0 ? (after - before) / holds : undefined;
      rounds.get(buckets)!.push({ rps: load.requestsPerSecond, p99: load.latencyMs.p99, scriptUsPerHold });
      log(`hot-sku ${buckets} bucket(s), round ${round}: ${describeLoad(load)}`);
      last = load;
    }
  }
  const summary = (buckets: number) => {
    const r = rounds.get(buckets)!;
    const script = r.flatMap((x) => (x.scriptUsPerHold === undefined ? [] : [x.scriptUsPerHold]));
    return {
      rps: median(r.map((x) => x.rps)),
      p99: median(r.map((x) => x.p99)),
      script: script.length > 0 ? median(script) : undefined,
      each: r.map((x) => Math.round(x.rps)).join(', '),
    };
  };
  const one = summary(1);
  const split = summary(settings.buckets);
  const notes = [1, settings.buckets].map((k) => {
    const s = summary(k);
    return (
      `${k} bucket(s): ${Math.round(s.rps)} req/s median (${s.each}), p99 ${s.p99} ms, ` +
      `Redis script ${s.script === undefined ? 'n/a' : s.script.toFixed(1)} µs/hold`
    );
  });
  notes.push(
    `${settings.buckets} buckets vs 1: req/s x${(split.rps / one.rps).toFixed(2)}` +
      (one.script && split.script ? `, Redis script time per hold x${(split.script / one.script).toFixed(2)}` : ''),
  );
  for (const note of notes) log(`hot-sku --buckets: ${note}`);
  const invariants = await checkInvariants(deployment, [...products.values()], granted);
  return {
    name: 'hot-sku',
    load: last!,
    figures: { activeHolds: [...granted.values()].reduce((a, b) => a + b, 0) },
    notes,
    invariants,
  };
}
