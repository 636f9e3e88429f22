/**
 * Side-by-side comparisons of deployments of the same build. `npm run bench -- --metrics-cost [scenario...]
 * [--rounds N] [--metrics-excerpt FILE]`: what the metrics cost, METRICS=off beside METRICS=admin (the default).
 * `npm run bench -- --workers 1,2 [scenario...] [--rounds N]`: what more worker processes give (WEB_CONCURRENCY).
 * Each round runs every scenario against every deployment, one right after the other, the order rotated every
 * round so none always runs on the warmer or the fuller Redis. The figures are medians over the rounds of each
 * one's requests/s, p99 and server CPU per request (the process and its workers), and the ratio to the first
 * (for the metrics, "admin" to "off": 1.00 is no cost).
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

/** One deployment of a side-by-side comparison: its label in the table and its settings. */
export interface Variant {
  label: string;
  env: Record<string, string>;
}

/** What the metrics cost: METRICS=off beside METRICS=admin; false when an invariant failed. */
export function measureMetricsCost(
  environment: BenchEnvironment,
  settings: Settings,
  overrides: Record<string, string>,
  log: (line: string) => void,
): Promise<boolean> {
  // --aa: the second deployment is METRICS=off too: what the method itself makes of two identical deployments.
  const variants = settings.aa
    ? [
        { label: 'METRICS=off', env: { ...overrides, METRICS: 'off' } },
        { label: 'METRICS=off (again)', env: { ...overrides, METRICS: 'off' } },
      ]
    : (['off', 'admin'] as const).map((mode) => ({ label: `METRICS=${mode}`, env: { ...overrides, METRICS: mode } }));
  return compareDeployments(environment, settings, variants, log, {
    title: settings.aa ? 'metrics cost, A/A check' : 'metrics cost',
    excerptOf: settings.aa ? undefined : 'METRICS=admin',
  });
}

/** What more worker processes give: a deployment for each WEB_CONCURRENCY of --workers; false on a broken invariant. */
export function measureWorkers(
  environment: BenchEnvironment,
  settings: Settings,
  overrides: Record<string, string>,
  log: (line: string) => void,
): Promise<boolean> {
  const variants = settings.workers.map((n) => ({
    label: `WEB_CONCURRENCY=${n}`,
    env: { ...overrides, METRICS: settings.metrics, WEB_CONCURRENCY: String(n) },
  }));
  return compareDeployments(environment, settings, variants, log, { title: 'worker processes' });
}

/**
 * Runs every scenario against each deployment in turn, round after round, the order rotated every round so none
 * always runs on the warmer or the fuller Redis; prints the medians and the ratios to the first variant.
 */
