/**
 * Crashes at moments nobody chose. crash-safety.test.ts kills the service at named fault points and cuts Postgres
 * with a proxy; here Postgres itself crashes (`pg_ctl stop -m immediate` on a cluster of the test's own, in the
 * middle of a storm of conversions and payment webhooks), and the service is SIGKILLed from a timer at a random
 * moment under mixed load, round after round, beside a second instance sharing its Redis and Postgres.
 *
 * The standards checked: an outage answers 201/200/409-type answers or a 503 with Retry-After, never a 500 or a
 * hang; nothing acknowledged is lost; nothing is stuck past its deadline; every hold is exactly one order or none;
 * `reconcile --check` is clean at the end and no product is oversold.
 *
 * CI runs a short form. The long form is `node --import tsx bench/crashes.ts --rounds 20 --pg-crashes 5`, which
 * runs this file with CRASH_ROUNDS and PG_CRASHES; CRASH_SEED replays a run's random choices (as far as timing
 * allows: the moments of the kills are chosen by the seed, what is in flight then is not).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import t, { type Test } from 'tap';
import { createDatabase } from '../src/db/connection.js';
import { reconcile, formatReport } from '../src/domain/reconcile.js';
import { signPayload } from '../src/domain/signatures.js';
import { createProductAt } from './support/api.js';
import { describeError } from './support/http.js';
import { privatePostgres, privatePostgresUnavailable } from './support/private-postgres.js';
import { seededRandom } from './support/random.js';
import { conversions, inventory, keysOf, type HoldRecord } from './support/redis-state.js';
import { errorLines, serviceWorld, type Service, type ServiceWorld } from './support/service-process.js';
import { eventually, poll } from './support/wait.js';

const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 3);
const PG_CRASHES = Number(process.env.PG_CRASHES ?? 1);
const SEED = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SECRET = 'whsec_crash_0c1d';

// The service's timings here: recovery looks at a claim half a second after it was made, sweeps every 50 ms, and
// settles overdue orders every 100 ms; holds live 3 s and unpaid orders 2 s, so deadlines pass during the test.
const TIMINGS = {
  // Mixed load from one address: the subject is crashes, not the rate limits.
  RATE_LIMIT: 'off',
  CONVERSION_LEASE_MS: '500',
  SWEEP_INTERVAL_MS: '50',
  RECOVERY_INTERVAL_MS: '100',
  HOLD_TTL_SECONDS: '3',
  ORDER_PAYMENT_TTL_SECONDS: '2',
  DATABASE_TIMEOUT_MS: '500',
  WEBHOOK_SECRET: SECRET,
};
// How long everything may take to settle once the faults are over: holds and payments past their deadlines, plus
// a few leases and passes of the loops, plus a busy machine.
const SETTLE_DEADLINE_MS = 20_000;

t.setTimeout(Math.max(120_000, (ROUNDS + PG_CRASHES) * 30_000));
t.comment(`seed ${SEED} (replay with CRASH_SEED=${SEED}); ${PG_CRASHES} Postgres crash(es), ${ROUNDS} kill round(s)`);

// ---------------------------------------------------------------------------------------------------------------
// What the clients saw.

/** The fields of the service's answers these clients read (holds, orders, payment outcomes, errors). */
interface AnswerBody {
  hold_id?: string;
  order_id?: number;
  status?: string;
  code?: string;
  [field: string]: unknown;
}

/** One request and what came of it: an answer, or the failure that took its place. */
interface Sent {
  what: string;
  status?: number;
  body?: AnswerBody;
  retryAfter?: string | null;
  /** Idempotent-Replayed: true, the stored answer of an earlier request under the same key. */
  replayed?: boolean;
  ms: number;
  /** When it was answered (performance.now()). */
  at: number;
  error?: string;
  /** The client deadline passed: the service hung. */
  hung?: boolean;
}

