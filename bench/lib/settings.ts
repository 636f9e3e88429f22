import { parseArgs } from 'node:util';

export const SCENARIO_NAMES = [
  'hot-sku',
  'sold-out',
  'sellout',
  'catalogue',
  'checkout',
  'expiry-storm',
  'soak',
] as const;
/** The scenarios --metrics-cost runs when none is named: the hot path and the rejection path. */
const METRICS_COST_SCENARIOS: readonly ScenarioName[] = ['hot-sku', 'sold-out'];
/** The scenarios --workers A,B compares when none is named: the hot path, the rejection path and the checkout. */
const WORKERS_SCENARIOS: readonly ScenarioName[] = ['hot-sku', 'sold-out', 'checkout'];
/** Scenarios a run without names leaves out unless it is the smoke form: they take minutes. */
const LONG_SCENARIOS: readonly ScenarioName[] = ['soak'];
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

/** What one run of the suite does: read from the command line. */
export interface Settings {
  /** The scenarios to run, in suite order. */
  scenarios: ScenarioName[];
  connections: number;
  /** Seconds of measured load per scenario (and per reference). */
  duration: number;
  /** Seconds of unmeasured load before measuring, so each server's JIT is warm. */
  warmup: number;
  /** The CI form: short runs, fewer connections, small data sets; targets reported, never enforced. */
  smoke: boolean;
  /** Holds expired at once in expiry-storm. */
  stormHolds: number;
  /** Products in the catalogue scenario. */
  catalogueProducts: number;
  /** Stock of the product sold out in the sellout scenario. */
  selloutStock: number;
  /** Seconds of the soak at a fixed rate (after its probe). */
  soakDuration: number;
  /** Seconds of the soak's probe at full load, which measures the rate the soak then runs at half of. */
  soakProbe: number;
  /**
   * Rate limits on, at limits no load reaches: every hold and order is counted, none refused, so the run measures
   * what the limits cost. Off otherwise: the load comes from one address, which real limits would refuse.
   */
  rateLimited: boolean;
  /**
   * hot-sku: its product split into this many stock buckets, measured side by side with a product of one bucket
   * in alternating rounds (`rounds` of each); 1: one product of one bucket, as always.
   */
  buckets: number;
  /** hot-sku's load at this many requests a second (autocannon overallRate); undefined: as fast as answers come. */
  rate: number | undefined;
  /** METRICS of the service the bench starts (admin, its default, unless --metrics says otherwise). */
  metrics: MetricsMode;
  /**
   * --metrics-cost: instead of the suite, the same scenarios (hot-sku and sold-out by default) against two
   * deployments side by side, one with METRICS=off and one with METRICS=admin, in alternating rounds.
   */
  metricsCost: boolean;
  /** Rounds of each deployment in --metrics-cost and --workers A,B. */
  rounds: number;
  /**
   * --workers: WEB_CONCURRENCY of the service the bench starts (1 by default); with several values (`1,2`),
   * instead of the suite, the scenarios against a deployment of each side by side, in rotating rounds.
   */
  workers: number[];
  /**
   * --simultaneous (with --metrics-cost): the deployments loaded at the same time, each with its share of the
   * connections, rather than one after the other.
   */
  simultaneous: boolean;
  /** --aa (with --metrics-cost): both deployments METRICS=off, to see the method's own spread. */
  aa: boolean;
  /** --metrics-cost: where the text of a GET /metrics taken in the middle of a load is written, if anywhere. */
  metricsExcerpt: string | undefined;
}

export const METRICS_MODES = ['admin', 'open', 'off'] as const;
export type MetricsMode = (typeof METRICS_MODES)[number];

/** The service's limits under --rate-limited: counted on every request, never reached by a run. */
export const UNREACHED_RATE_LIMITS = {
  RATE_LIMIT: 'on',
  RATE_LIMIT_PER_ADDRESS: '1000000000',
  RATE_LIMIT_PER_CUSTOMER: '1000000000',
} as const;

export const USAGE = `usage: npm run bench -- [scenario] [--connections N] [--duration S] [--soak-duration S] [--smoke] [--rate-limited] [--rate N]
       [--metrics MODE] [--metrics-cost [--rounds N] [--simultaneous] [--aa] [--metrics-excerpt FILE]] [--workers N | --workers A,B [--rounds N]]

scenarios: ${SCENARIO_NAMES.join(', ')} (default: all but ${LONG_SCENARIOS.join(', ')}; all with --smoke)
  --connections N     concurrent connections (default 100; 20 with --smoke)
  --duration S        seconds of measured load per scenario (default 10; 2 with --smoke)
  --soak-duration S   seconds of the soak at half its probed maximum rate (default 600; 30 with --smoke)
  --smoke             the CI form: short runs, small data sets; fails only on broken invariants or crashes
  --rate-limited      rate limits on (RATE_LIMIT=on), at limits no run reaches: measures what counting costs
  --rate N            hot-sku at N requests a second rather than flat out: CPU per request at a fixed rate
  --metrics MODE      METRICS of the service: admin (default), open or off
  --metrics-cost      the cost of metrics: the scenarios (default hot-sku, sold-out) against a METRICS=off and a
                      METRICS=admin deployment side by side, in alternating rounds; medians and ratios
  --rounds N          rounds of each deployment with --metrics-cost or --workers A,B, or of each product with
                      --buckets (default 3)
  --buckets N         hot-sku: also a product split into N stock buckets, side by side with one of one bucket
  --simultaneous      with --metrics-cost: load both deployments at the same time, half the connections each, so
                      that the machine's other work falls on both alike, on fresh processes every round;
                      medians of each round's ratios
  --aa                with --metrics-cost: the second deployment METRICS=off too (an A/A check of the method)
  --metrics-excerpt F with --metrics-cost: write a GET /metrics taken in the middle of a load to file F
  --workers N         WEB_CONCURRENCY of the service: N worker processes (default 1)
  --workers A,B       what more workers give: the scenarios (default hot-sku, sold-out, checkout) against a
                      deployment of each WEB_CONCURRENCY side by side, in rotating rounds; medians and ratios

BENCH_URL=http://host:port runs against a running deployment instead of starting one (see bench/README.md).`;

