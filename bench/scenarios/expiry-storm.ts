import { productKeys } from '../../src/redis/keys.js';
import { createProduct, getProduct } from '../lib/api.js';
import type { Deployment } from '../lib/environment.js';
import { checkInvariants, type Check } from '../lib/invariants.js';
import { describeLoad, runLoad } from '../lib/load.js';
import { sleep } from '../lib/processes.js';
import { countOf, holdRequest, HUGE_STOCK, type Figures, type Scenario } from '../lib/scenario.js';

/** Hold lifetime of the storm's holds: short, so the run does not wait long for them to fall due. */
const STORM_TTL_SECONDS = 5;

interface SweepWatch {
  /** Date.now() of the last poll that still saw every storm hold held (just before the sweeper's first release). */
  lastFullAt: number | undefined;
  /** Date.now() of the first poll that saw none held. */
  zeroAt: number | undefined;
  lastHeld: number;
}

/** Polls the storm product's `held` every `intervalMs` until it is 0 or `timeoutMs` passes. */
async function watchHeld(
  read: () => Promise<number>,
  initial: number,
  intervalMs: number,
  timeoutMs: number,
): Promise<SweepWatch> {
  const watch: SweepWatch = { lastFullAt: undefined, zeroAt: undefined, lastHeld: initial };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let held: number;
    try {
      held = await read();
    } catch {
      await sleep(intervalMs); // the service is (re)starting
      continue;
    }
    const now = Date.now();
    watch.lastHeld = held;
    if (held >= initial) watch.lastFullAt = now;
    if (held === 0) {
      watch.zeroAt = now;
      break;
    }
    await sleep(intervalMs);
  }
  return watch;
}

