/**
 * The one-shard cap on a hot product, and what each kind of work costs Redis and Postgres: `npm run shard-cap`
 * (options: --help). docs/scaling.md builds its capacity model on these figures.
 *
 * On a private redis-server (nothing else runs on it, so INFO is this run's alone):
 * 1. shard: holds on ONE product sent straight to Redis with the service's own batching (reserve-batches) from
 *    1..N load-generator processes, per batch size, until Redis's CPU is near a core; per row holds/s, Redis CPU
 *    (INFO cpu) and script time (INFO commandstats) per hold, operations per hold, bytes per active hold;
 * 2. sweep: N holds expired at once, released with lua/releaseExpiredHolds-6.lua in the sweeper's steps;
 * 3. conversion: claimHold then finishConversion for N holds (the Redis side of a checkout's order);
 * 4. service (unless --no-service): the compiled service, one process, on the same Redis: hot-product holds over
 *    HTTP (what one process sustains next to what the shard does), then checkouts (hold, order, signed webhook)
 *    with Postgres transactions counted from pg_stat_database.xact_commit, and orders and webhooks one at a time.
 * Every phase checks the invariants it can (granted ≤ stock, held = the hold records, every hold ended); a failed
 * check exits 1.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { newHoldId } from '../src/domain/hold-ids.js';
import { signPayload } from '../src/domain/signatures.js';
import { createRedisCommands, type RedisCommands } from '../src/redis/commands.js';
import { connectRedis } from '../src/redis/connection.js';
import { productKeys } from '../src/redis/keys.js';
import { settingsFrom } from '../src/settings.js';
import { runCheckouts } from './lib/checkout.js';
import { BenchEnvironment, REPO_ROOT, type ManagedDeployment } from './lib/environment.js';
import { describeLoad, JSON_HEADERS, runLoad } from './lib/load.js';
import { describeMachine, formatMachine } from './lib/machine.js';
import { freePort, sleep } from './lib/processes.js';
import { processCpuMicros, sampleResources, setRedisPid } from './lib/proc-stats.js';
import {
  perUnit,
  redisCost,
  sampleRedis,
  startRedisCost,
  withoutIdle,
  type RedisCost,
  type UnitCost,
} from './lib/redis-cost.js';
import { productKeysMemory, usedMemory } from './lib/redis-memory.js';
import { holdRequest, HUGE_STOCK } from './lib/scenario.js';
import type { ShardLoadMessage, ShardLoadStart, ShardLoadTally } from './lib/shard-load.js';

const USAGE = `npm run shard-cap -- [options]
  --batches LIST      holds per reserveStock call, comma-separated (default 1,8,32,128)
  --generators N      load-generator processes: each batch size is measured with 1..N of them (default 3)
  --in-flight N       reserveStock calls each generator keeps in flight (default 8)
  --duration S        seconds measured per row, after a 1 s warm-up (default 5)
  --stock N           the hot product's stock (default 10^9: it never sells out)
  --sweep-holds N     holds expired at once for the sweep figures (default 100000)
  --checkout-holds N  holds converted for the conversion figures (default 20000)
  --connections N     HTTP connections of the service phase (default 100)
  --no-service        Redis phases only (no build, no service, no Postgres)
  --smoke             1 s rows, batches 1 and 32, 2 generators, stock 20000 (sells out), small phases
  --json              print the JSON record on stdout instead of the tables
Env: SHARD_CAP_REDIS_PORT (the private redis-server's port; a free one otherwise), BENCH_PG_URL.`;

const { values: options } = parseArgs({
  options: {
    batches: { type: 'string' },
    generators: { type: 'string' },
    'in-flight': { type: 'string' },
    duration: { type: 'string' },
    stock: { type: 'string' },
    'sweep-holds': { type: 'string' },
    'checkout-holds': { type: 'string' },
    connections: { type: 'string' },
    'no-service': { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (options.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const smoke = options.smoke;
function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    process.stderr.write(`--${name} must be a positive integer\n\n${USAGE}\n`);
    process.exit(2);
  }
  return value;
}
const settings = {
  batches: (options.batches ?? (smoke ? '1,32' : '1,8,32,128')).split(',').map((b) => positive('batches', b, 1)),
  generators: positive('generators', options.generators, smoke ? 2 : 3),
  inFlight: positive('in-flight', options['in-flight'], 8),
  duration: positive('duration', options.duration, smoke ? 1 : 5),
  stock: positive('stock', options.stock, smoke ? 20_000 : HUGE_STOCK),
  sweepHolds: positive('sweep-holds', options['sweep-holds'], smoke ? 2000 : 100_000),
  checkoutHolds: positive('checkout-holds', options['checkout-holds'], smoke ? 1000 : 20_000),
  connections: positive('connections', options.connections, smoke ? 20 : 100),
  service: !options['no-service'],
  smoke,
};
const WARMUP_MS = 1000;
const PG_ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const log = (line: string) => process.stderr.write(`[shard-cap] ${line}\n`);
const checks: { name: string; ok: boolean; detail: string }[] = [];
function check(name: string, ok: boolean, detail: string): void {
  checks.push({ name, ok, detail });
  if (!ok) log(`CHECK FAILED: ${name}: ${detail}`);
}

// --- the private Redis -------------------------------------------------------------------------------------

const port = Number(process.env.SHARD_CAP_REDIS_PORT) || (await freePort());
const redisUrl = `redis://127.0.0.1:${port}`;
// No persistence, as Debian's redis-server runs by default (AOF everysec costs Redis itself ~23%: FIELD-NOTES).
const redisServer = spawn(
  'redis-server',
  ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: 'ignore' },
);
const children = new Set<ChildProcess>([redisServer]);
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
const admin = new Redis(redisUrl, { retryStrategy: () => 50, maxRetriesPerRequest: null });
admin.on('error', () => {});
await admin.ping();
const redisPid = Number(/^process_id:(\d+)/m.exec(await admin.info('server'))![1]);
setRedisPid(redisPid); // its CPU counted as the stores' in the machine samples
const redisVersion = /^redis_version:(\S+)/m.exec(await admin.info('server'))![1]!;
const prefix = `shardcap:${randomBytes(4).toString('hex')}:`;
log(`private redis-server ${redisVersion} on port ${port} (pid ${redisPid}), prefix ${prefix}`);

/** The service's commands on this Redis, with `overrides` of the service settings. */
async function serviceCommands(env: Record<string, string | number> = {}): Promise<RedisCommands> {
  const config = loadConfig(Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])), {
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: prefix,
    REDIS_COMMAND_TIMEOUT_MS: 10_000,
  });
  const redis = await connectRedis({ url: redisUrl, commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS });
  return createRedisCommands(redis, settingsFrom(config));
}
const commands = await serviceCommands();

