import { productKeys } from '../../src/redis/keys.js';
import { createProduct } from '../lib/api.js';
import { checkInvariants } from '../lib/invariants.js';
import { describeLoad, runLoad } from '../lib/load.js';
import { productKeysMemory, usedMemory } from '../lib/redis-memory.js';
import { countOf, holdRequest, HUGE_STOCK, type Figures, type Scenario } from '../lib/scenario.js';

/**
 * One product with huge stock, every request a hold of one unit: the hot path alone. Also measures Redis's
 * memory per active hold: INFO used_memory before and after the load (none of its holds expires meanwhile),
 * divided by the holds created, and, as a cross-check immune to other Redis clients, MEMORY USAGE of the
 * product's keys divided by its hold records.
 */
export const hotSku: Scenario = {
  name: 'hot-sku',
  summary: 'one product with huge stock; every request holds 1 unit',
  async run({ settings, deployment, log }) {
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