function percentile(values: number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

/**
 * 100,000 holds (5,000 in the smoke form) falling due at the same moment while hot-sku load runs on another
 * product: how long until the sweeper has released them all, and what the hold p99 is meanwhile.
 *
 * Creating 100,000 holds over HTTP takes longer than a hold lives, so with the sweeper running they would fall
 * due, and be released, one by one as they were made. When the bench starts the service itself, the storm gets
 * a deployment of its own that makes the holds (HOLD_TTL_SECONDS=5) with its sweeper off, is stopped until every
 * hold is past its expiry, and is started again with its sweeper on: the whole backlog is due at once, as after
 * a sale's peak, and the release is timed from the sweeper's first release to `held` = 0 (polled in Redis every
 * 10 ms). Against BENCH_URL the bench cannot do that; it reports how long after the last hold fell due all were
 * released instead.
 */
export const expiryStorm: Scenario = {
  name: 'expiry-storm',
  summary: '100,000 holds (smoke 5,000) due at once while hot-sku load runs: release time, hold p99 meanwhile',
  async run({ settings, environment, deployment: shared, log }) {
    const managed = environment
      ? await environment.launchService('service-storm', {
          HOLD_TTL_SECONDS: String(STORM_TTL_SECONDS),
          SWEEP_INTERVAL_MS: '0',
        })
      : undefined;
    const deployment: Deployment = managed ?? shared;
    try {
      const stormId = await createProduct(deployment.url, deployment.adminToken, {
        name: 'bench storm',
        stock: HUGE_STOCK,
      });
      const hotId = await createProduct(deployment.url, deployment.adminToken, {
        name: 'bench storm hot-sku',
        stock: HUGE_STOCK,
      });

      // 1. The storm's holds, as fast as the service takes them.
      const wanted = settings.stormHolds;
      let firstDue = Number.POSITIVE_INFINITY;
      let lastDue = 0;
      log(`expiry-storm: creating ${wanted.toLocaleString('en-US')} holds on product ${stormId}`);
      const creation = await runLoad({
        title: 'expiry-storm: creating the holds',
        url: deployment.url,
        connections: Math.min(wanted, settings.connections * 2),
        amount: wanted,
        expected: [201],
        requests: [
          {
            ...holdRequest(stormId),
            onResponse: (status, body) => {
              if (status !== 201) return;
              const due = Date.parse((JSON.parse(body) as { expires_at: string }).expires_at);
              firstDue = Math.min(firstDue, due);
              lastDue = Math.max(lastDue, due);
            },
          },
        ],
      });
      const created = countOf(creation, 201);
      log(`expiry-storm: ${created.toLocaleString('en-US')} holds created (${describeLoad(creation)})`);
      const heldBefore = (await getProduct(deployment.url, stormId)).held;

      // 2. All of them due at once (managed), or wait for them to fall due (BENCH_URL).
      const stores = deployment.stores;
      const readHeld = stores
        ? async () => Number(await stores.redis.hget(productKeys(stores.prefix, stormId).inventory, 'held'))
        : async () => (await getProduct(deployment.url, stormId)).held;
      const timeoutMs = (settings.smoke ? 60 : 180) * 1000;
      let watching: Promise<SweepWatch>;
      if (managed) {
        await managed.stop();
        const wait = lastDue + 100 - Date.now();
        log(
          `expiry-storm: service stopped; waiting ${(Math.max(0, wait) / 1000).toFixed(1)} s until every hold is past its expiry`,
        );
        await sleep(Math.max(0, wait));
        watching = watchHeld(readHeld, created, 10, timeoutMs);
        await managed.start(); // default lifetime (hot-sku holds do not expire meanwhile), sweeper on
        log('expiry-storm: service started again with its sweeper on');
      } else {
        const wait = firstDue - 1000 - Date.now();
        log(
          `expiry-storm: waiting ${(Math.max(0, wait) / 1000).toFixed(0)} s for the holds to fall due (the deployment's hold lifetime)`,
        );
        await sleep(Math.max(0, wait));
        watching = watchHeld(readHeld, created, 50, timeoutMs + Math.max(0, lastDue - Date.now()));
      }

      // 3. hot-sku load on another product while the sweep runs.
      const answeredAt: number[] = [];
      const latencies: number[] = [];
      const loadStartedAt = Date.now();
      const load = await runLoad({
        title: 'expiry-storm: hot-sku during the sweep',
        url: deployment.url,
        connections: settings.connections,
        duration: settings.duration,
        requests: [holdRequest(hotId)],
        expected: [201],
        pid: deployment.pid,
        onResponse: (_status, latencyMs, sinceStartMs) => {
          answeredAt.push(loadStartedAt + sinceStartMs);
          latencies.push(latencyMs);
        },
      });
      log(`expiry-storm: ${describeLoad(load)}`);
      const watch = await watching;

      // 4. Figures.
      const figures: Figures = { stormHolds: created };
      const notes: string[] = [];
      const sweepStart = managed ? watch.lastFullAt : lastDue;
      if (watch.zeroAt !== undefined && sweepStart !== undefined) {
        figures.releaseSeconds = Math.max(0.001, (watch.zeroAt - sweepStart) / 1000);
        const during = latencies.filter((_, i) => answeredAt[i]! >= sweepStart && answeredAt[i]! <= watch.zeroAt!);
        const after = latencies.filter((_, i) => answeredAt[i]! > watch.zeroAt!);
        figures.sweepHoldP99 = percentile(during, 0.99);
        figures.afterSweepHoldP99 = percentile(after, 0.99);
        if (managed) {
          figures.releasedPerSecond = created / figures.releaseSeconds;
          notes.push(
            `${created.toLocaleString('en-US')} holds due at once released in ${figures.releaseSeconds.toFixed(2)} s ` +
              `= ${Math.round(figures.releasedPerSecond).toLocaleString('en-US')} holds/s`,
          );
        } else {
          notes.push(
            `BENCH_URL: the holds fell due over ${((lastDue - firstDue) / 1000).toFixed(1)} s (as fast as they were made); ` +
              `all released ${figures.releaseSeconds.toFixed(2)} s after the last one fell due (release rate not measurable this way)`,
          );
        }
        notes.push(
          figures.sweepHoldP99 === undefined
            ? 'no hot-sku answer arrived while the sweep ran (it ended before the load got going)'
            : `hold p99 while the sweep ran ${figures.sweepHoldP99.toFixed(0)} ms (${during.length.toLocaleString('en-US')} answers), ` +
                `after it ${figures.afterSweepHoldP99?.toFixed(0) ?? '—'} ms`,
        );
        if (managed) notes.push('the service had just restarted (cold JIT) when the sweep and the load began');
      }

      const storm = async (): Promise<Check[]> => [
        {
          name: 'expiry-storm: every created hold was held before the sweep',
          ok: heldBefore === created,
          detail: `held ${heldBefore}, holds created ${created}`,
        },
        {
          name: 'expiry-storm: every storm hold released (held = 0)',
          ok: watch.zeroAt !== undefined,
          detail:
            watch.zeroAt !== undefined ? 'held reached 0' : `still ${watch.lastHeld} held after ${timeoutMs / 1000} s`,
        },
      ];
      const grants = new Map([
        [stormId, created],
        [hotId, countOf(load, 201)],
      ]);
      deployment.assertAlive();
      const invariants = await checkInvariants(deployment, [stormId, hotId], grants, storm);
      return { name: 'expiry-storm', load, figures, notes, invariants };
    } finally {
      await managed?.stop();
    }
  },
};