/** A product copy made as the service makes one from Postgres (lua/rebuildProduct-6.lua), after its keys are gone. */
async function freshProduct(id: number, stock: number): Promise<void> {
  // DEL, not UNLINK: freed at once, so the next row's used_memory is not still falling from this one's.
  await admin.del(...Object.values(productKeys(prefix, id)));
  await commands.rebuildProduct(
    { id, stock, per_customer_limit: null, price_cents: 1000, name: `shard-cap ${id}`, stock_version: 1 },
    1,
    { sold: 0, customerUnits: [], convertedHolds: [] },
  );
}

async function inventory(id: number, keyPrefix = prefix): Promise<{ held: number; sold: number; stock: number }> {
  const [stock, held, sold] = await admin.hmget(productKeys(keyPrefix, id).inventory, 'stock', 'held', 'sold');
  return { stock: Number(stock), held: Number(held), sold: Number(sold) };
}

// --- phase 1: one product, one shard -------------------------------------------------------------------------

interface Generator {
  child: ChildProcess;
  next(type: 'stopped' | 'ready'): Promise<ShardLoadTally>;
  /** Its CPU time so far (µs), from /proc. */
  cpuMicros(): number;
}

async function startGenerator(): Promise<Generator> {
  const child = fork(join(REPO_ROOT, 'bench/lib/shard-load.ts'), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const generator: Generator = {
    child,
    cpuMicros: () => (child.pid === undefined ? 0 : processCpuMicros(child.pid)),
    next: (type) =>
      new Promise((resolve, reject) => {
        const onExit = (code: number | null) => reject(new Error(`a load generator exited (code ${code})`));
        child.once('exit', onExit);
        const onMessage = (message: { type: string } & ShardLoadTally) => {
          if (message.type !== type) return;
          child.off('message', onMessage);
          child.off('exit', onExit);
          resolve(message);
        };
        child.on('message', onMessage);
      }),
  };
  await generator.next('ready');
  return generator;
}

interface ShardRow {
  batch: number;
  generators: number;
  inFlight: number;
  holds: number;
  redis: UnitCost & { cpuPercent: number };
  /** CPU of the load generators per hold (µs), over the whole load. */
  generatorCpuMicros: number;
  /** Redis used_memory growth ÷ active holds; the product's keys alone (MEMORY USAGE) ÷ active holds. */
  bytesPerHold: number;
  productBytesPerHold: number;
  failedHolds: number;
  /**
   * The machine during the row, % of one core (200 = both of 2): everything, and what was neither this run's Redis
   * nor its load generators (other work on a shared machine, which starves both).
   */
  machineBusyPercent: number;
  otherPercent: number;
  byCommand: Record<string, number>;
}

async function measureShard(generators: Generator[], batch: number, productId: number): Promise<ShardRow> {
  await freshProduct(productId, settings.stock);
  const memoryBefore = await usedMemory(admin);
  const start: ShardLoadStart = { type: 'start', redisUrl, prefix, productId, batch, inFlight: settings.inFlight };
  for (const g of generators) g.child.send(start satisfies ShardLoadMessage);
  await sleep(WARMUP_MS);
  const inventoryKey = productKeys(prefix, productId).inventory;
  const first = await startRedisCost(admin, inventoryKey);
  const generatorCpuBefore = generators.map((g) => g.cpuMicros());
  const machine = sampleResources(undefined);
  await sleep(settings.duration * 1000);
  const last = await sampleRedis(admin, inventoryKey);
  const busy = machine.stop().machine;
  const generatorCpuInRow = generators
    .map((g) => g.cpuMicros())
    .reduce((sum, micros, i) => sum + micros - generatorCpuBefore[i]!, 0);
  const tallies = await Promise.all(
    generators.map((g) => {
      const stopped = g.next('stopped');
      g.child.send({ type: 'stop' } satisfies ShardLoadMessage);
      return stopped;
    }),
  );
  const cost = redisCost(first, last);
  const holds = last.held! - first.held!; // the hget of the sample's own MULTI minus the one it read
  const granted = tallies.reduce((s, t) => s + t.granted, 0);
  const failed = tallies.reduce((s, t) => s + t.failed, 0);
  const generatorCpu = tallies.reduce((s, t) => s + t.cpuMicros, 0);
  const final = await inventory(productId);
  const keys = productKeys(prefix, productId);
  const [records, expiries] = await Promise.all([admin.hlen(keys.holds), admin.zcard(keys.holdExpiries)]);
  const label = `batch ${batch}, ${generators.length} generator(s)`;
  check(`${label}: granted ≤ stock`, final.held <= final.stock, `held ${final.held}, stock ${final.stock}`);
  check(
    `${label}: every grant answered is held`,
    granted <= final.held && final.held <= granted + failed,
    `granted ${granted}, failed ${failed}, held ${final.held}`,
  );
  check(
    `${label}: held = hold records`,
    records === final.held && expiries === final.held,
    `held ${final.held}, records ${records}, expiries ${expiries}`,
  );
  // A hold of one unit is refused only when none is left: then exactly the stock was granted.
  const refused = tallies.reduce((s, t) => s + t.refused, 0);
  if (refused > 0) {
    check(`${label}: sold out exactly`, final.held === final.stock, `held ${final.held} of ${final.stock}`);
  }
  const bytes = (await usedMemory(admin)) - memoryBefore;
  const productBytes = await productKeysMemory(admin, prefix, productId);
  const row: ShardRow = {
    batch,
    generators: generators.length,
    inFlight: settings.inFlight,
    holds,
    redis: { ...perUnit(cost, holds), cpuPercent: cost.cpuPercent },
    generatorCpuMicros: granted + refused > 0 ? generatorCpu / (granted + refused) : 0,
    bytesPerHold: final.held > 0 ? bytes / final.held : 0,
    productBytesPerHold: final.held > 0 ? productBytes / final.held : 0,
    failedHolds: failed,
    machineBusyPercent: busy.busyPercent,
    otherPercent: Math.max(
      0,
      busy.busyPercent - busy.storesPercent - busy.benchPercent - (generatorCpuInRow / (settings.duration * 1e6)) * 100,
    ),
    byCommand: cost.byCommand,
  };
  log(
    `${label}: ${Math.round(row.redis.perSecond)} holds/s, Redis CPU ${cost.cpuPercent.toFixed(0)}%, ` +
      `${row.redis.cpuMicros.toFixed(2)} µs CPU/hold, ${row.redis.scriptMicros.toFixed(2)} µs script/hold, ` +
      `${row.redis.operations.toFixed(2)} ops/hold, ${row.bytesPerHold.toFixed(0)} B/hold`,
  );
  await admin.del(...Object.values(keys)); // memory back for the next row, at once
  return row;
}

// --- phases 2 and 3: the sweep and the conversion --------------------------------------------------------------

/** `count` holds of one unit on a product, 8 batches of 256 in flight, through the service's batching. */
async function makeHolds(through: RedisCommands, productId: number, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let made = 0; made < count;) {
    const chunk = Math.min(2048, count - made);
    const holdIds = Array.from({ length: chunk }, () => newHoldId(productId));
    const outcomes = await Promise.all(
      holdIds.map((holdId) => through.reserve({ productId, holdId, qty: 1, customerId: '' })),
    );
    outcomes.forEach((o, i) => o.kind === 'held' && ids.push(holdIds[i]!));
    made += chunk;
  }
  return ids;
}

