/**
 * The load suite: `npm run bench -- [scenario] [--connections N] [--duration S] [--smoke]`. See bench/README.md.
 *
 * Without BENCH_URL it builds the service, starts it (compiled, LOG_LEVEL=warn) on a database and Redis key
 * prefix of its own, runs the two references and the scenarios, checks the invariants after each scenario,
 * prints a markdown table (stdout; progress goes to stderr), writes bench/results/<time>.json, and removes
 * everything it made. Exits 1 when an invariant check failed or something crashed, never because of a target.
 */
import { Redis } from 'ioredis';
import { createProduct } from './lib/api.js';
import { BenchEnvironment, externalDeployment, type Deployment } from './lib/environment.js';
import { runLoad } from './lib/load.js';
import { describeMachine } from './lib/machine.js';
import { setRedisPid } from './lib/proc-stats.js';
import { localRedisPid } from './lib/redis-memory.js';
import { measureMetricsCost, measureWorkers } from './lib/metrics-cost.js';
import { measureReference, REFERENCE_NAMES, type ReferenceName } from './lib/references.js';
import { evaluateTargets, renderMarkdown, writeRecord, type RunRecord, type ScenarioOutcome } from './lib/report.js';
import { holdRequest, HUGE_STOCK, type ScenarioContext } from './lib/scenario.js';
import { parseSettings, UNREACHED_RATE_LIMITS, USAGE, type ScenarioName, type Settings } from './lib/settings.js';
import { SCENARIOS } from './scenarios/index.js';

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