/** Every request of a test, and the answers the clients were given that must hold afterwards. */
class Ledger {
  readonly sent: Sent[] = [];
  /** hold id -> its qty, for every hold a 201 granted. */
  readonly holds = new Map<string, number>();
  /** holds a 200 said were released. */
  readonly released = new Set<string>();
  /** hold id -> the order id a 201/200 answered. */
  readonly orders = new Map<string, number>();
  /** webhook idempotency key -> the body a 200 answered. */
  readonly webhooks = new Map<
    string,
    { orderId: number; event: 'success' | 'failure'; body: AnswerBody | undefined }
  >();
  /** Answers that contradict an earlier one (another hold for an Idempotency-Key, another order for a hold). */
  readonly contradictions: string[] = [];

  async send(service: Service, what: string, method: string, path: string, body?: unknown, headers = {}) {
    const started = performance.now();
    try {
      const answer = await service.call(method, path, body, headers);
      const sent: Sent = {
        what,
        status: answer.status,
        body: answer.body,
        retryAfter: answer.headers.get('retry-after'),
        replayed: answer.headers.get('idempotent-replayed') === 'true',
        ms: answer.ms,
        at: performance.now(),
      };
      this.sent.push(sent);
      return sent;
    } catch (err) {
      const error = err as Error;
      const sent: Sent = {
        what,
        ms: performance.now() - started,
        at: performance.now(),
        error: describeError(error),
        hung: error.name === 'TimeoutError',
      };
      this.sent.push(sent);
      return sent;
    }
  }

  orderAnswered(holdId: string, orderId: number) {
    const before = this.orders.get(holdId);
    if (before !== undefined && before !== orderId)
      this.contradictions.push(`hold ${holdId} answered orders ${before} and ${orderId}`);
    this.orders.set(holdId, orderId);
  }
}

// What each request may answer besides 503 (which must carry Retry-After). 409s: sold out, a hold released or
// converting or lost, an order already final; 410: a hold that expired first.
const ALLOWED: Record<string, number[]> = {
  hold: [201, 409],
  order: [200, 201, 409, 410],
  release: [200, 409],
  webhook: [200, 409],
};

/** Fails the test for every answer that breaks the outage standard: a 5xx but 503-with-Retry-After, or a hang. */
function expectOnlyHonestAnswers(t: Test, ledger: Ledger, what: string) {
  const wrong = ledger.sent.filter(
    (s) =>
      s.hung ||
      (s.status !== undefined &&
        !ALLOWED[s.what]!.includes(s.status) &&
        !(s.status === 503 && s.retryAfter !== null && s.body?.code === 'SERVICE_UNAVAILABLE')),
  );
  t.same(
    wrong.slice(0, 10).map((s) => `${s.what}: ${s.status ?? s.error} ${JSON.stringify(s.body)}`),
    [],
    `${what}: ${ledger.sent.length} requests, none answered a 500, a 503 without Retry-After, or hung`,
  );
  t.same(ledger.contradictions, [], `${what}: no answer contradicted an earlier one`);
}

/** The counts of a list of sends by what and status, for the test's comments. */
function tallyOf(sent: Sent[]): string {
  const counts = new Map<string, number>();
  for (const s of sent) {
    const key = `${s.what} ${s.status ?? 'no answer'}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${k}: ${n}`).join(', ');
}

/** The p-th percentile (0..100) of some figures, nearest rank. */
function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

// ---------------------------------------------------------------------------------------------------------------
// Clients: each does what a frontend or the payment provider does, retrying on 503 or no answer.

interface Shop {
  ledger: Ledger;
  random: () => number;
  /** The instances a client may reach now (one may be dead: its requests fail, and the client tries again). */
  services: () => Service[];
  products: number[];
  stopped: () => boolean;
}