interface SweepFigures {
  holds: number;
  steps: number;
  redis: UnitCost;
}

async function measureSweep(productId: number): Promise<SweepFigures> {
  const shortHolds = await serviceCommands({ HOLD_TTL_SECONDS: 1 });
  await freshProduct(productId, HUGE_STOCK);
  const made = (await makeHolds(shortHolds, productId, settings.sweepHolds)).length;
  await sleep(1200); // every hold past its expiry
  const first = await startRedisCost(admin);
  let steps = 0;
  let expired = 0;
  for (;;) {
    const step = await commands.releaseExpiredHolds(productId, settingsFrom(loadConfig({}, {})).sweepBatchSize);
    steps++;
    expired += step.expired;
    if (step.expired === 0) break;
  }
  const cost = redisCost(first, await sampleRedis(admin));
  const after = await inventory(productId);
  check(
    'sweep: every expired hold released',
    expired === made && after.held === 0,
    `made ${made}, released ${expired}, held ${after.held}`,
  );
  const figures = { holds: expired, steps, redis: perUnit(cost, expired) };
  log(
    `sweep: ${expired} holds in ${steps} steps, ${Math.round(figures.redis.perSecond)} holds/s, ` +
      `${figures.redis.cpuMicros.toFixed(2)} µs CPU/hold, ${figures.redis.operations.toFixed(2)} ops/hold`,
  );
  await admin.del(...Object.values(productKeys(prefix, productId)));
  return figures;
}

