import { createProduct } from '../lib/api.js';
import { runCheckouts } from '../lib/checkout.js';
import { describeGroupCommits, groupCommits } from '../lib/group-commits.js';
import { checkInvariants } from '../lib/invariants.js';
import { describeLoad } from '../lib/load.js';
import { HUGE_STOCK, type Scenario } from '../lib/scenario.js';

/**
 * Each virtual user (connection), over and over: hold one unit, turn the hold into an order, send the payment
 * provider's signed `success` webhook for it (lib/checkout.ts). The table's requests/s and latencies are per
 * request, checkouts/s counts webhooks answered `paid`.
 */
export const checkout: Scenario = {
  name: 'checkout',
  summary: 'each user: hold → order → signed success webhook, repeated',
  async run({ settings, deployment, log }) {
    const productId = await createProduct(deployment.url, deployment.adminToken, {
      name: 'bench checkout',
      stock: HUGE_STOCK,
      price_cents: 4_999,
    });
    const { load, holds, paid, checkoutsPerSecond } = await runCheckouts({
      title: 'checkout',
      url: deployment.url,
      productId,
      webhookSecret: deployment.webhookSecret,
      connections: settings.connections,
      duration: settings.duration,
      pid: deployment.pid,
    });
    log(`checkout: ${describeLoad(load)}; ${Math.round(checkoutsPerSecond)} checkouts/s`);
    const invariants = await checkInvariants(deployment, [productId], new Map([[productId, holds]]));
    // What group commit did in this run, read from the rows themselves (none without store access).
    const { stores } = deployment;
    const batching = stores
      ? [
          describeGroupCommits('orders', await groupCommits(stores, 'hold_claims')),
          describeGroupCommits('webhooks', await groupCommits(stores, 'processed_webhooks')),
        ]
      : [];
    batching.forEach(log);
    return {
      name: 'checkout',
      load,
      figures: { checkoutsPerSecond, unitsGranted: holds },
      notes: [
        `${Math.round(checkoutsPerSecond).toLocaleString('en-US')} checkouts/s (${paid.toLocaleString('en-US')} paid of ${holds.toLocaleString('en-US')} holds; 3 requests each)`,
        ...batching,
      ],
      invariants,
    };
  },
};