const pick = <T>(random: () => number, items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

/** Whether a client should try the same request again: no answer, or 503. */
const retryable = (s: Sent) => s.status === undefined || s.status === 503;

/** Sends until the answer is final or `tries` are spent, to any instance, pausing as Retry-After asks (shortened). */
async function withRetries(shop: Shop, tries: number, send: (service: Service) => Promise<Sent>): Promise<Sent> {
  let last: Sent | undefined;
  for (let i = 0; i < tries; i++) {
    last = await send(pick(shop.random, shop.services()));
    if (!retryable(last)) return last;
    await sleep(50 + Math.floor(shop.random() * 100));
  }
  return last!;
}

/** A hold with an Idempotency-Key, retried with the same key; sometimes sent once more after its 201. */
async function placeHold(shop: Shop, buyer: string, n: number): Promise<string | undefined> {
  const key = `${buyer}-${n}`;
  const body = { product_id: pick(shop.random, shop.products), qty: 1 + Math.floor(shop.random() * 2) };
  const headers = { 'idempotency-key': key };
  const placed = await withRetries(shop, 10, (s) => shop.ledger.send(s, 'hold', 'POST', '/api/holds', body, headers));
  if (placed.status !== 201) return undefined;
  const holdId = placed.body!.hold_id!;
  shop.ledger.holds.set(holdId, body.qty);
  if (shop.random() < 0.3) {
    const again = await withRetries(shop, 10, (s) => shop.ledger.send(s, 'hold', 'POST', '/api/holds', body, headers));
    if (again.status === 201 && again.body?.hold_id !== holdId)
      shop.ledger.contradictions.push(`Idempotency-Key ${key} answered holds ${holdId} and ${again.body?.hold_id}`);
  }
  return holdId;
}

/** POST /api/orders for a hold, retried up to `tries` times; the order id when one was answered. */
async function convert(shop: Shop, holdId: string, tries: number): Promise<number | undefined> {
  const placed = await withRetries(shop, tries, (s) =>
    shop.ledger.send(s, 'order', 'POST', '/api/orders', { hold_id: holdId }),
  );
  if (placed.status !== 201 && placed.status !== 200) return undefined;
  const orderId = placed.body!.order_id!;
  shop.ledger.orderAnswered(holdId, orderId);
  return orderId;
}

/** A signed payment webhook, re-signed and retried under the same key as a provider does. */
async function pay(shop: Shop, orderId: number, key: string, event: 'success' | 'failure', tries: number) {
  const fields = { idempotency_key: key, order_id: orderId, event_type: event };
  const raw = JSON.stringify(fields);
  const sent = await withRetries(shop, tries, (s) =>
    // service.call serialises `fields` to the very bytes signed here.
    shop.ledger.send(s, 'webhook', 'POST', '/api/webhooks/payment', fields, {
      'x-signature': signPayload(raw, SECRET),
    }),
  );
  if (sent.status === 200) shop.ledger.webhooks.set(key, { orderId, event, body: sent.body });
}

/**
 * One buyer, over and over until told to stop: a hold, then a conversion (most), a release or nothing; some
 * buyers give up on the first failure (leaving the conversion to recovery); an order is paid, failed or left
 * unpaid, and an earlier delivery is sometimes sent again.
 */
async function buyer(shop: Shop, name: string): Promise<void> {
  for (let n = 0; !shop.stopped(); n++) {
    const holdId = await placeHold(shop, name, n);
    if (holdId === undefined) {
      await sleep(20);
      continue;
    }
    const next = shop.random();
    if (next < 0.15) {
      const released = await withRetries(shop, 10, (s) =>
        shop.ledger.send(s, 'release', 'DELETE', `/api/holds/${holdId}`),
      );
      if (released.status === 200 && released.body?.status === 'released') shop.ledger.released.add(holdId);
      continue;
    }
    if (next < 0.25) continue; // left to expire
    const patient = shop.random() < 0.6;
    const orderId = await convert(shop, holdId, patient ? 30 : 1);
    if (orderId === undefined) continue;
    const payment = shop.random();
    if (payment < 0.7) {
      const event = payment < 0.5 ? 'success' : 'failure';
      await pay(shop, orderId, `evt-${name}-${n}`, event, 30);
    }
    if (shop.random() < 0.2 && shop.ledger.webhooks.size > 0) {
      // The provider delivers an earlier event again: the answer is the stored one.
      const [key, first] = pick(shop.random, [...shop.ledger.webhooks]);
      await pay(shop, first.orderId, key, first.event, 30);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// What must hold once the faults are over.

/**
 * Waits until nothing is in flight: no conversion claimed in Redis, no hold active (they live 3 s), no unpaid order
 * past its deadline, no cancelled order with its units out. Asserts it happens within SETTLE_DEADLINE_MS.
 */
async function expectSettled(t: Test, w: ServiceWorld, products: number[]): Promise<number> {
  const started = Date.now();
  const state = async () => {
    const claimed = (await Promise.all(products.map((p) => conversions(w, p)))).flat().length;
    const held = (await Promise.all(products.map((p) => inventory(w, p)))).reduce((sum, i) => sum + i.held, 0);
    const { rows } = await w.db.query<{ overdue: number; unreturned: number }>(
      `SELECT count(*) FILTER (WHERE status = 'pending_payment' AND payment_due_at <= now())::int AS overdue,
              count(*) FILTER (WHERE status = 'cancelled' AND units_released_at IS NULL)::int AS unreturned
         FROM orders`,
    );
    return { claimed, held, ...rows[0]! };
  };
  const last = await poll(state, (s) => s.claimed + s.held + s.overdue + s.unreturned === 0, SETTLE_DEADLINE_MS, 100);
  t.same(
    last,
    { claimed: 0, held: 0, overdue: 0, unreturned: 0 },
    'settled: no claim left to recover, no hold active past its expiry, no unpaid order past its deadline, no cancelled order with units out',
  );
  return Date.now() - started;
}

/** Every acknowledged answer holds, every hold is exactly one order or none, and Redis agrees with Postgres. */
async function expectNothingLost(t: Test, w: ServiceWorld, ledger: Ledger, products: number[]) {
  const { rows: orderRows } = await w.db.query<{ id: number; hold_id: string; status: string; qty: number }>(
    'SELECT o.id::int AS id, o.hold_id, o.status, i.qty FROM orders o JOIN order_items i ON i.order_id = o.id',
  );
  const ordersOf = new Map<string, typeof orderRows>();
  for (const row of orderRows) ordersOf.set(row.hold_id, [...(ordersOf.get(row.hold_id) ?? []), row]);
  const { rows: claimRows } = await w.db.query<{ hold_id: string; ordered: number }>(
    "SELECT hold_id, count(*) FILTER (WHERE outcome = 'ordered')::int AS ordered FROM hold_claims GROUP BY hold_id",
  );
  const orderedClaims = new Map(claimRows.map((r) => [r.hold_id, r.ordered]));

  // Every 201/200 order answered is in Postgres, under its hold.
  const lostOrders = [...ledger.orders].filter(([holdId, id]) => !ordersOf.get(holdId)?.some((o) => o.id === id));
  t.same(lostOrders, [], `all ${ledger.orders.size} orders answered 201/200 are in Postgres`);

  // Every webhook answered 200 is recorded with that answer: a retry would be answered the same.
  const { rows: webhookRows } = await w.db.query<{ idempotency_key: string; response_status: number; body: unknown }>(
    'SELECT idempotency_key, response_status, response_body AS body FROM processed_webhooks',
  );
  const recorded = new Map(webhookRows.map((r) => [r.idempotency_key, r]));
  const lostWebhooks = [...ledger.webhooks].filter(([key, { body }]) => {
    const row = recorded.get(key);
    // jsonb keeps keys in its own order: compare values, not texts.
    return row?.response_status !== 200 || !isDeepStrictEqual(row.body, body);
  });
  t.same(lostWebhooks, [], `all ${ledger.webhooks.size} webhooks answered 200 are recorded with that answer`);

  // Every hold record: converted and exactly one order of its qty with one 'ordered' claim, or no order at all.
  const records = new Map<string, HoldRecord>();
  for (const productId of products)
    for (const [holdId, raw] of Object.entries(await w.redis.hgetall(keysOf(w, productId).holds)))
      records.set(holdId, JSON.parse(raw) as HoldRecord);
  const wrong: string[] = [];
  let twoOrders = 0;
  for (const [holdId, record] of records) {
    const orders = ordersOf.get(holdId) ?? [];
    const ordered = orderedClaims.get(holdId) ?? 0;
    if (orders.length > 1) twoOrders++;
    if (record.status === 'converted') {
      if (orders.length !== 1 || ordered !== 1 || String(orders[0]!.id) !== record.order_id)
        wrong.push(`${holdId} converted with ${orders.length} orders, ${ordered} 'ordered' claims`);
    } else if (orders.length !== 0 || ordered !== 0) {
      wrong.push(`${holdId} ${record.status} with ${orders.length} orders, ${ordered} 'ordered' claims`);
    }
  }
  t.equal(twoOrders, 0, 'no hold has two orders');
  t.same(wrong.slice(0, 10), [], `all ${records.size} holds are exactly one order or none, none left converting`);
  const missingHolds = [...ledger.holds.keys()].filter((h) => !records.has(h));
  t.same(missingHolds, [], `all ${ledger.holds.size} holds answered 201 are recorded`);
  const notReleased = [...ledger.released].filter((h) => records.get(h)?.status !== 'released');
  t.same(notReleased, [], `all ${ledger.released.size} holds answered released stay released, with no order`);
  const ordersWithoutRecord = orderRows.filter((o) => !records.has(o.hold_id)).map((o) => o.id);
  t.same(ordersWithoutRecord, [], 'every order in Postgres is of a hold Redis knows');

  const kysely = createDatabase({ url: w.databaseUrl, timeoutMs: 10_000, poolSize: 2 });
  try {
    const report = await reconcile({ db: kysely, redis: w.redis, prefix: w.prefix, productIds: products });
    t.ok(report.clean, `reconcile --check is clean\n${formatReport(report)}`);
  } finally {
    await kysely.destroy();
  }
  for (const productId of products) {
    const units = await inventory(w, productId);
    const { rows } = await w.db.query<{ n: number }>(
      `SELECT coalesce(sum(i.qty), 0)::int AS n FROM order_items i JOIN orders o ON o.id = i.order_id
        WHERE i.product_id = $1 AND o.status IN ('pending_payment', 'paid')`,
      [productId],
    );
    t.ok(
      units.sold === rows[0]!.n && units.sold + units.held <= units.stock,
      `product ${productId}: sold ${units.sold} == units of live orders ${rows[0]!.n}, not oversold (stock ${units.stock})`,
    );
  }
  return { twoOrders, lostOrders: lostOrders.length, lostWebhooks: lostWebhooks.length };
}

/** The figures every test reports once the checks ran. */
function lossFigures(ledger: Ledger, found: { twoOrders: number; lostOrders: number; lostWebhooks: number }) {
  const replays = ledger.sent.filter((s) => s.replayed).length;
  return (
    `orders answered ${ledger.orders.size}, lost ${found.lostOrders}; webhooks answered 200 ${ledger.webhooks.size}, ` +
    `lost ${found.lostWebhooks}; holds with two orders: ${found.twoOrders}; answers replayed under a key: ${replays}`
  );
}

// ---------------------------------------------------------------------------------------------------------------

const noPostgresBinaries = privatePostgresUnavailable();

t.test(
  'Postgres crashes (pg_ctl stop -m immediate) during a storm of conversions and webhooks: 503s while it is down, nothing acknowledged lost, nothing stuck',
  { skip: noPostgresBinaries ?? false },
  async (t) => {
    const random = seededRandom(SEED);
    const postgres = await privatePostgres(t);
    const w = await serviceWorld(t, TIMINGS, { postgresServer: postgres.url });
    const services = await Promise.all([w.start(), w.start()]);
    const products = [];
    for (let i = 0; i < 3; i++) products.push(await createProductAt(services[0]!.base, { stock: 400 }));

    const ledger = new Ledger();
    let stopped = false;
    const shop: Shop = { ledger, random, services: () => services, products, stopped: () => stopped };
    const buyers = Array.from({ length: 8 }, (_, i) => buyer(shop, `pg-buyer-${i}`));

    const outages: { down: number; up: number; recoveryMs: number }[] = [];
    for (let crash = 0; crash < PG_CRASHES; crash++) {
      await sleep(600 + Math.floor(random() * 900));
      const down = performance.now();
      await postgres.stop('immediate');
      await sleep(1000 + Math.floor(random() * 1000));
      const restarting = performance.now();
      await postgres.start();
      const up = performance.now();
      outages.push({ down, up, recoveryMs: up - restarting });
      // Wait for the next conversion answered 201 after the restart: the service is back in business.
      await poll(
        async () => ledger.sent.some((s) => s.what === 'order' && s.status === 201 && s.at > up),
        (back) => back,
        15_000,
        20,
      );
    }
    await sleep(1000);
    stopped = true;
    await Promise.all(buyers);

    const unavailable = ledger.sent.filter((s) => s.status === 503);
    const duringOutage = ledger.sent.filter((s) => outages.some((o) => s.at >= o.down && s.at - s.ms <= o.up));
    const backAfter = outages.map((o) => {
      const first = ledger.sent.find((s) => s.what === 'order' && s.status === 201 && s.at > o.up);
      return first ? first.at - o.up : NaN;
    });
    t.ok(unavailable.length > 0, `${unavailable.length} requests answered 503 while Postgres was down`);
    t.ok(
      backAfter.every((ms) => Number.isFinite(ms)),
      'conversions succeed again after every restart',
    );
    t.comment(`answers: ${tallyOf(ledger.sent)}`);
    t.comment(`while Postgres was down (answered after the crash, sent before the restart): ${tallyOf(duringOutage)}`);
    t.comment(
      `measured: 503 latency p50 ${percentile(
        unavailable.map((s) => s.ms),
        50,
      ).toFixed(0)} ms, p99 ${percentile(
        unavailable.map((s) => s.ms),
        99,
      ).toFixed(0)} ms, max ${Math.max(...unavailable.map((s) => s.ms)).toFixed(0)} ms (${unavailable.length} answers)`,
    );
    t.comment(
      `measured: Postgres crash recovery (pg_ctl start) ${outages.map((o) => o.recoveryMs.toFixed(0)).join(', ')} ms; first 201 order ${backAfter.map((ms) => ms.toFixed(0)).join(', ')} ms after Postgres accepted connections`,
    );
    expectOnlyHonestAnswers(t, ledger, 'during the crashes');

    const settleMs = await expectSettled(t, w, products);
    const found = await expectNothingLost(t, w, ledger, products);
    // The loops had work: orders nobody paid were cancelled at their deadline, their units back on sale (checked
    // above).
    const { rows } = await w.db.query<{ abandoned: number; overdue: number }>(
      `SELECT (SELECT count(*) FROM hold_claims WHERE outcome = 'abandoned')::int AS abandoned,
              (SELECT count(*) FROM orders o WHERE status = 'cancelled' AND NOT EXISTS
                 (SELECT 1 FROM processed_webhooks p WHERE p.order_id = o.id AND p.event_type = 'failure'))::int AS overdue`,
    );
    const { abandoned, overdue } = rows[0]!;
    // Reported, not required: whether a crash strands a claim depends on the moment it lands (CI saw 0 once);
    // that every claim left ends abandoned or ordered is checked above whatever the count.
    t.comment(`recovery abandoned ${abandoned} claims the crash left behind`);
    t.ok(overdue > 0, `${overdue} orders unpaid at their deadline were cancelled by the settlement loop`);
    t.comment(`measured: settled ${settleMs} ms after the storm; ${lossFigures(ledger, found)}`);
    for (const service of services) {
      t.equal(service.child.exitCode, null, 'the service process is still running');
      t.ok(await eventually(() => service.isReady(), 10_000, 100), 'and ready: /readyz answers 200 again');
    }
    // Only warnings and retries of the background loops are expected while Postgres was away.
    const errors = errorLines(...services).filter((line) => !/failed; retrying/.test(line));
    t.same(errors.slice(0, 10), [], 'nothing logged at level error but the loops retrying');
  },
);

t.test(
  'the service SIGKILLed at random moments under mixed load, beside a second instance: every hold is one order or none, nothing acknowledged lost',
  async (t) => {
    const random = seededRandom(SEED + 1);
    const w = await serviceWorld(t, TIMINGS);
    const live = await Promise.all([w.start(), w.start()]);
    const all = [...live];
    const products = [];
    for (let i = 0; i < 3; i++) products.push(await createProductAt(live[0]!.base, { stock: 300 }));

    const ledger = new Ledger();
    const kills: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      let stopped = false;
      const shop: Shop = { ledger, random, services: () => live, products, stopped: () => stopped };
      const buyers = Array.from({ length: 6 }, (_, i) => buyer(shop, `r${round}-buyer-${i}`));
      // The victim's successor starts now (a start takes seconds), so it is up soon after the victim died: a
      // restart, minus the wait. It finds the dead one's claims in the shared stores, as a restarted one would.
      const successor = w.start();
      successor.catch(() => {}); // awaited below; not an unhandled rejection meanwhile
      // The victim and the moment: a timer, not a code path, picks when the process dies.
      const victim = round % 2;
      const delayMs = 200 + Math.floor(random() * 1500);
      await sleep(delayMs);
      live[victim]!.child.kill('SIGKILL');
      const exit = await live[victim]!.exited;
      kills.push(delayMs);
      if (exit.signal !== 'SIGKILL') t.fail(`round ${round}: the service died of ${JSON.stringify(exit)}`);
      // The survivor carries the load (clients retry there) for a moment, then the successor takes the place.
      await sleep(300 + Math.floor(random() * 500));
      stopped = true;
      await Promise.all(buyers);
      live[victim] = await successor;
      all.push(live[victim]!);
    }
    t.comment(`killed after: ${kills.join(', ')} ms of load`);
    t.comment(`answers: ${tallyOf(ledger.sent)}`);
    t.ok(
      ledger.sent.some((s) => s.status === undefined),
      `some requests met a dying process (${ledger.sent.filter((s) => s.status === undefined).length})`,
    );
    t.ok(ledger.orders.size > 0 && ledger.webhooks.size > 0, 'orders were made and paid during the rounds');
    expectOnlyHonestAnswers(t, ledger, 'across the kills');

    // Every interrupted conversion is finished or abandoned by recovery; then the checks.
    const settleMs = await expectSettled(t, w, products);
    const found = await expectNothingLost(t, w, ledger, products);
    const { rows } = await w.db.query<{ abandoned: number; ordered: number }>(
      `SELECT count(*) FILTER (WHERE outcome = 'abandoned')::int AS abandoned,
              count(*) FILTER (WHERE outcome = 'ordered')::int AS ordered FROM hold_claims`,
    );
    t.comment(
      `measured: ${ROUNDS} kills; settled ${settleMs} ms after the last restart; claims ordered ${rows[0]!.ordered}, abandoned by recovery ${rows[0]!.abandoned}; ${lossFigures(ledger, found)}`,
    );
    t.same(errorLines(...all).slice(0, 10), [], 'nothing logged at level error');
  },
);
