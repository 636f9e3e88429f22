/**
 * The references every figure is also given as a ratio to, measured in the same run: the ceiling (bare Fastify,
 * same schemas, constant answer: HTTP's own cost on this machine) and the seed's design (a Postgres transaction
 * per request, bench/baselines/seed.ts), both under the hot-sku settings; and the seed's checkout, under the
 * checkout scenario's requests (lib/checkout.ts).
 */
import { createProduct } from './api.js';
import { runCheckouts } from './checkout.js';
import type { BenchEnvironment, ReferenceServer } from './environment.js';
import { describeLoad, runLoad, type LoadSummary } from './load.js';
import { holdRequest, HUGE_STOCK } from './scenario.js';
import type { Settings } from './settings.js';

export type ReferenceName = 'ceiling' | 'seed' | 'seed-checkout';

export const REFERENCE_NAMES: readonly ReferenceName[] = ['ceiling', 'seed', 'seed-checkout'];

/** A reference's load; the seed's checkout also counts its complete checkouts. */
export interface ReferenceLoad extends LoadSummary {
  checkoutsPerSecond?: number;
}

export async function measureReference(
  environment: BenchEnvironment,
  name: ReferenceName,
  settings: Settings,
  log: (line: string) => void,
): Promise<ReferenceLoad> {
  log(`reference ${name}: starting`);
  const reference: ReferenceServer =
    name === 'ceiling' ? await environment.startCeiling() : await environment.startSeed(name);
  try {
    const load = name === 'seed-checkout' ? await checkouts(reference, settings) : await holds(reference, settings);
    const rate = load.checkoutsPerSecond === undefined ? '' : `; ${Math.round(load.checkoutsPerSecond)} checkouts/s`;
    log(`reference ${name}: ${describeLoad(load)}${rate}`);
    if (reference.server.crashed()) throw new Error(`reference ${name} exited:\n${reference.server.tail()}`);
    // A reference that completes no checkout measures nothing: its figure would make any ratio look good.
    if (load.checkoutsPerSecond === 0) throw new Error(`reference ${name} completed no checkout`);
    return load;
  } finally {
    await reference.server.stop();
  }
}

/** hot-sku's load: holds of one unit on one product, after the same warm-up. */
async function holds(reference: ReferenceServer, settings: Settings): Promise<ReferenceLoad> {
  // The ceiling answers any product; the seed needs one in its table.
  const productId =
    reference.name === 'seed'
      ? await createProduct(reference.url, '', { name: 'bench hot-sku', stock: HUGE_STOCK })
      : 1;
  const base = {
    url: reference.url,
    connections: settings.connections,
    requests: [holdRequest(productId)],
    expected: [201],
  };
  await runLoad({ ...base, title: `reference ${reference.name}: warm-up`, duration: settings.warmup });
  return runLoad({
    ...base,
    title: `reference ${reference.name}`,
    duration: settings.duration,
    pid: reference.server.pid,
  });
}

/** The checkout scenario's load, on a product of the same price, after a warm-up of the same sequence. */
async function checkouts(reference: ReferenceServer, settings: Settings): Promise<ReferenceLoad> {
  const productId = await createProduct(reference.url, '', {
    name: 'bench checkout',
    stock: HUGE_STOCK,
    price_cents: 4_999,
  });
  const base = {
    url: reference.url,
    productId,
    webhookSecret: reference.webhookSecret,
    connections: settings.connections,
  };
  await runCheckouts({ ...base, title: `reference ${reference.name}: warm-up`, duration: settings.warmup });
  const { load, checkoutsPerSecond } = await runCheckouts({
    ...base,
    title: `reference ${reference.name}`,
    duration: settings.duration,
    pid: reference.server.pid,
  });
  return { ...load, checkoutsPerSecond };
}
