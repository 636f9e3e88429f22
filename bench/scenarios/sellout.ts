import { createProduct, getProduct } from '../lib/api.js';
import { checkInvariants, type Check } from '../lib/invariants.js';
import { describeLoad, runLoad } from '../lib/load.js';
import { holdRequest, type Scenario } from '../lib/scenario.js';

// The load goes on this long after the last unit went, so the refusals of a sold-out product are in it too.
const TAIL_MS = 500;

/**
 * A product with limited stock (10,000; 2,000 in the smoke form) and everyone trying to hold a unit: how long
 * until it is sold out, and exactly its stock granted (counted from the 201s, and in Redis) — never more.
 */
export const sellout: Scenario = {
  name: 'sellout',
  summary: 'stock 10,000 (smoke 2,000) under full load: time to sell out, exactly the stock granted',
  async run({ settings, deployment, log }) {
    const stock = settings.selloutStock;
    const productId = await createProduct(deployment.url, deployment.adminToken, { name: 'bench sellout', stock });
    let granted = 0;
    let soldOutAtMs: number | undefined;
    const maxSeconds = settings.smoke ? 30 : 120;
    const load = await runLoad({
      title: 'sellout',
      url: deployment.url,
      connections: settings.connections,
      duration: maxSeconds,
      requests: [holdRequest(productId)],
      expected: [201, 409],
      pid: deployment.pid,
      onResponse: (status, _latency, sinceStartMs) => {
        if (status === 201 && ++granted === stock) soldOutAtMs = sinceStartMs;
        return soldOutAtMs !== undefined && sinceStartMs > soldOutAtMs + TAIL_MS;
      },
    });
    log(`sellout: ${describeLoad(load)}`);
    const notes = [
      soldOutAtMs === undefined
        ? `not sold out after ${maxSeconds} s: ${granted} of ${stock} units granted`
        : `sold out in ${(soldOutAtMs / 1000).toFixed(2)} s; ${granted.toLocaleString('en-US')} units granted for a stock of ${stock.toLocaleString('en-US')}`,
    ];
    const exact = async (): Promise<Check[]> => {
      const product = await getProduct(deployment.url, productId);
      return [
        {
          name: 'sellout: 201s = stock, exactly',
          ok: granted === stock,
          detail: `${granted} units granted by 201s, stock ${stock}`,
        },
        {
          name: 'sellout: held + sold = stock, nothing left',
          ok: product.held + product.sold === stock && product.available_stock === 0,
          detail: `held ${product.held}, sold ${product.sold}, available ${product.available_stock}`,
        },
      ];
    };
    const invariants = await checkInvariants(deployment, [productId], new Map([[productId, granted]]), exact);
    return {
      name: 'sellout',
      load,
      figures: { soldOutSeconds: soldOutAtMs === undefined ? undefined : soldOutAtMs / 1000, unitsGranted: granted },
      notes,
      invariants,
    };
  },
};
