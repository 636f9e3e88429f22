/**
 * `npm run bench -- --metrics-cost [scenario...] [--rounds N] [--metrics-excerpt FILE]`: what the metrics cost.
 * Two deployments of the same build run side by side, one with METRICS=off and one with METRICS=admin (the
 * default); each round runs every scenario against both, one right after the other, the order swapped every
 * round so neither always runs on the warmer or the fuller Redis. The figures are medians over the rounds of
 * each one's requests/s, p99 and server CPU per request, and the ratio of "admin" to "off" (1.00: no cost).
 */
import { writeFileSync } from 'node:fs';
import type { ManagedDeployment, BenchEnvironment } from './environment.js';
import { runLoad } from './load.js';
import { createProduct } from './api.js';
import { holdRequest, HUGE_STOCK, type ScenarioContext, type ScenarioResult } from './scenario.js';
import type { ScenarioName, Settings } from './settings.js';
import { SCENARIOS } from '../scenarios/index.js';

interface Round {
  rps: number;
  p99: number;
  /** Server CPU time per request, µs (CPU % of one core × 10,000 / requests/s). */
  cpuUsPerRequest: number | undefined;
  invariantsOk: boolean;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

function roundOf(result: ScenarioResult): Round {
  const { load } = result;
  const cpu = load.usage?.cpuPercent;
  return {
    rps: load.requestsPerSecond,
    p99: load.latencyMs.p99,
    cpuUsPerRequest:
      cpu === undefined || load.requestsPerSecond === 0 ? undefined : (cpu * 1e4) / load.requestsPerSecond,
    invariantsOk: result.invariants.ok,
  };
}

/** Runs the comparison, prints its table on stdout; false when an invariant failed. */
export async function measureMetricsCost(
  environment: BenchEnvironment,
  settings: Settings,
  overrides: Record<string, string>,
  log: (line: string) => void,
): Promise<boolean> {
  const modes = ['off', 'admin'] as const;
  const deployments = new Map<(typeof modes)[number], ManagedDeployment>();
  for (const mode of modes) {
    const deployment = await environment.launchService(`service-metrics-${mode}`, { ...overrides, METRICS: mode });
    deployments.set(mode, deployment);
    log(`METRICS=${mode}: started at ${deployment.url} (pid ${deployment.pid})`);
    const productId = await createProduct(deployment.url, deployment.adminToken, {
      name: 'warm-up',
      stock: HUGE_STOCK,
    });
    await runLoad({
      title: `warm-up (METRICS=${mode})`,
      url: deployment.url,
      connections: settings.connections,
      duration: settings.warmup,
      requests: [holdRequest(productId)],
      expected: [201],
    });
  }

  const rounds = new Map<string, Round[]>();
  let excerptTaken = settings.metricsExcerpt === undefined;
  for (let round = 0; round < settings.rounds; round++) {
    const order: readonly (typeof modes)[number][] = round % 2 === 0 ? modes : [...modes].reverse();
    for (const name of settings.scenarios) {
      for (const mode of order) {
        const deployment = deployments.get(mode)!;
        const ctx: ScenarioContext = { settings, deployment, environment, log };
        // The excerpt is taken half-way through the first measured load of the metrics deployment.
        let excerpt: Promise<void> | undefined;
        if (!excerptTaken && mode === 'admin') {
          excerptTaken = true;
          excerpt = takeExcerpt(deployment, settings.duration * 500, settings.metricsExcerpt!, name, log);
        }
        const result = await SCENARIOS[name as ScenarioName].run(ctx);
        await excerpt;
        deployment.assertAlive();
        const figures = roundOf(result);
        const key = `${name} ${mode}`;
        rounds.set(key, [...(rounds.get(key) ?? []), figures]);
        log(
          `round ${round + 1} ${key}: ${Math.round(figures.rps)} req/s, p99 ${figures.p99} ms, ` +
            `${figures.cpuUsPerRequest?.toFixed(1) ?? '?'} µs CPU/request${figures.invariantsOk ? '' : ', INVARIANTS FAILED'}`,
        );
      }
    }
  }

  const lines = [
    `metrics cost: ${settings.rounds} alternating rounds, ${settings.connections} connections, ${settings.duration} s each`,
    '',
    '| scenario | METRICS | req/s (median) | req/s each round | p99 ms (median) | CPU µs/request (median) | req/s vs off | CPU/request vs off |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const name of settings.scenarios) {
    const off = rounds.get(`${name} off`) ?? [];
    for (const mode of modes) {
      const these = rounds.get(`${name} ${mode}`) ?? [];
      const rps = median(these.map((r) => r.rps));
      const cpu = these.every((r) => r.cpuUsPerRequest !== undefined)
        ? median(these.map((r) => r.cpuUsPerRequest!))
        : undefined;
      const offRps = median(off.map((r) => r.rps));
      const offCpu = off.every((r) => r.cpuUsPerRequest !== undefined)
        ? median(off.map((r) => r.cpuUsPerRequest!))
        : undefined;
      lines.push(
        `| ${name} | ${mode} | ${Math.round(rps)} | ${these.map((r) => Math.round(r.rps)).join(', ')} | ` +
          `${median(these.map((r) => r.p99))} | ${cpu?.toFixed(1) ?? '—'} | ${(rps / offRps).toFixed(3)} | ` +
          `${cpu !== undefined && offCpu !== undefined ? (cpu / offCpu).toFixed(3) : '—'} |`,
      );
    }
  }
  process.stdout.write(`\n${lines.join('\n')}\n\n`);
  return [...rounds.values()].flat().every((r) => r.invariantsOk);
}

/** GET /metrics after `afterMs`, written to `path` (the text, with a header line saying when and during what). */
async function takeExcerpt(
  deployment: ManagedDeployment,
  afterMs: number,
  path: string,
  scenario: string,
  log: (line: string) => void,
): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, afterMs));
  try {
    const response = await fetch(`${deployment.url}/metrics`, {
      headers: { authorization: `Bearer ${deployment.adminToken}` },
      signal: AbortSignal.timeout(5000),
    });
    const text = await response.text();
    writeFileSync(
      path,
      `# GET /metrics at ${new Date().toISOString()}, ${afterMs / 1000} s into the ${scenario} load (HTTP ${response.status})\n${text}`,
    );
    log(`metrics excerpt (${text.length} bytes) written to ${path}`);
  } catch (err) {
    log(`metrics excerpt failed: ${(err as Error).message}`);
  }
}
