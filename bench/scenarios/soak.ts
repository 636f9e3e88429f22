import { readFileSync } from 'node:fs';
import type autocannon from 'autocannon';
import { signPayload } from '../../src/domain/signatures.js';
import { createProduct, getProduct, mapConcurrently } from '../lib/api.js';
import type { Deployment, ManagedDeployment } from '../lib/environment.js';
import { checkInvariants, type Check } from '../lib/invariants.js';
import { describeLoad, JSON_HEADERS, runLoad } from '../lib/load.js';
import { readRssKb } from '../lib/proc-stats.js';
import { sleep } from '../lib/processes.js';
import { HUGE_STOCK, type MemoryTrend, type Scenario, type SoakFigures } from '../lib/scenario.js';

/** Hold lifetime of the soak's deployment: short, so abandoned holds expire during the run and the sweeper works. */
const SOAK_HOLD_TTL_SECONDS = 5;
/** Stock of the scarce product: less than its abandoned holds keep reserved at once, so holds on it are refused at times. */
const SCARCE_STOCK = 20;
/** Share of the soak left out before the memory is compared (heap and JIT settle), and the share of each window. */
const WARM_UP_SHARE = 0.2;
const WINDOW_SHARE = 0.2;
/** Most growth of a memory figure's median, first window to last, in %. */
const MAX_GROWTH_PERCENT = 10;
/** Abandoned holds read back at the end to see the sweeper expired them. */
const EXPIRED_SAMPLE = 50;

// autocannon starts a connection's sequence over when setupRequest returns nothing (see checkout.ts).
const START_OVER = undefined as unknown as autocannon.Request;

/** What a cycle does with its hold: release it, turn it into an order paid or failed, or leave it to expire. */
type Plan = 'release' | 'pay' | 'fail' | 'abandon';

/** What one connection carries through one cycle of the mix. */
interface Cycle {
  plan?: Plan;
  productId?: number;
  qty?: number;
  /** The hold request's body and Idempotency-Key (none for about half of them), for its replay. */
  holdBody?: string;
  idempotencyKey?: string;
  holdId?: string;
  orderId?: number;
  webhookBody?: string;
  webhookStatus?: string;
}

/** What finishing a cut cycle needs. */
interface OpenCycle {
  plan: Plan;
  productId: number;
  qty: number;
}

/** Everything the mix's answers told, over all its loads. */
class Tally {
  readonly answers: Record<string, Record<string, number>> = {};
  /** Answers that were not what their request expects, counted, with the first few described. */
  wrong = 0;
  readonly wrongExamples: string[] = [];
  /** 409s of holds on the scarce product: the expected refusal. */
  refusals = 0;
  /** Units in 201s of first hold requests (replays not counted), per product. */
  readonly granted = new Map<number, number>();
  /** Units of orders answered `paid`, per product. */
  readonly paidUnits = new Map<number, number>();
  readonly abandoned: string[] = [];
  abandonedCount = 0;
  /** Latest expires_at of any hold granted (ms since the epoch). */
  lastExpiry = 0;
  /**
   * Cycles a load stopped in the middle of: holds whose order request got no answer, orders whose webhook got
   * none. settleCutCycles finishes them, so every order is settled and counted at the end.
   */
  readonly ordering = new Map<string, OpenCycle>();
  readonly openOrders = new Map<number, OpenCycle>();

  count(kind: string, status: number): void {
    const byStatus = (this.answers[kind] ??= {});
    byStatus[status] = (byStatus[status] ?? 0) + 1;
  }

  /** The first answer to an order's webhook: the order's state as the payment left it. */
  settled(orderId: number, cycle: OpenCycle, kind: string, status: number, body: string): void {
    const answered = parse<{ status: string }>(body).status;
    const ok = status === 200 && answered === (cycle.plan === 'pay' ? 'paid' : 'cancelled');
    this.expect(kind, status, ok, body);
    if (ok && answered === 'paid') add(this.paidUnits, cycle.productId, cycle.qty);
    this.openOrders.delete(orderId);
  }

  expect(kind: string, status: number, ok: boolean, body: string): void {
    this.count(kind, status);
    if (ok) return;
    this.wrong++;
    if (this.wrongExamples.length < 5) this.wrongExamples.push(`${kind} → ${status} ${body.slice(0, 160)}`);
  }
}

const add = (map: Map<number, number>, id: number, n: number) => map.set(id, (map.get(id) ?? 0) + n);