interface ConversionFigures {
  holds: number;
  claim: UnitCost;
  finish: UnitCost;
}

async function measureConversion(productId: number): Promise<ConversionFigures> {
  await freshProduct(productId, HUGE_STOCK);
  const holdIds = await makeHolds(commands, productId, settings.checkoutHolds);
  const inChunks = async (step: (holdId: string, i: number) => Promise<{ kind: string }>, expected: string) => {
    let ok = 0;
    for (let i = 0; i < holdIds.length; i += 256) {
      const outcomes = await Promise.all(holdIds.slice(i, i + 256).map((id, j) => step(id, i + j)));
      ok += outcomes.filter((o) => o.kind === expected).length;
    }
    return ok;
  };
  let first = await startRedisCost(admin);
  const claimed = await inChunks((id) => commands.claimHold(productId, id, randomBytes(8).toString('hex')), 'claimed');
  const claim = perUnit(redisCost(first, await sampleRedis(admin)), claimed);
  first = await startRedisCost(admin);
  const finished = await inChunks((id, i) => commands.finishConversion(productId, id, i + 1), 'done');
  const finish = perUnit(redisCost(first, await sampleRedis(admin)), finished);
  const after = await inventory(productId);
  check(
    'conversion: every hold claimed and converted',
    claimed === holdIds.length && finished === holdIds.length && after.held === 0 && after.sold === holdIds.length,
    `holds ${holdIds.length}, claimed ${claimed}, finished ${finished}, held ${after.held}, sold ${after.sold}`,
  );
  log(
    `conversion: claimHold ${claim.cpuMicros.toFixed(2)} µs CPU, ${claim.operations.toFixed(1)} ops; ` +
      `finishConversion ${finish.cpuMicros.toFixed(2)} µs CPU, ${finish.operations.toFixed(1)} ops (per hold)`,
  );
  await admin.del(...Object.values(productKeys(prefix, productId)));
  return { holds: holdIds.length, claim, finish };
}