function parse(): Settings | number {
  try {
    const parsed = parseSettings(process.argv.slice(2));
    if (parsed !== 'help') return parsed;
    process.stdout.write(`${USAGE}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
}

/**
 * ceiling, then hot-sku right after it (the ratio that matters most, measured minutes apart at most), seed, the
 * rest; the seed's checkout right before checkout, for the same reason.
 */
function plan(scenarios: ScenarioName[]): (ScenarioName | ReferenceName)[] {
  const rest = scenarios
    .filter((s) => s !== 'hot-sku')
    .flatMap((s): (ScenarioName | ReferenceName)[] => (s === 'checkout' ? ['seed-checkout', s] : [s]));
  return ['ceiling', ...(scenarios.includes('hot-sku') ? (['hot-sku'] as const) : []), 'seed', ...rest];
}

const isReference = (step: ScenarioName | ReferenceName): step is ReferenceName =>
  (REFERENCE_NAMES as readonly string[]).includes(step);

async function warmUp(deployment: Deployment, settings: Settings): Promise<void> {
  const productId = await createProduct(deployment.url, deployment.adminToken, {
    name: 'bench warm-up',
    stock: HUGE_STOCK,
  });
  await runLoad({
    title: 'service warm-up',
    url: deployment.url,
    connections: settings.connections,
    duration: settings.warmup,
    requests: [holdRequest(productId)],
    expected: [201],
  });
}

async function runScenario(name: ScenarioName, ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const scenario = SCENARIOS[name];
  log(`▶ ${name}: ${scenario.summary}`);
  try {
    ctx.deployment.assertAlive();
    const result = await scenario.run(ctx);
    ctx.deployment.assertAlive();
    const failed = result.invariants.checks.filter((c) => !c.ok);
    log(
      `${name}: invariants ${failed.length === 0 ? 'hold' : `FAILED: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`}`,
    );
    return { status: 'ok', name, result };
  } catch (err) {
    const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    log(`${name}: CRASHED: ${error}`);
    return { status: 'crashed', name, error: err instanceof Error ? err.message : String(err) };
  }
}

async function main(): Promise<number> {
  const settings = parse();
  if (typeof settings === 'number') return settings;

  const startedAt = new Date().toISOString();
  const machine = describeMachine();
  const environment = new BenchEnvironment();
  const external = externalDeployment();
  const references: RunRecord['references'] = {};
  const scenarios: ScenarioOutcome[] = [];
  const failures: string[] = [];
  let ok = false;

  // A signal may arrive several times (`timeout` signals the whole process group, npm and tsx relay it too):
  // clean up once, ignore the repeats.
  let interrupted = false;
  const interrupt = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`${signal}: cleaning up`);
    void environment.cleanup(log, false).finally(() => process.exit(130));
  };
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);

  try {
    // Only to count the Redis server's CPU as the stores': no Redis to ask is no reason to stop.
    const redis = new Redis(environment.redisUrl, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    setRedisPid(await localRedisPid(redis, environment.redisUrl).catch(() => undefined));
    redis.disconnect();
    const serviceSettings = settings.rateLimited ? UNREACHED_RATE_LIMITS : {};
    if (settings.metricsCost) {
      if (external) throw new Error('--metrics-cost starts its own two deployments: unset BENCH_URL');
      environment.build(log);
      const ok = await measureMetricsCost(environment, settings, serviceSettings, log);
      await environment.cleanup(log, !ok);
      return ok ? 0 : 1;
    }
    if (settings.workers.length > 1) {
      if (external) throw new Error('--workers A,B starts its own deployments: unset BENCH_URL');
      environment.build(log);
      const ok = await measureWorkers(environment, settings, serviceSettings, log);
      await environment.cleanup(log, !ok);
      return ok ? 0 : 1;
    }
    let deployment: Deployment;
    if (external) {
      deployment = external;
      log(
        `service: ${external.url} (BENCH_URL)${external.stores ? '' : '; no store access: API-level invariant checks only'}`,
      );
    } else {
      environment.build(log);
      deployment = await environment.launchService('service', {
        ...serviceSettings,
        METRICS: settings.metrics,
        WEB_CONCURRENCY: String(settings.workers[0]),
      });
      log(
        `service started at ${deployment.url} (pid ${deployment.pid}), rate limits ${settings.rateLimited ? 'on, unreached' : 'off'}, METRICS=${settings.metrics}, WEB_CONCURRENCY=${settings.workers[0]}`,
      );
    }
    log(`warm-up: ${settings.warmup} s of holds`);
    await warmUp(deployment, settings);

    const ctx: ScenarioContext = { settings, deployment, environment: external ? undefined : environment, log };
    let serviceDead = false;
    for (const step of plan(settings.scenarios)) {
      if (isReference(step)) {
        try {
          references[step] = await measureReference(environment, step, settings, log);
        } catch (err) {
          failures.push(`reference ${step} crashed: ${(err as Error).message}`);
          log(failures[failures.length - 1]!);
        }
      } else if (serviceDead) {
        scenarios.push({ status: 'skipped', name: step, reason: 'the service died' });
      } else {
        const outcome = await runScenario(step, ctx);
        scenarios.push(outcome);
        try {
          deployment.assertAlive();
        } catch {
          serviceDead = true;
        }
      }
    }
    ok = failures.length === 0 && scenarios.every((s) => s.status === 'ok' && s.result.invariants.ok);
  } catch (err) {
    failures.push(`the run crashed: ${(err as Error).stack ?? String(err)}`);
    log(failures[failures.length - 1]!);
  }

  const record: RunRecord = {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine,
    settings,
    service: external
      ? `BENCH_URL ${external.url}`
      : 'built and started by the bench (node dist/src/server.js, LOG_LEVEL=warn)',
    references,
    scenarios,
    targets: evaluateTargets(references, scenarios),
    ok,
    failures,
  };
  process.stdout.write(`\n${renderMarkdown(record)}\n\n`);
  log(`results written to ${writeRecord(record)}`);

  await environment.cleanup(log, !ok);
  if (external?.stores) {
    external.stores.redis.disconnect();
    await external.stores.db.end();
  }
  return ok ? 0 : 1;
}

process.exit(await main());