export async function compareDeployments(
  environment: BenchEnvironment,
  settings: Settings,
  variants: Variant[],
  log: (line: string) => void,
  options: { title: string; excerptOf?: string },
): Promise<boolean> {
  const deployments = new Map<string, ManagedDeployment>();
  const warmUp = async (label: string, connections: number) => {
    const deployment = deployments.get(label)!;
    const productId = await createProduct(deployment.url, deployment.adminToken, {
      name: 'warm-up',
      stock: HUGE_STOCK,
    });
    await runLoad({
      title: `warm-up (${label})`,
      url: deployment.url,
      connections,
      duration: settings.warmup,
      requests: [holdRequest(productId)],
      expected: [201],
    });
  };
  for (const { label, env } of variants) {
    const deployment = await environment.launchService(`service-${label.replace(/[^A-Za-z0-9]+/g, '-')}`, env);
    deployments.set(label, deployment);
    log(`${label}: started at ${deployment.url} (pid ${deployment.pid})`);
    if (!settings.simultaneous) await warmUp(label, settings.connections);
  }
  const envOf = new Map(variants.map((v) => [v.label, v.env]));
  // --simultaneous: each round on fresh processes, warmed up together. Two processes of one build can differ by
  // 10-20% in CPU per request for their whole life (what the JIT made of them), so one pair of processes is one
  // sample however many rounds it serves.
  const freshRound = async (round: number) => {
    if (round > 0)
      for (const label of order(round)) {
        const deployment = deployments.get(label)!;
        await deployment.stop();
        await deployment.start(envOf.get(label));
        log(`round ${round + 1}: ${label} restarted (pid ${deployment.pid})`);
      }
    await Promise.all(
      labels.map((label) => warmUp(label, Math.max(1, Math.round(settings.connections / labels.length)))),
    );
  };
  const order = (round: number) => labels.map((_, i) => labels[(i + round) % labels.length]!);

  const labels = variants.map((v) => v.label);
  const rounds = new Map<string, Round[]>();
  let excerptTaken = settings.metricsExcerpt === undefined || options.excerptOf === undefined;
  // --simultaneous: every deployment loaded at once, each with its share of the connections, so that whatever
  // else the machine does in a round falls on all of them alike (rounds one after the other on this shared
  // machine differ by ±30%, far more than the cost being measured).
  const scenarioSettings = settings.simultaneous
    ? { ...settings, connections: Math.max(1, Math.round(settings.connections / labels.length)) }
    : settings;
  const runOne = async (name: string, label: string, round: number): Promise<void> => {
    const deployment = deployments.get(label)!;
    const ctx: ScenarioContext = { settings: scenarioSettings, deployment, environment, log };
    // The excerpt is taken half-way through the first measured load of its deployment.
    let excerpt: Promise<void> | undefined;
    if (!excerptTaken && label === options.excerptOf) {
      excerptTaken = true;
      excerpt = takeExcerpt(deployment, settings.duration * 500, settings.metricsExcerpt!, name, log);
    }
    const result = await SCENARIOS[name as ScenarioName].run(ctx);
    await excerpt;
    deployment.assertAlive();
    const figures = roundOf(result);
    const key = `${name} ${label}`;
    rounds.set(key, [...(rounds.get(key) ?? []), figures]);
    log(
      `round ${round + 1} ${key}: ${Math.round(figures.rps)} req/s, p99 ${figures.p99} ms, ` +
        `${figures.cpuUsPerRequest?.toFixed(1) ?? '?'} µs CPU/request${figures.invariantsOk ? '' : ', INVARIANTS FAILED'}`,
    );
  };
  for (let round = 0; round < settings.rounds; round++) {
    if (settings.simultaneous) await freshRound(round);
    for (const name of settings.scenarios) {
      if (settings.simultaneous) await Promise.all(order(round).map((label) => runOne(name, label, round)));
      else for (const label of order(round)) await runOne(name, label, round);
    }
  }

  const base = labels[0]!;
  const lines = [
    `${options.title}: ${settings.rounds} rotating rounds, ${settings.connections} connections` +
      (settings.simultaneous
        ? ` shared by the ${labels.length} deployments loaded at once (${scenarioSettings.connections} each)`
        : '') +
      `, ${settings.duration} s each`,
    '',
    `| scenario | deployment | req/s (median) | req/s each round | p99 ms (median) | CPU µs/request (median) | req/s vs ${base} | CPU/request vs ${base} | req/s vs ${base}, median of the rounds' ratios | CPU/request vs ${base}, median of the rounds' ratios |`,
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  const cpuOf = (these: Round[]) =>
    these.every((r) => r.cpuUsPerRequest !== undefined) ? median(these.map((r) => r.cpuUsPerRequest!)) : undefined;
  // Each round's figure over the same round's figure of the first deployment: the pairs that ran closest in time
  // (at the same time with --simultaneous).
  const pairedRatio = (these: Round[], first: Round[], of: (r: Round) => number | undefined) => {
    const ratios = these.flatMap((r, i) => {
      const [a, b] = [of(r), first[i] === undefined ? undefined : of(first[i]!)];
      return a === undefined || b === undefined || b === 0 ? [] : [a / b];
    });
    return ratios.length === these.length && ratios.length > 0 ? median(ratios).toFixed(3) : '—';
  };
  for (const name of settings.scenarios) {
    const first = rounds.get(`${name} ${base}`) ?? [];
    const firstRps = median(first.map((r) => r.rps));
    const firstCpu = cpuOf(first);
    for (const label of labels) {
      const these = rounds.get(`${name} ${label}`) ?? [];
      const rps = median(these.map((r) => r.rps));
      const cpu = cpuOf(these);
      lines.push(
        `| ${name} | ${label} | ${Math.round(rps)} | ${these.map((r) => Math.round(r.rps)).join(', ')} | ` +
          `${median(these.map((r) => r.p99))} | ${cpu?.toFixed(1) ?? '—'} | ${(rps / firstRps).toFixed(3)} | ` +
          `${cpu !== undefined && firstCpu !== undefined ? (cpu / firstCpu).toFixed(3) : '—'} | ` +
          `${pairedRatio(these, first, (r) => r.rps)} | ${pairedRatio(these, first, (r) => r.cpuUsPerRequest)} |`,
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