// --- phase 4: through one service process ----------------------------------------------------------------------

interface ServiceFigures {
  idle: ReturnType<typeof idleRates>;
  holds: {
    holdsPerSecond: number;
    serviceCpuPercent: number;
    serviceCpuMicrosPerHold: number;
    /** Holds per reserveStock call: the batches this load formed. */
    holdsPerScriptCall: number;
    redis: UnitCost & { cpuPercent: number };
    p99Ms: number;
    answered503: number;
  };
  checkout: {
    checkoutsPerSecond: number;
    redis: UnitCost;
    /** xact_commit of the service's database per checkout (the idle rate taken off), and the idle rate. */
    commitsPerCheckout: number;
    idleCommitsPerSecond: number;
    serviceCpuMicrosPerCheckout: number;
  };
  oneAtATime: {
    count: number;
    order: { commits: number; redis: UnitCost };
    webhook: { commits: number; redis: UnitCost };
  };
}

/** What one idle service process costs the stores per second. */
function idleRates(idle: RedisCost, commitsPerSecond: number) {
  const rate = (value: number) => (idle.seconds > 0 ? value / idle.seconds : 0);
  return {
    redisScriptCallsPerSecond: rate(idle.scriptCalls),
    redisOperationsPerSecond: rate(idle.operations),
    redisCpuMicrosPerSecond: rate(idle.cpuMicros),
    postgresCommitsPerSecond: commitsPerSecond,
  };
}

async function xactCommit(pgAdmin: pg.Client, database: string): Promise<number> {
  const { rows } = await pgAdmin.query<{ n: string }>(
    'SELECT xact_commit AS n FROM pg_stat_database WHERE datname = $1',
    [database],
  );
  return Number(rows[0]?.n ?? 0);
}

// A backend reports its transactions to pg_stat_database at most once a second, and when it goes idle.
const PG_STATS_SETTLE_MS = 2500;

/**
 * POST as a client does: a 503 (the service answers it at once when Redis or Postgres is slow to answer, as on a
 * machine busy with other work) is sent again after its Retry-After, up to 10 times. Holds are sent again as new
 * requests; orders and webhooks again as the same one, which the service answers once.
 */
async function post(deployment: ManagedDeployment, path: string, body: string, headers: Record<string, string> = {}) {
  for (let attempt = 1; ; attempt++) {
    const response = await fetch(`${deployment.url}${path}`, {
      method: 'POST',
      headers: { ...JSON_HEADERS, ...headers },
      body,
    });
    const answer = { status: response.status, body: (await response.json()) as Record<string, unknown> };
    if (answer.status !== 503 || attempt === 10) return answer;
    await sleep(1000);
  }
}

