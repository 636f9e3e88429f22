/**
 * The two references every figure is also given as a ratio to, measured in the same run under the same hot-sku
 * settings: the ceiling (bare Fastify, same schemas, constant answer: HTTP's own cost on this machine) and the
 * seed's design (a Postgres transaction per hold, bench/baselines/seed.ts).
 */
import { createProduct } from './api.js';
import type { BenchEnvironment, ReferenceServer } from './environment.js';
import { describeLoad, runLoad, type LoadSummary } from './load.js';
import { holdRequest, HUGE_STOCK } from './scenario.js';
import type { Settings } from './settings.js';

export type ReferenceName = 'ceiling' | 'seed';

export async function measureReference(
  environment: BenchEnvironment,
  name: ReferenceName,
  settings: Settings,
  log: (line: string) => void,
): Promise<LoadSummary> {
  log(`reference ${name}: starting`);
  const reference: ReferenceServer =
    name === 'ceiling' ? await environment.startCeiling() : await environment.startSeed();
  try {
    // The ceiling answers any product; the seed needs one in its table.
    const productId =
      name === 'seed' ? await createProduct(reference.url, '', { name: 'bench hot-sku', stock: HUGE_STOCK }) : 1;
    const base = {
      url: reference.url,
      connections: settings.connections,
      requests: [holdRequest(productId)],
      expected: [201],
    };
    await runLoad({ ...base, title: `reference ${name}: warm-up`, duration: settings.warmup });
    const load = await runLoad({
      ...base,
      title: `reference ${name}`,
      duration: settings.duration,
      pid: reference.server.pid,
    });
    log(`reference ${name}: ${describeLoad(load)}`);
    if (reference.server.crashed()) throw new Error(`reference ${name} exited:\n${reference.server.tail()}`);
    return load;
  } finally {
    await reference.server.stop();
  }
}