function parse<T>(body: string): Partial<T> {
  try {
    return JSON.parse(body) as Partial<T>;
  } catch {
    return {};
  }
}

function pick<T>(weighted: readonly [T, number][]): T {
  let r = Math.random() * weighted.reduce((sum, [, w]) => sum + w, 0);
  for (const [value, weight] of weighted) if ((r -= weight) < 0) return value;
  return weighted[weighted.length - 1]![0];
}

// Units of the scarce product always come back (released, expired, or their order's payment failed), so it stays
// at the edge of selling out for the whole run instead of selling out once.
const HOT_PLANS: [Plan, number][] = [
  ['release', 25],
  ['pay', 30],
  ['fail', 15],
  ['abandon', 30],
];
const SCARCE_PLANS: [Plan, number][] = [
  ['release', 40],
  ['fail', 20],
  ['abandon', 40],
];

const orderBody = (holdId: string) => JSON.stringify({ hold_id: holdId, payment_method: 'card' });

/** The payment provider's webhook for an order: `success` when the cycle pays, `failure` when it fails. */
function webhookBody(runTag: string, orderId: number, plan: Plan): string {
  return JSON.stringify({
    idempotency_key: `soak-${runTag}-pay-${orderId}`,
    order_id: orderId,
    event_type: plan === 'pay' ? 'success' : 'failure',
  });
}

function signedWebhook(body: string, secret: string): { body: string; headers: Record<string, string> } {
  return {
    body,
    headers: secret ? { ...JSON_HEADERS, 'x-signature': signPayload(body, secret) } : { ...JSON_HEADERS },
  };
}

/**
 * Finishes the cycles a load stopped in the middle of, as a client would after a lost answer: asks again for the
 * order of a hold whose order request went unanswered (200: it was made; 410: the hold expired meanwhile, so no
 * order), then sends every open order its webhook.
 */
async function settleCutCycles(url: string, secret: string, runTag: string, tally: Tally): Promise<number> {
  // The requests the load left in flight may still be running in the service (a conversion, a webhook): give
  // them a moment, and ask again while one is still under way (409).
  await sleep(500);
  const post = async (path: string, init: { body: string; headers: Record<string, string> }) => {
    for (let attempt = 1; ; attempt++) {
      const response = await fetch(`${url}${path}`, { method: 'POST', ...init, signal: AbortSignal.timeout(30_000) });
      const answer = { status: response.status, body: await response.text() };
      if (answer.status !== 409 || attempt === 10) return answer;
      await sleep(200);
    }
  };
  const cut = tally.ordering.size + tally.openOrders.size;
  await mapConcurrently([...tally.ordering], 8, async ([holdId, cycle]) => {
    const { status, body } = await post('/api/orders', { body: orderBody(holdId), headers: { ...JSON_HEADERS } });
    const orderId = parse<{ order_id: number }>(body).order_id;
    tally.expect('order (after the load)', status, status === 200 || status === 201 || status === 410, body);
    tally.ordering.delete(holdId);
    if ((status === 200 || status === 201) && typeof orderId === 'number') tally.openOrders.set(orderId, cycle);
  });
  await mapConcurrently([...tally.openOrders], 8, async ([orderId, cycle]) => {
    const { status, body } = await post(
      '/api/webhooks/payment',
      signedWebhook(webhookBody(runTag, orderId, cycle.plan), secret),
    );
    tally.settled(orderId, cycle, 'webhook (after the load)', status, body);
  });
  return cut;
}

/**
 * The mix, as one autocannon sequence a connection repeats: a hold (about half with an Idempotency-Key, 1–3
 * units, one in five on the scarce product), its replay when keyed or else a product read, then by plan a
 * release, an order, or a read of the hold (left to expire); an order's signed payment webhook, `success` or
 * `failure`, sometimes delivered twice; product reads fill the other steps.
 */