/** A product made through the admin API, sent again after a 503. */
async function serviceProduct(deployment: ManagedDeployment, name: string): Promise<number> {
  const answer = await post(
    deployment,
    '/api/products',
    JSON.stringify({ name, price_cents: 1000, stock: HUGE_STOCK }),
    {
      authorization: `Bearer ${deployment.adminToken}`,
    },
  );
  if (answer.status !== 201)
    throw new Error(`POST /api/products answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return Number(answer.body.id);
}

async function measureService(environment: BenchEnvironment): Promise<ServiceFigures> {
  environment.build(log);
  const deployment = await environment.launchService('shard-cap');
  const database = new URL(deployment.databaseUrl).pathname.slice(1);
  const pgAdmin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await pgAdmin.connect();
  try {
    const hot = await serviceProduct(deployment, 'shard-cap hot');
    const load = (title: string, duration: number) =>
      runLoad({
        title,
        url: deployment.url,
        connections: settings.connections,
        duration,
        requests: [holdRequest(hot)],
        // 503: Redis did not answer within REDIS_COMMAND_TIMEOUT_MS (a machine busy with other work); counted.
        expected: [201, 503],
        pid: deployment.pid,
      });
    await load('service warm-up', smoke ? 1 : 3);
    // The background loops (sweeper schedule, settlement, loss watcher) cost both stores whether or not requests
    // come: their idle rate, taken off every figure below and reported on its own.
    await sleep(PG_STATS_SETTLE_MS);
    let t0 = performance.now();
    let c0 = await xactCommit(pgAdmin, database);
    let first = await startRedisCost(admin);
    await sleep(smoke ? 2000 : 5000);
    const idle = redisCost(first, await sampleRedis(admin));
    const idleCommitsPerSecond = ((await xactCommit(pgAdmin, database)) - c0) / ((performance.now() - t0) / 1000);
    first = await startRedisCost(admin);
    const holdLoad = await load('service holds', settings.duration);
    let cost = withoutIdle(redisCost(first, await sampleRedis(admin)), idle);
    log(`service holds: ${describeLoad(holdLoad)}`);
    const holds = holdLoad.statusCodes['201'] ?? 0;
    check(
      'service holds: only 201s (and 503s), no connection error',
      holdLoad.unexpected === 0 && holdLoad.errors === 0,
      `unexpected ${holdLoad.unexpected}, errors ${holdLoad.errors}, 503s ${holdLoad.statusCodes['503'] ?? 0}`,
    );
    const serviceCpu = holdLoad.usage?.cpuPercent ?? 0;
    const holdFigures = {
      holdsPerSecond: holds / holdLoad.seconds,
      serviceCpuPercent: serviceCpu,
      serviceCpuMicrosPerHold: holds > 0 ? ((serviceCpu / 100) * holdLoad.seconds * 1e6) / holds : 0,
      holdsPerScriptCall: cost.scriptCalls > 0 ? holds / cost.scriptCalls : 0,
      redis: { ...perUnit(cost, holds), cpuPercent: cost.cpuPercent },
      p99Ms: holdLoad.latencyMs.p99,
      answered503: holdLoad.statusCodes['503'] ?? 0,
    };
    const inv = await inventory(hot, deployment.stores.prefix);
    check(
      'service holds: held = granted',
      inv.held <= inv.stock && inv.held >= holds,
      `held ${inv.held}, 201s ${holds} (plus the warm-up's)`,
    );

    const product = await serviceProduct(deployment, 'shard-cap checkout');
    await sleep(PG_STATS_SETTLE_MS);
    t0 = performance.now();
    c0 = await xactCommit(pgAdmin, database);
    first = await startRedisCost(admin);
    const checkout = await runCheckouts({
      title: 'service checkouts',
      url: deployment.url,
      productId: product,
      webhookSecret: deployment.webhookSecret,
      connections: Math.min(settings.connections, 50),
      duration: settings.duration,
      pid: deployment.pid,
    });
    cost = withoutIdle(redisCost(first, await sampleRedis(admin)), idle);
    await sleep(PG_STATS_SETTLE_MS);
    const commits =
      (await xactCommit(pgAdmin, database)) - c0 - idleCommitsPerSecond * ((performance.now() - t0) / 1000);
    log(`service checkouts: ${checkout.paid} paid, ${describeLoad(checkout.load)}`);
    check('service checkouts: some paid', checkout.paid > 0, `${checkout.paid} paid`);
    const checkoutFigures = {
      checkoutsPerSecond: checkout.checkoutsPerSecond,
      redis: perUnit(cost, checkout.paid),
      commitsPerCheckout: checkout.paid > 0 ? commits / checkout.paid : 0,
      idleCommitsPerSecond,
      serviceCpuMicrosPerCheckout:
        checkout.paid > 0
          ? (((checkout.load.usage?.cpuPercent ?? 0) / 100) * checkout.load.seconds * 1e6) / checkout.paid
          : 0,
    };

    // Orders and webhooks one at a time: no two in one transaction, the most commits each can cost.
    const count = smoke ? 20 : 200;
    const holdIds: string[] = [];
    for (let i = 0; i < count; i++) {
      const hold = await post(deployment, '/api/holds', JSON.stringify({ product_id: product, qty: 1 }));
      holdIds.push(String(hold.body.hold_id));
    }
    /** Postgres commits and Redis cost per request of `send`, idle rates taken off. */
    const window = async (send: () => Promise<void>) => {
      await sleep(PG_STATS_SETTLE_MS);
      const start = performance.now();
      const before = await xactCommit(pgAdmin, database);
      const redisStart = await startRedisCost(admin);
      await send();
      const redis = perUnit(withoutIdle(redisCost(redisStart, await sampleRedis(admin)), idle), count);
      await sleep(PG_STATS_SETTLE_MS);
      const idleCommits = idleCommitsPerSecond * ((performance.now() - start) / 1000);
      return { commits: ((await xactCommit(pgAdmin, database)) - before - idleCommits) / count, redis };
    };
    const orderIds: number[] = [];
    const order = await window(async () => {
      for (const holdId of holdIds) {
        const order = await post(
          deployment,
          '/api/orders',
          JSON.stringify({ hold_id: holdId, payment_method: 'card' }),
        );
        if (order.status === 201) orderIds.push(Number(order.body.order_id));
      }
    });
    let paid = 0;
    const webhook = await window(async () => {
      for (const orderId of orderIds) {
        const body = JSON.stringify({
          idempotency_key: `shard-cap-${orderId}`,
          order_id: orderId,
          event_type: 'success',
        });
        const answer = await post(deployment, '/api/webhooks/payment', body, {
          'x-signature': signPayload(body, deployment.webhookSecret),
        });
        if (answer.status === 200 && answer.body.status === 'paid') paid++;
      }
    });
    check(
      'orders and webhooks one at a time: all paid',
      orderIds.length === count && paid === count,
      `${orderIds.length} orders, ${paid} paid of ${count}`,
    );
    log(`one at a time: ${order.commits.toFixed(2)} commits per order, ${webhook.commits.toFixed(2)} per webhook`);
    return {
      idle: idleRates(idle, idleCommitsPerSecond),
      holds: holdFigures,
      checkout: checkoutFigures,
      oneAtATime: { count, order, webhook },
    };
  } finally {
    await pgAdmin.end();
  }
}

