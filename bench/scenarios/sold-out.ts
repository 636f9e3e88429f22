import { createProduct } from '../lib/api.js';
import { checkInvariants } from '../lib/invariants.js';
import { describeLoad, runLoad } from '../lib/load.js';
import { countOf, holdRequest, type Scenario } from '../lib/scenario.js';

/** A product with stock 0: every hold is refused. 409 is the expected answer and counts as success here. */
export const soldOut: Scenario = {
  name: 'sold-out',
  summary: 'stock 0: the rejection path; 409s are the expected answer',
  async run({ settings, deployment, log }) {
    const productId = await createProduct(deployment.url, deployment.adminToken, { name: 'bench sold-out', stock: 0 });
    const load = await runLoad({
      title: 'sold-out',
      url: deployment.url,
      connections: settings.connections,
      duration: settings.duration,
      requests: [holdRequest(productId)],
      expected: [409],
      pid: deployment.pid,
    });
    log(`sold-out: ${describeLoad(load)}`);
    const invariants = await checkInvariants(deployment, [productId], new Map([[productId, countOf(load, 201)]]));
    return { name: 'sold-out', load, figures: {}, notes: [], invariants };
  },
};