function mixRequests(
  ids: { hot: number; scarce: number },
  secret: string,
  runTag: string,
  tally: Tally,
): autocannon.Request[] {
  let serial = 0;
  const readProduct = (request: autocannon.Request, c: Cycle): autocannon.Request =>
    c.holdId
      ? { ...request, method: 'GET', path: `/api/products/${c.productId}`, headers: {}, body: undefined }
      : START_OVER;
  const webhook = (kind: string, duplicate: boolean): autocannon.Request => ({
    method: 'POST',
    path: '/api/webhooks/payment',
    setupRequest: (request, c: Cycle) => {
      if (c.orderId === undefined) return duplicate ? START_OVER : readProduct(request, c);
      if (duplicate && Math.random() >= 0.3) return START_OVER;
      if (!duplicate) c.webhookBody = webhookBody(runTag, c.orderId, c.plan!);
      return { ...request, ...signedWebhook(c.webhookBody!, secret) };
    },
    onResponse: (status, body, c: Cycle) => {
      if (c.orderId === undefined) return tally.expect('product read', status, status === 200, body);
      const answered = parse<{ status: string }>(body).status;
      if (duplicate) {
        tally.expect(kind, status, status === 200 && answered === c.webhookStatus, body);
      } else {
        tally.settled(c.orderId, { plan: c.plan!, productId: c.productId!, qty: c.qty! }, kind, status, body);
      }
      c.webhookStatus = answered;
    },
  });

  return [
    {
      method: 'POST',
      path: '/api/holds',
      setupRequest: (request, c: Cycle) => {
        const scarce = Math.random() < 0.2;
        c.productId = scarce ? ids.scarce : ids.hot;
        c.plan = pick(scarce ? SCARCE_PLANS : HOT_PLANS);
        c.qty = 1 + Math.floor(Math.random() * 3);
        c.idempotencyKey = Math.random() < 0.5 ? `soak-${runTag}-${serial++}` : undefined;
        c.holdBody = JSON.stringify({ product_id: c.productId, qty: c.qty });
        const headers: Record<string, string> = { ...JSON_HEADERS };
        if (c.idempotencyKey) headers['idempotency-key'] = c.idempotencyKey;
        return { ...request, headers, body: c.holdBody };
      },
      onResponse: (status, body, c: Cycle) => {
        c.holdId = undefined;
        const answer = parse<{ hold_id: string; expires_at: string; code: string }>(body);
        if (status === 409 && c.productId === ids.scarce && answer.code === 'INSUFFICIENT_STOCK') {
          tally.count('hold', status);
          tally.refusals++;
          return;
        }
        tally.expect('hold', status, status === 201 && typeof answer.hold_id === 'string', body);
        if (status !== 201 || !answer.hold_id) return;
        c.holdId = answer.hold_id;
        add(tally.granted, c.productId!, c.qty!);
        tally.lastExpiry = Math.max(tally.lastExpiry, Date.parse(answer.expires_at ?? ''));
      },
    },
    {
      method: 'POST',
      path: '/api/holds',
      setupRequest: (request, c: Cycle) => {
        if (!c.holdId) return START_OVER;
        if (!c.idempotencyKey) return readProduct(request, c);
        return {
          ...request,
          headers: { ...JSON_HEADERS, 'idempotency-key': c.idempotencyKey },
          body: c.holdBody,
        };
      },
      onResponse: (status, body, c: Cycle, headers) => {
        if (!c.idempotencyKey) return tally.expect('product read', status, status === 200, body);
        const replayed = headers?.['idempotent-replayed'] === 'true';
        const sameHold = parse<{ hold_id: string }>(body).hold_id === c.holdId;
        tally.expect('hold replay', status, status === 201 && replayed && sameHold, body);
      },
    },
    {
      method: 'POST',
      path: '/api/orders',
      setupRequest: (request, c: Cycle) => {
        const holdPath = `/api/holds/${encodeURIComponent(c.holdId!)}`;
        if (c.plan === 'release') return { ...request, method: 'DELETE', path: holdPath, headers: {}, body: undefined };
        if (c.plan === 'abandon') {
          tally.abandonedCount++;
          if (tally.abandoned.length < EXPIRED_SAMPLE * 4) tally.abandoned.push(c.holdId!);
          return { ...request, method: 'GET', path: holdPath, headers: {}, body: undefined };
        }
        tally.ordering.set(c.holdId!, { plan: c.plan!, productId: c.productId!, qty: c.qty! });
        return { ...request, headers: { ...JSON_HEADERS }, body: orderBody(c.holdId!) };
      },
      onResponse: (status, body, c: Cycle) => {
        if (c.plan === 'release' || c.plan === 'abandon') {
          const wanted = c.plan === 'release' ? 'released' : 'held';
          const ok = status === 200 && parse<{ status: string }>(body).status === wanted;
          return tally.expect(c.plan === 'release' ? 'release' : 'hold read', status, ok, body);
        }
        tally.ordering.delete(c.holdId!);
        const orderId = parse<{ order_id: number }>(body).order_id;
        tally.expect('order', status, status === 201 && typeof orderId === 'number', body);
        c.orderId = status === 201 ? orderId : undefined;
        if (c.orderId !== undefined)
          tally.openOrders.set(c.orderId, { plan: c.plan!, productId: c.productId!, qty: c.qty! });
      },
    },
    webhook('webhook', false),
    webhook('webhook duplicate', true),
  ];
}