// --- the run -------------------------------------------------------------------------------------------------

const machine = describeMachine();
const startedAt = new Date().toISOString();
// The bench's deployments use BENCH_REDIS_URL: here the private server.
if (settings.service) process.env.BENCH_REDIS_URL = redisUrl;
const environment = settings.service ? new BenchEnvironment() : undefined;
const record: Record<string, unknown> = { startedAt, machine, redisVersion, settings };
try {
  const generators: Generator[] = [];
  const shard: ShardRow[] = [];
  for (const batch of settings.batches) {
    for (let g = settings.smoke ? settings.generators : 1; g <= settings.generators; g++) {
      while (generators.length < g) generators.push(await startGenerator());
      shard.push(await measureShard(generators.slice(0, g), batch, 1));
    }
  }
  for (const g of generators) g.child.send({ type: 'exit' } satisfies ShardLoadMessage);
  record.shard = shard;
  record.sweep = await measureSweep(2);
  record.conversion = await measureConversion(3);
  if (environment) record.service = await measureService(environment);
} catch (err) {
  log(`the run crashed: ${(err as Error).stack ?? String(err)}`);
  checks.push({ name: 'the run completed', ok: false, detail: (err as Error).message });
} finally {
  await environment?.cleanup(log, false);
  admin.disconnect();
  redisServer.kill();
}
record.finishedAt = new Date().toISOString();
record.checks = checks;
record.ok = checks.every((c) => c.ok);