function positiveInteger(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer, got "${raw}"`);
  return value;
}

function isScenarioName(name: string): name is ScenarioName {
  return (SCENARIO_NAMES as readonly string[]).includes(name);
}

/** Parses `[scenario...] [--connections N] [--duration S] [--smoke] [--rate-limited]`; throws with a message on bad input. */
export function parseSettings(argv: string[]): Settings | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      connections: { type: 'string' },
      duration: { type: 'string' },
      'soak-duration': { type: 'string' },
      smoke: { type: 'boolean', default: false },
      'rate-limited': { type: 'boolean', default: false },
      rate: { type: 'string' },
      metrics: { type: 'string' },
      'metrics-cost': { type: 'boolean', default: false },
      rounds: { type: 'string' },
      buckets: { type: 'string' },
      'metrics-excerpt': { type: 'string' },
      simultaneous: { type: 'boolean', default: false },
      aa: { type: 'boolean', default: false },
      workers: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  const unknown = positionals.filter((name) => !isScenarioName(name));
  if (unknown.length > 0)
    throw new Error(`unknown scenario ${unknown.join(', ')}; known: ${SCENARIO_NAMES.join(', ')}`);
  const chosen = new Set(positionals.filter(isScenarioName));
  const smoke = values.smoke;
  const metricsCost = values['metrics-cost'];
  const workers = (values.workers ?? '1').split(',').map((n) => positiveInteger('workers', n.trim(), 1));
  const compareWorkers = workers.length > 1;
  if (metricsCost && compareWorkers) throw new Error('--metrics-cost and --workers A,B are two comparisons: pick one');
  // More workers would take more of the machine's CPU when loaded at once: that comparison is not fair at once.
  if (values.simultaneous && !metricsCost) throw new Error('--simultaneous goes with --metrics-cost only');
  if (values.aa && !metricsCost) throw new Error('--aa goes with --metrics-cost only');
  const byDefault = (name: ScenarioName) =>
    metricsCost
      ? METRICS_COST_SCENARIOS.includes(name)
      : compareWorkers
        ? WORKERS_SCENARIOS.includes(name)
        : smoke || !LONG_SCENARIOS.includes(name);
  // expiry-storm and soak start deployments of their own, which the comparison would not be about.
  const ownDeployments = [...chosen].filter((name) => name === 'expiry-storm' || name === 'soak');
  if ((metricsCost || compareWorkers) && ownDeployments.length > 0)
    throw new Error(
      `${metricsCost ? '--metrics-cost' : '--workers A,B'} cannot run ${ownDeployments.join(', ')}: it starts a deployment of its own`,
    );
  const metrics = values.metrics ?? 'admin';
  if (!(METRICS_MODES as readonly string[]).includes(metrics))
    throw new Error(`--metrics must be one of ${METRICS_MODES.join(', ')}, got "${metrics}"`);
  return {
    scenarios: SCENARIO_NAMES.filter((name) => (chosen.size === 0 ? byDefault(name) : chosen.has(name))),
    connections: positiveInteger('connections', values.connections, smoke ? 20 : 100),
    duration: positiveInteger('duration', values.duration, smoke ? 2 : 10),
    warmup: smoke ? 1 : 3,
    smoke,
    stormHolds: smoke ? 5_000 : 100_000,
    catalogueProducts: smoke ? 500 : 10_000,
    selloutStock: smoke ? 2_000 : 10_000,
    soakDuration: positiveInteger('soak-duration', values['soak-duration'], smoke ? 30 : 600),
    soakProbe: smoke ? 3 : 10,
    rateLimited: values['rate-limited'],
    rate: values.rate === undefined ? undefined : positiveInteger('rate', values.rate, 0),
    metrics: metrics as MetricsMode,
    metricsCost,
    rounds: positiveInteger('rounds', values.rounds, 3),
    buckets: positiveInteger('buckets', values.buckets, 1),
    metricsExcerpt: values['metrics-excerpt'],
    simultaneous: values.simultaneous,
    aa: values.aa,
    workers,
  };
}