/** Median of the samples taken in [from, to) (ms since the epoch). */
function windowMedian(samples: [number, number][], from: number, to: number): { median: number; n: number } {
  const values = samples
    .filter(([at]) => at >= from && at < to)
    .map(([, v]) => v)
    .sort((a, b) => a - b);
  if (values.length === 0) return { median: Number.NaN, n: 0 };
  const mid = values.length >> 1;
  return { median: values.length % 2 ? values[mid]! : (values[mid - 1]! + values[mid]!) / 2, n: values.length };
}

/** The memory trend of a series over a soak that ran from `start` to `end` (ms since the epoch). */
function trendOf(samples: [number, number][], start: number, end: number): MemoryTrend | undefined {
  const span = end - start;
  const first = windowMedian(samples, start + WARM_UP_SHARE * span, start + (WARM_UP_SHARE + WINDOW_SHARE) * span);
  const last = windowMedian(samples, end - WINDOW_SHARE * span, end + 1);
  if (first.n === 0 || last.n === 0) return undefined;
  const mb = (bytes: number) => bytes / 2 ** 20;
  return {
    firstMedianMb: mb(first.median),
    lastMedianMb: mb(last.median),
    growthPercent: (100 * (last.median - first.median)) / first.median,
    firstSamples: first.n,
    lastSamples: last.n,
  };
}

/** The `memory usage` lines of a service log (MEMORY_LOG_INTERVAL_MS): [time, heapUsed bytes]. */
function heapSamples(logPath: string): [number, number][] {
  const samples: [number, number][] = [];
  for (const line of readFileSync(logPath, 'utf8').split('\n')) {
    if (!line.includes('"memory usage"')) continue;
    const entry = parse<{ time: number; memory: { heapUsed: number } }>(line);
    if (entry.time && entry.memory) samples.push([entry.time, entry.memory.heapUsed]);
  }
  return samples;
}

function describeTrend(what: string, trend: MemoryTrend | undefined): string {
  if (!trend) return `${what}: not measured`;
  const sign = trend.growthPercent >= 0 ? '+' : '';
  return (
    `${what} ${trend.firstMedianMb.toFixed(1)} → ${trend.lastMedianMb.toFixed(1)} MiB (${sign}${trend.growthPercent.toFixed(1)}%, ` +
    `medians of ${trend.firstSamples} and ${trend.lastSamples} samples)`
  );
}

function growthCheck(what: string, trend: MemoryTrend | undefined): Check {
  return {
    name: `soak: ${what} grows ≤ ${MAX_GROWTH_PERCENT}% after the warm-up`,
    ok: trend !== undefined && trend.growthPercent <= MAX_GROWTH_PERCENT,
    detail: describeTrend(what, trend),
  };
}

/**
 * A long run of the whole mix at a fixed rate, half of what the same mix reached at full load a moment before
 * (the probe): holds with and without an Idempotency-Key (and their replays), releases, orders, signed payment
 * webhooks that succeed or fail (some delivered twice), product and hold reads, and holds left to expire
 * (HOLD_TTL_SECONDS=5, so the sweeper works throughout). It samples the service's RSS (/proc) and V8 heap used
 * (its memory log) every few seconds, and fails when either grew more than 10% from the first window after the
 * warm-up to the last, when any answer was not what its request expects, or when the state does not add up at
 * the end: every hold ended, sold = the units of the orders answered `paid`, no order left pending, and
 * `npm run reconcile -- --check` clean.
 */