const dir = join(REPO_ROOT, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const path = join(dir, `shard-cap-${startedAt.replace(/[:.]/g, '-')}${smoke ? '-smoke' : ''}.json`);
writeFileSync(path, `${JSON.stringify(record, null, 2)}\n`);
log(`results written to ${path}`);
process.stdout.write(options.json ? `${JSON.stringify(record)}\n` : `${renderTables(record)}\n`);
process.exit(record.ok ? 0 : 1);

function renderTables(r: typeof record): string {
  const n = (v: number, digits = 0) =>
    v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const lines = [`Machine: ${formatMachine(machine)}. Redis ${redisVersion}, private, no persistence.`, ''];
  const shard = (r.shard ?? []) as ShardRow[];
  if (shard.length > 0) {
    lines.push(
      `One product on one redis-server, holds of 1 unit sent with reserve-batches, ${settings.inFlight} calls in flight per generator, ${settings.duration} s per row:`,
      '',
      '| batch | generators | holds/s | Redis CPU | Redis CPU µs/hold | script time µs/hold (wall) | holds/s at 100% of a core | ops/hold | generator CPU µs/hold | B/active hold (used_memory; product keys) | machine busy; other work |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...shard.map(
        (row) =>
          `| ${row.batch} | ${row.generators} | ${n(row.redis.perSecond)} | ${n(row.redis.cpuPercent)}% | ${n(row.redis.cpuMicros, 2)} | ${n(row.redis.scriptMicros, 2)} | ${n(row.redis.cpuMicros > 0 ? 1e6 / row.redis.cpuMicros : 0)} | ${n(row.redis.operations, 2)} | ${n(row.generatorCpuMicros, 2)} | ${n(row.bytesPerHold)}; ${n(row.productBytesPerHold)} | ${n(row.machineBusyPercent)}%; ${n(row.otherPercent)}% |`,
      ),
      '',
    );
  }
  const sweep = r.sweep as SweepFigures | undefined;
  const conversion = r.conversion as ConversionFigures | undefined;
  if (sweep && conversion) {
    lines.push(
      '| work (Redis alone) | units | per second | Redis CPU µs/unit | script µs/unit | script calls/unit | ops/unit |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...(
        [
          [`sweep: expired hold released (${sweep.steps} steps)`, sweep.redis],
          ['order: claimHold per hold', conversion.claim],
          ['order: finishConversion per hold', conversion.finish],
        ] as const
      ).map(
        ([name, c]) =>
          `| ${name} | ${n(c.units)} | ${n(c.perSecond)} | ${n(c.cpuMicros, 2)} | ${n(c.scriptMicros, 2)} | ${n(c.scriptCalls, 3)} | ${n(c.operations, 2)} |`,
      ),
      '',
    );
  }
  const service = r.service as ServiceFigures | undefined;
  if (service) {
    const h = service.holds;
    const c = service.checkout;
    const o = service.oneAtATime;
    lines.push(
      `Through one service process (compiled, ${settings.connections} connections, autocannon on the same machine):`,
      '',
      '| load | per second | service CPU | service CPU µs/unit | Redis CPU | Redis CPU µs/unit | holds per script call | ops/unit | Postgres commits/unit |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      `| holds, one product | ${n(h.holdsPerSecond)} | ${n(h.serviceCpuPercent)}% | ${n(h.serviceCpuMicrosPerHold, 1)} | ${n(h.redis.cpuPercent)}% | ${n(h.redis.cpuMicros, 2)} | ${n(h.holdsPerScriptCall, 1)} | ${n(h.redis.operations, 2)} | 0 |`,
      `| checkouts (hold, order, webhook) | ${n(c.checkoutsPerSecond)} | | ${n(c.serviceCpuMicrosPerCheckout, 1)} | | ${n(c.redis.cpuMicros, 2)} | | ${n(c.redis.operations, 2)} | ${n(c.commitsPerCheckout, 2)} |`,
      '',
      `Postgres one at a time (${service.oneAtATime.count} each): per order ${n(o.order.commits, 2)} commits, ${n(o.order.redis.scriptCalls, 2)} Redis script calls, ${n(o.order.redis.operations, 1)} operations, ${n(o.order.redis.cpuMicros, 1)} µs Redis CPU; per webhook ${n(o.webhook.commits, 2)} commits, ${n(o.webhook.redis.scriptCalls, 2)} script calls, ${n(o.webhook.redis.operations, 1)} operations, ${n(o.webhook.redis.cpuMicros, 1)} µs Redis CPU; taken off every figure: what the idle process costs, per second, ${n(service.idle.postgresCommitsPerSecond, 1)} Postgres commits, ${n(service.idle.redisScriptCallsPerSecond, 1)} Redis script calls and ${n(service.idle.redisOperationsPerSecond, 1)} operations, ${n(service.idle.redisCpuMicrosPerSecond)} µs of Redis CPU (the background loops).`,
      '',
    );
  }
  const failed = checks.filter((c) => !c.ok);
  lines.push(
    failed.length === 0
      ? `Checks: all ${checks.length} held.`
      : `Checks FAILED: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`,
  );
  return lines.join('\n');
}
