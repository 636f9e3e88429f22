import { createProduct, mapConcurrently } from '../lib/api.js';
import { checkInvariants } from '../lib/invariants.js';
import { describeLoad, JSON_HEADERS, runLoad } from '../lib/load.js';
import type { Scenario } from '../lib/scenario.js';

const STOCK_PER_PRODUCT = 1_000;
const CREATE_CONCURRENCY = 32;

/** What one autocannon connection remembers between choosing a product and hearing the answer. */
interface Pick {
  productId?: number;
}

/**
 * A catalogue of 10,000 products (500 in the smoke form), created through the admin API with bounded
 * concurrency, and holds spread over it at random: many cold keys instead of one hot one.
 */
export const catalogue: Scenario = {
  name: 'catalogue',
  summary: '10,000 products (smoke 500); each hold on a product picked at random',
  async run({ settings, deployment, log }) {
    const count = settings.catalogueProducts;
    log(
      `catalogue: creating ${count.toLocaleString('en-US')} products through the admin API, ${CREATE_CONCURRENCY} at a time`,
    );
    const createStarted = performance.now();
    const ids = await mapConcurrently(
      Array.from({ length: count }, (_, i) => i),
      CREATE_CONCURRENCY,
      (i) =>
        createProduct(deployment.url, deployment.adminToken, {
          name: `bench catalogue ${i}`,
          stock: STOCK_PER_PRODUCT,
        }),
    );
    const createSeconds = (performance.now() - createStarted) / 1000;
    log(`catalogue: ${count} products in ${createSeconds.toFixed(1)} s`);

    const grants = new Map<number, number>();
    const load = await runLoad({
      title: 'catalogue',
      url: deployment.url,
      connections: settings.connections,
      duration: settings.duration,
      requests: [
        {
          method: 'POST',
          path: '/api/holds',
          headers: { ...JSON_HEADERS },
          setupRequest: (request, context: Pick) => {
            const productId = ids[Math.floor(Math.random() * ids.length)]!;
            context.productId = productId;
            return { ...request, body: JSON.stringify({ product_id: productId, qty: 1 }) };
          },
          onResponse: (status, _body, context: Pick) => {
            if (status === 201 && context.productId !== undefined) {
              grants.set(context.productId, (grants.get(context.productId) ?? 0) + 1);
            }
          },
        },
      ],
      expected: [201],
      pid: deployment.pid,
    });
    log(`catalogue: ${describeLoad(load)}`);
    const invariants = await checkInvariants(deployment, ids, grants);
    return {
      name: 'catalogue',
      load,
      figures: { productsCreatedPerSecond: count / createSeconds },
      notes: [
        `${count.toLocaleString('en-US')} products created through the API in ${createSeconds.toFixed(1)} s (${Math.round(count / createSeconds).toLocaleString('en-US')}/s, ${CREATE_CONCURRENCY} concurrent)`,
      ],
      invariants,
    };
  },
};