export const soak: Scenario = {
  name: 'soak',
  summary: 'the whole mix for 10 min (smoke 30 s) at half its probed maximum rate; memory must not grow',
  async run({ settings, environment, deployment: shared, log }) {
    const duration = settings.soakDuration;
    const sampleMs = Math.min(5000, Math.max(500, Math.round((duration * 1000) / 120)));
    let managed: ManagedDeployment | undefined;
    if (environment) {
      managed = await environment.launchService('service-soak', {
        HOLD_TTL_SECONDS: String(SOAK_HOLD_TTL_SECONDS),
        MEMORY_LOG_INTERVAL_MS: String(sampleMs),
        // The soak judges memory and answers over time, not outage handling: a shared machine that starves Redis
        // of CPU for half a second must not turn into 503s that fail it (outages are the fault tests' subject).
        REDIS_COMMAND_TIMEOUT_MS: '3000',
        DATABASE_TIMEOUT_MS: '5000',
      });
    }
    const deployment: Deployment = managed ?? shared;
    try {
      const ids = {
        hot: await createProduct(deployment.url, deployment.adminToken, { name: 'bench soak', stock: HUGE_STOCK }),
        scarce: await createProduct(deployment.url, deployment.adminToken, {
          name: 'bench soak scarce',
          stock: SCARCE_STOCK,
        }),
      };
      const tally = new Tally();
      const runTag = Date.now().toString(36);
      const requests = mixRequests(ids, deployment.webhookSecret, runTag, tally);
      let cutCycles = 0;
      const mixLoad = async (title: string, seconds: number, overallRate?: number) => {
        const load = await runLoad({
          title,
          url: deployment.url,
          connections: settings.connections,
          duration: seconds,
          overallRate,
          requests,
          expected: [200, 201, 409],
          pid: deployment.pid,
        });
        cutCycles += await settleCutCycles(deployment.url, deployment.webhookSecret, runTag, tally);
        return load;
      };

      if (managed) {
        log(`soak: ${settings.warmup} s warm-up of a fresh service (HOLD_TTL_SECONDS=${SOAK_HOLD_TTL_SECONDS})`);
        await mixLoad('soak: warm-up', settings.warmup);
      }
      const probe = await mixLoad('soak: probe at full load', settings.soakProbe);
      const targetRate = Math.max(1, Math.floor(probe.requestsPerSecond / 2));
      log(`soak: probe ${describeLoad(probe)}`);
      log(
        `soak: ${duration} s at ${targetRate.toLocaleString('en-US')} req/s (half the probe), memory every ${sampleMs} ms`,
      );

      const rss: [number, number][] = [];
      const pid = deployment.pid;
      const sampleRss = () => {
        if (pid !== undefined) rss.push([Date.now(), readRssKb(pid) * 1024]);
      };
      const start = Date.now();
      sampleRss();
      const sampler = setInterval(sampleRss, sampleMs);
      const load = await runLoad({
        title: 'soak',
        url: deployment.url,
        connections: settings.connections,
        duration,
        overallRate: targetRate,
        requests,
        expected: [200, 201, 409],
        pid: deployment.pid,
      }).finally(() => clearInterval(sampler));
      sampleRss();
      const end = Date.now();
      cutCycles += await settleCutCycles(deployment.url, deployment.webhookSecret, runTag, tally);
      log(`soak: ${describeLoad(load)}`);

      const heap = managed?.logPath ? heapSamples(managed.logPath).filter(([at]) => at >= start && at <= end) : [];
      const relative = (samples: [number, number][]) =>
        samples.map(([at, bytes]): [number, number] => [(at - start) / 1000, bytes / 2 ** 20]);
      const figures: SoakFigures = {
        probeRate: probe.requestsPerSecond,
        targetRate,
        achievedRate: load.requestsPerSecond,
        rss: trendOf(rss, start, end),
        heapUsed: heap.length > 0 ? trendOf(heap, start, end) : undefined,
        series: { rss: relative(rss), heapUsed: relative(heap) },
        answers: tally.answers,
      };

      const endState = async (): Promise<Check[]> => {
        const checks: Check[] = [
          {
            name: 'soak: every answer was the one its request expects (no 5xx, no 4xx but the refusals)',
            ok: tally.wrong === 0 && load.errors === 0 && probe.errors === 0,
            detail:
              `${tally.wrong} wrong answers${tally.wrongExamples.length ? ` (${tally.wrongExamples.join('; ')})` : ''}; ` +
              `${probe.errors + load.errors} connection errors; ${tally.refusals} expected refusals (409 on the scarce product)`,
          },
        ];
        // 30 s is within the heap's growth to its working size: the smoke form reports the trend, never fails on it.
        if (managed && !settings.smoke) {
          checks.push(growthCheck('RSS', figures.rss), growthCheck('V8 heap used', figures.heapUsed));
        }

        // Every hold ends: released, converted, or expired by the sweeper once past its lifetime.
        const deadline = Math.max(Date.now(), tally.lastExpiry) + 20_000;
        let products = await Promise.all([getProduct(deployment.url, ids.hot), getProduct(deployment.url, ids.scarce)]);
        while (products.some((p) => p.held > 0) && Date.now() < deadline) {
          await sleep(250);
          products = await Promise.all([getProduct(deployment.url, ids.hot), getProduct(deployment.url, ids.scarce)]);
        }
        const [hot, scarce] = products as [(typeof products)[0], (typeof products)[0]];
        checks.push({
          name: 'soak: every hold ended (held = 0) once past its lifetime',
          ok: hot.held === 0 && scarce.held === 0,
          detail: `held ${hot.held} and ${scarce.held} ${Math.max(0, Math.round((Date.now() - tally.lastExpiry) / 1000))} s after the last expiry`,
        });
        const sample = tally.abandoned.filter((_, i) => i % 4 === 0).slice(0, EXPIRED_SAMPLE);
        const statuses = await mapConcurrently(sample, 8, async (id) => {
          const response = await fetch(`${deployment.url}/api/holds/${encodeURIComponent(id)}`);
          return response.ok ? ((await response.json()) as { status: string }).status : `HTTP ${response.status}`;
        });
        const notExpired = statuses.filter((s) => s !== 'expired');
        checks.push({
          name: 'soak: abandoned holds were expired',
          ok: sample.length > 0 && notExpired.length === 0,
          detail: `${sample.length} of ${tally.abandonedCount.toLocaleString('en-US')} abandoned holds read back: ${
            notExpired.length === 0 ? 'all expired' : `not expired: ${notExpired.slice(0, 5).join(', ')}`
          }`,
        });
        const paidHot = tally.paidUnits.get(ids.hot) ?? 0;
        checks.push({
          name: 'soak: sold = the units of the orders answered paid',
          ok: hot.sold === paidHot && scarce.sold === 0,
          detail: `sold ${hot.sold} (paid ${paidHot}) and ${scarce.sold} on the scarce product (never paid for)`,
        });
        if (deployment.stores) {
          const { rows } = await deployment.stores.db.query<{ status: string; n: string }>(
            'SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status',
          );
          const byStatus = Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
          checks.push({
            name: 'soak: every order settled by its webhook (none pending)',
            ok: !byStatus.pending_payment && rows.length > 0,
            detail: rows.map((r) => `${r.status} ${Number(r.n).toLocaleString('en-US')}`).join(', ') || 'no orders',
          });
        }
        if (managed) {
          const reconciled = await managed.reconcileCheck();
          checks.push({
            name: 'soak: npm run reconcile -- --check (every product) is clean',
            ok: reconciled.exitCode === 0,
            detail: `exit ${reconciled.exitCode}: ${reconciled.output.split('\n').slice(-3).join(' / ')}`,
          });
        }
        return checks;
      };
      deployment.assertAlive();
      const invariants = await checkInvariants(
        deployment,
        [ids.hot, ids.scarce],
        new Map([[ids.hot, tally.granted.get(ids.hot) ?? 0]]),
        endState,
      );

      const int = (n: number) => Math.round(n).toLocaleString('en-US');
      const notes = [
        `rate: probe (full load, ${settings.soakProbe} s) ${int(figures.probeRate)} req/s; soak asked for half, ` +
          `${int(targetRate)} req/s, and got ${int(figures.achievedRate)} req/s over ${duration} s ` +
          `(${((100 * figures.achievedRate) / targetRate).toFixed(0)}%)`,
        `memory after the first ${WARM_UP_SHARE * 100}% (first ${WINDOW_SHARE * 100}% window vs last, samples every ${sampleMs / 1000} s): ` +
          `${describeTrend('RSS', figures.rss)}; ${describeTrend('V8 heap used', figures.heapUsed)}`,
        `answers: ${Object.entries(tally.answers)
          .map(
            ([kind, codes]) =>
              `${kind} ${Object.entries(codes)
                .map(([c, n]) => `${c}×${int(n)}`)
                .join(' ')}`,
          )
          .join('; ')}`,
      ];
      notes.push(
        `${int(cutCycles)} cycles cut by the end of a load (warm-up, probe, soak) finished afterwards: orders asked for again, webhooks sent`,
      );
      if (settings.smoke) notes.push(`memory growth not enforced in the smoke form (${duration} s is too short)`);
      if (!managed) notes.push('BENCH_URL: V8 heap not measured (the bench did not start the service)');
      return { name: 'soak', load, figures: { soak: figures }, notes, invariants };
    } finally {
      await managed?.stop();
    }
  },
};
