/**
 * Model-based test: random sequences of what buyers (holds, with and without a customer or an Idempotency-Key;
 * releases; conversions), the payment provider (signed webhooks and their copies), an admin (stock changes),
 * time (hold expiry) and Redis (FLUSHALL) do to three products, run against the whole service (a redis-server of
 * its own, its own Postgres database) and against a small model of the rules. After every step both agree on
 * the answer, every product's figures and the orders in Postgres, and available = stock - held - sold >= 0;
 * every run ends with a clean reconcile --check.
 *
 * Time: holds live HOLD_TTL_SECONDS = 1 s by Redis's clock. Before each step every hold within GUARD_MS of its
 * expiry is waited out and swept, so no hold expires while a step runs; a run in which a step took longer than
 * that on a busy machine proves nothing and is discarded (fc.pre), never judged.
 *
 * MODEL_RUNS (default 20) and MODEL_STEPS (most commands a run, default 50) make the long form by hand; a
 * failure prints MODEL_SEED, MODEL_PATH and MODEL_REPLAY_PATH, which replay its shrunk sequence.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import pg from 'pg';
import t from 'tap';
import { createDatabase } from '../src/db/connection.js';
import { reconcile } from '../src/domain/reconcile.js';
import { signPayload } from '../src/domain/signatures.js';
import { productKeys } from '../src/redis/keys.js';
import { admin, buildTestApp, createProduct, type TestApp } from './support/app.js';
import { redisNow, waitPastOnRedisClock } from './support/clock.js';
import { ordersOfProducts } from './support/postgres-state.js';
import { privateRedis } from './support/private-redis.js';
import { eventually } from './support/wait.js';

const RUNS = positiveEnv('MODEL_RUNS', 20);
const STEPS = positiveEnv('MODEL_STEPS', 50);
const SECRET = 'whsec_model';
const MAX_QTY = 6;
const CUSTOMERS = ['ann', 'bob', 'cat'] as const;
// A step (its request and the reads that check it) takes a few ms; this is its margin before any hold expires.
const GUARD_MS = 400;

function positiveEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, not ${raw}`);
  return value;
}

// ---- The model ---------------------------------------------------------------------------------------------

type HoldStatus = 'held' | 'released' | 'expired' | 'converted';
type OrderStatus = 'pending_payment' | 'paid' | 'cancelled' | 'refund_required';

interface ModelProduct {
  id: number;
  stock: number;
  /** 0: none. */
  limit: number;
}

interface ModelHold {
  id: string;
  product: ModelProduct;
  qty: number;
  customer: string | null;
  status: HoldStatus;
  /** ms, Redis's clock. */
  expiresAt: number;
  /** Redis still has its record (a loss keeps only those of live orders). */
  recorded: boolean;
  order?: ModelOrder;
}

interface ModelOrder {
  id: number;
  hold: ModelHold;
  status: OrderStatus;
}

/** A webhook delivered once, and the answer it got: a copy of it must get the same. */
interface Delivery {
  body: string;
  statusCode: number;
  answer: unknown;
}

/** What Redis remembers of an Idempotency-Key: the request it was first used with, and the answer it keeps. */
interface KeyUse {
  /** The first request sent with it, to send again. */
  request: PlaceHold;
  fingerprint: string;
  /** The Redis losses before it was used: a decision from before the last loss is forgotten. */
  losses: number;
  /** Holds and refusals for want of units are replayed; other answers are decided again. */
  answer?: Answer;
}

interface Model {
  /** Names this run's Idempotency-Keys apart from other runs'. */
  run: number;
  products: ModelProduct[];
  holds: ModelHold[];
  orders: ModelOrder[];
  deliveries: Delivery[];
  keys: Map<string, KeyUse>;
  losses: number;
  /** A loss the run went on from without waiting for the rebuild: until it is done, 503s may answer. */
  rebuildUnwaited: boolean;
}

const isLive = (order: ModelOrder) => order.status === 'pending_payment' || order.status === 'paid';
const activeHolds = (m: Model) => m.holds.filter((h) => h.status === 'held' && h.recorded);
const held = (m: Model, p: ModelProduct) =>
  sum(
    activeHolds(m).filter((h) => h.product === p),
    (h) => h.qty,
  );
const sold = (m: Model, p: ModelProduct) =>
  sum(
    m.orders.filter((o) => o.hold.product === p && isLive(o)),
    (o) => o.hold.qty,
  );
/** Units a customer holds or bought (live orders) of a product: what its limit counts. */
const customerUnits = (m: Model, p: ModelProduct, customer: string) =>
  sum(
    activeHolds(m).filter((h) => h.product === p && h.customer === customer),
    (h) => h.qty,
  ) +
  sum(
    m.orders.filter((o) => o.hold.product === p && o.hold.customer === customer && isLive(o)),
    (o) => o.hold.qty,
  );

function sum<T>(items: T[], of: (item: T) => number): number {
  return items.reduce((total, item) => total + of(item), 0);
}

/** A product's figures as GET /api/products/:id must show them. */
function figures(m: Model, p: ModelProduct) {
  const h = held(m, p);
  const s = sold(m, p);
  return { stock: p.stock, held: h, sold: s, available_stock: p.stock - h - s };
}

// ---- The real system ---------------------------------------------------------------------------------------

interface World extends TestApp {
  /** A client of the service's own redis-server (TestApp.redis is the shared one). */
  direct: Redis;
  pool: pg.Pool;
}

interface Answer {
  statusCode: number;
  body: Record<string, unknown>;
}

async function call(w: World, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown, headers = {}) {
  const response = await w.app.inject({ method, url, payload: payload as Record<string, unknown>, headers });
  return { statusCode: response.statusCode, body: response.json<Record<string, unknown>>(), response };
}

/**
 * `call`, as a client that honours Retry-After does it: a 503 that says the product is being rebuilt is asked
 * again, but only after a loss the run did not wait out; anywhere else it fails the step.
 */
async function callRetrying(m: Model, ...args: Parameters<typeof call>) {
  for (let attempt = 1; ; attempt++) {
    const answer = await call(...args);
    const rebuilding = answer.statusCode === 503 && String(answer.body.message).includes('being rebuilt');
    if (!rebuilding || !m.rebuildUnwaited || attempt === 200) return answer;
    count(answers, `503 while rebuilt (asked again)`);
    await sleep(10);
  }
}

function webhook(w: World, body: string) {
  return w.app.inject({
    method: 'POST',
    url: '/api/webhooks/payment',
    payload: body,
    headers: { 'content-type': 'application/json', 'x-signature': signPayload(body, SECRET) },
  });
}

/** The answer a step expects: its status, its error code (if any) and any fields of the body it predicts. */
interface Expected {
  statusCode: number;
  code?: string;
  fields?: Record<string, unknown>;
}

function assertAnswer(actual: Answer, expected: Expected, what: string): void {
  count(answers, `${what.split('(')[0]} ${actual.statusCode}${actual.body.code ? ` ${actual.body.code}` : ''}`);
  const seen = { statusCode: actual.statusCode, code: actual.body.code, ...pick(actual.body, expected.fields) };
  const wanted = { statusCode: expected.statusCode, code: expected.code, ...expected.fields };
  assert.deepEqual(seen, wanted, `${what}: answered ${actual.statusCode} ${JSON.stringify(actual.body)}`);
}

function pick(body: Record<string, unknown>, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return Object.fromEntries(Object.keys(fields).map((k) => [k, body[k]]));
}

/** Waits out and sweeps every hold within GUARD_MS of its expiry, so that none expires during the next step. */
async function expireDueHolds(m: Model, w: World): Promise<void> {
  const now = await redisNow(w.direct);
  const due = activeHolds(m).filter((h) => h.expiresAt <= now + GUARD_MS);
  if (due.length === 0) return;
  await waitPastOnRedisClock(w.direct, new Date(Math.max(...due.map((h) => h.expiresAt))).toISOString());
  // The script the sweeper runs, product by product: the sweeper's schedule is its own test's subject.
  let expired = 0;
  for (const p of m.products) {
    for (;;) {
      const step = await w.app.redisCommands.releaseExpiredHolds(p.id, 100);
      expired += step.expired;
      if (step.expired === 0) break;
    }
  }
  for (const h of due) h.status = 'expired';
  await requireNoExpiryYet(m, w);
  assert.equal(expired, due.length, 'the sweep released the holds past their time, and only those');
}

/** Discards the run (fc.pre) when a hold the model counts as active reached its expiry: a step ran too long. */
async function requireNoExpiryYet(m: Model, w: World): Promise<void> {
  const now = await redisNow(w.direct);
  fc.pre(activeHolds(m).every((h) => h.expiresAt > now));
}

let stepsRun = 0;
let runsStarted = 0;
/** How often each command got each answer, over all runs: what the runs exercised. */
const answers = new Map<string, number>();
const count = (tally: Map<string, number>, key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);

/**
 * One step: the holds due are swept, `act` sends its request(s), updates the model and returns what to compare;
 * then the products' figures and Postgres's orders are read, and everything is compared with the model.
 */
async function step(m: Model, w: World, act: () => Promise<() => void>): Promise<void> {
  stepsRun++;
  await expireDueHolds(m, w);
  const compareAnswer = await act();
  const products = await Promise.all(m.products.map((p) => callRetrying(m, w, 'GET', `/api/products/${p.id}`)));
  const orders = await ordersOfProducts(
    { db: w.pool },
    m.products.map((p) => p.id),
  );
  await requireNoExpiryYet(m, w);

  compareAnswer();
  for (const [i, p] of m.products.entries()) {
    const { statusCode, body } = products[i]!;
    assert.equal(statusCode, 200, `GET product ${p.id}`);
    const real = { stock: body.stock, held: body.held, sold: body.sold, available_stock: body.available_stock };
    const { stock, held: h, sold: s, available_stock: available } = real as Record<keyof typeof real, number>;
    assert.ok(
      available === stock - h - s && available >= 0,
      `product ${p.id}: available = stock - held - sold >= 0 (${JSON.stringify(real)})`,
    );
    assert.deepEqual(real, figures(m, p), `product ${p.id}'s figures`);
  }
  assert.deepEqual(
    orders.map((o) => ({ id: o.id, hold_id: o.hold_id, status: o.status, qty: o.qty, product_id: o.product_id })),
    m.orders.map((o) => ({
      id: o.id,
      hold_id: o.hold.id,
      status: o.status,
      qty: o.hold.qty,
      product_id: o.hold.product.id,
    })),
    'the orders in Postgres',
  );
}

/**
 * Deletes a finished run's products and orders from Postgres. The catalogue has no delete; without this, every
 * Redis loss would rebuild the products of all runs so far, and a long run would slow down as it went.
 */
async function retireProducts(pool: pg.Pool, productIds: number[]): Promise<void> {
  await pool.query('DELETE FROM orders WHERE id IN (SELECT order_id FROM order_items WHERE product_id = ANY($1))', [
    productIds,
  ]);
  await pool.query('DELETE FROM products WHERE id = ANY($1)', [productIds]);
}

type Command = fc.AsyncCommand<Model, World>;

/** Picks the i-th of a list the model has, whatever its length when the command runs. */
const nth = <T>(items: T[], i: number): T => items[i % items.length]!;

class PlaceHold implements Command {
  constructor(
    readonly product: number,
    readonly qty: number,
    readonly customer: string | null,
    /** Which of a few Idempotency-Keys it is sent with, if any. */
    readonly key: number | null = null,
  ) {}
  check = () => true;
  async run(m: Model, w: World) {
    const p = m.products[this.product]!;
    const key = this.key === null || this.qty > MAX_QTY ? undefined : `model-${m.run}-cart-${this.key}`;
    const fingerprint = JSON.stringify([p.id, this.qty, this.customer]);
    await step(m, w, async () => {
      const use = key === undefined ? undefined : m.keys.get(key);
      const remembered = use !== undefined && use.losses === m.losses;
      const expected: Expected =
        remembered && use.fingerprint !== fingerprint
          ? { statusCode: 422, code: 'IDEMPOTENCY_KEY_REUSED' }
          : this.decision(m, p);
      const replay = remembered && use.fingerprint === fingerprint ? use.answer : undefined;
      const payload = { product_id: p.id, qty: this.qty, ...(this.customer ? { customer_id: this.customer } : {}) };
      const answer = await callRetrying(m, w, 'POST', '/api/holds', payload, key ? { 'idempotency-key': key } : {});
      if (replay) {
        count(answers, `hold replayed ${answer.statusCode}`);
        return () =>
          assert.deepEqual(
            {
              statusCode: answer.statusCode,
              body: answer.body,
              replayed: answer.response.headers['idempotent-replayed'],
            },
            { ...replay, replayed: 'true' },
            `${this}: the key's first answer, replayed`,
          );
      }
      if (answer.statusCode === 201 && expected.statusCode === 201) {
        m.holds.push({
          id: answer.body.hold_id as string,
          product: p,
          qty: this.qty,
          customer: this.customer,
          status: 'held',
          expiresAt: Date.parse(answer.body.expires_at as string),
          recorded: true,
        });
      }
      // A key is kept with a decision (a hold, or a refusal for want of units or allowance); a request refused
      // before any decision (a customer missing) gives its key back, as a 4xx writes nothing.
      const decided = answer.statusCode === 201 || answer.statusCode === 409;
      if (key !== undefined && !remembered && decided) {
        m.keys.set(key, { request: this, fingerprint, losses: m.losses, answer: pickAnswer(answer) });
      }
      return () => assertAnswer(answer, expected, this.toString());
    });
  }
  /** The hold or refusal the rules give this request now. */
  private decision(m: Model, p: ModelProduct): Expected {
    const available = figures(m, p).available_stock;
    const units = this.customer === null ? 0 : customerUnits(m, p, this.customer);
    if (this.qty > MAX_QTY) return { statusCode: 400, code: 'VALIDATION_ERROR' };
    if (p.limit > 0 && this.customer === null) return { statusCode: 400, code: 'CUSTOMER_ID_REQUIRED' };
    if (available < this.qty)
      return {
        statusCode: 409,
        code: 'INSUFFICIENT_STOCK',
        fields: { available_stock: available, requested: this.qty },
      };
    if (p.limit > 0 && units + this.qty > p.limit)
      return {
        statusCode: 409,
        code: 'CUSTOMER_LIMIT_EXCEEDED',
        fields: { customer_units: units, per_customer_limit: p.limit, requested: this.qty },
      };
    return { statusCode: 201, fields: { product_id: p.id, qty: this.qty, status: 'held' } };
  }
  toString = () =>
    `hold(p${this.product}, ${this.qty}, ${this.customer ?? 'anonymous'}${this.key === null ? '' : `, key ${this.key}`})`;
}

const pickAnswer = (answer: Answer): Answer => ({ statusCode: answer.statusCode, body: answer.body });

/** A client retries a hold request with its Idempotency-Key, as it was first sent. */
class RetryHold implements Command {
  constructor(readonly key: number) {}
  check = (m: Readonly<Model>) => m.keys.size > 0;
  async run(m: Model, w: World) {
    await nth([...m.keys.values()], this.key).request.run(m, w);
  }
  toString = () => `retry(key use #${this.key})`;
}

/** What a hold's id answers to, by the model: a release and a conversion of it (undefined: the usual path). */
function endedHoldAnswer(h: ModelHold, action: 'release' | 'convert'): Expected | undefined {
  if (!h.recorded) return { statusCode: 404, code: 'HOLD_NOT_FOUND' };
  if (action === 'release') {
    if (h.status === 'converted') return { statusCode: 409, code: 'HOLD_CONVERTED' };
    if (h.status !== 'held') return { statusCode: 200, fields: { status: h.status } };
    return undefined;
  }
  if (h.status === 'released') return { statusCode: 409, code: 'HOLD_RELEASED' };
  if (h.status === 'expired') return { statusCode: 410, code: 'HOLD_EXPIRED' };
  if (h.status === 'converted')
    return { statusCode: 200, fields: { order_id: h.order!.id, hold_id: h.id, status: h.order!.status } };
  return undefined;
}

const describeHold = (h: ModelHold) => `hold ${h.id} (${h.status}${h.recorded ? '' : ', lost'} before)`;

class ReleaseHold implements Command {
  constructor(readonly hold: number) {}
  check = (m: Readonly<Model>) => m.holds.length > 0;
  async run(m: Model, w: World) {
    const h = nth(m.holds, this.hold);
    await step(m, w, async () => {
      const what = `${this} on ${describeHold(h)}`;
      const expected = endedHoldAnswer(h, 'release') ?? { statusCode: 200, fields: { status: 'released' } };
      const answer = await callRetrying(m, w, 'DELETE', `/api/holds/${h.id}`);
      if (h.recorded && h.status === 'held' && answer.statusCode === 200) h.status = 'released';
      return () => assertAnswer(answer, expected, what);
    });
  }
  toString = () => `release(hold #${this.hold})`;
}

class ConvertHold implements Command {
  constructor(readonly hold: number) {}
  check = (m: Readonly<Model>) => m.holds.length > 0;
  async run(m: Model, w: World) {
    const h = nth(m.holds, this.hold);
    await step(m, w, async () => {
      const what = `${this} on ${describeHold(h)}`;
      const expected = endedHoldAnswer(h, 'convert') ?? {
        statusCode: 201,
        // A customer id is shown only to that customer (with a token) or the admin: this caller is neither.
        fields: { hold_id: h.id, status: 'pending_payment', customer_id: null },
      };
      const answer = await callRetrying(m, w, 'POST', '/api/orders', { hold_id: h.id });
      if (expected.statusCode === 201 && answer.statusCode === 201) {
        const id = answer.body.order_id as number;
        assert.ok(!m.orders.some((o) => o.id === id), `order ${id} is new`);
        const order: ModelOrder = { id, hold: h, status: 'pending_payment' };
        h.status = 'converted';
        h.order = order;
        m.orders.push(order);
      }
      return () => assertAnswer(answer, expected, what);
    });
  }
  toString = () => `convert(hold #${this.hold})`;
}

let webhookKeys = 0;

class PaymentEvent implements Command {
  constructor(
    readonly order: number,
    readonly event: 'success' | 'failure',
  ) {}
  check = (m: Readonly<Model>) => m.orders.length > 0;
  async run(m: Model, w: World) {
    const o = nth(m.orders, this.order);
    await step(m, w, async () => {
      const what = `${this} on order ${o.id} (${o.status} before)`;
      const next = paymentTransition(o.status, this.event);
      const expected: Expected =
        next === 'final'
          ? { statusCode: 409, code: 'ORDER_ALREADY_FINAL', fields: { order_id: o.id, status: o.status } }
          : { statusCode: 200, fields: { order_id: o.id, status: next } };
      const body = JSON.stringify({
        idempotency_key: `model-${++webhookKeys}`,
        order_id: o.id,
        event_type: this.event,
      });
      const response = await webhook(w, body);
      const answer = { statusCode: response.statusCode, body: response.json<Record<string, unknown>>() };
      if (next !== 'final' && answer.statusCode === 200) o.status = next;
      m.deliveries.push({ body, statusCode: answer.statusCode, answer: answer.body });
      return () => assertAnswer(answer, expected, what);
    });
  }
  toString = () => `${this.event === 'success' ? 'pay' : 'fail'}(order #${this.order})`;
}

/** docs/conversion.md's payment table: the order's next status, or 'final' when the event is refused (409). */
function paymentTransition(status: OrderStatus, event: 'success' | 'failure'): OrderStatus | 'final' {
  if (event === 'success')
    return status === 'pending_payment' ? 'paid' : status === 'cancelled' ? 'refund_required' : status;
  if (status === 'pending_payment' || status === 'cancelled') return 'cancelled';
  return 'final';
}

/** The provider sends a delivery again: the first answer is replayed and nothing changes. */
class Redeliver implements Command {
  constructor(readonly delivery: number) {}
  check = (m: Readonly<Model>) => m.deliveries.length > 0;
  async run(m: Model, w: World) {
    const d = nth(m.deliveries, this.delivery);
    await step(m, w, async () => {
      const response = await webhook(w, d.body);
      count(answers, `redeliver ${response.statusCode}`);
      return () => {
        assert.deepEqual(
          { statusCode: response.statusCode, body: response.json(), replayed: response.headers['idempotent-replayed'] },
          { statusCode: d.statusCode, body: d.answer, replayed: 'true' },
          `${this.toString()}: the first answer, replayed`,
        );
      };
    });
  }
  toString = () => `redeliver(webhook #${this.delivery})`;
}

class SetStock implements Command {
  constructor(
    readonly product: number,
    readonly stock: number,
  ) {}
  check = () => true;
  async run(m: Model, w: World) {
    const p = m.products[this.product]!;
    await step(m, w, async () => {
      const committed = held(m, p) + sold(m, p);
      const expected: Expected =
        this.stock < committed
          ? { statusCode: 409, code: 'STOCK_BELOW_COMMITTED' }
          : { statusCode: 200, fields: { stock: this.stock, available_stock: this.stock - committed } };
      const answer = await callRetrying(m, w, 'PUT', `/api/products/${p.id}/stock`, { stock: this.stock }, admin);
      if (expected.statusCode === 200 && answer.statusCode === 200) p.stock = this.stock;
      return () => assertAnswer(answer, expected, this.toString());
    });
  }
  toString = () => `setStock(p${this.product}, ${this.stock})`;
}

/** Time passes: the oldest active hold (and any within GUARD_MS of it) expires and is swept. */
class ExpireOldest implements Command {
  check = (m: Readonly<Model>) => activeHolds(m as Model).length > 0;
  async run(m: Model, w: World) {
    const oldest = Math.min(...activeHolds(m).map((h) => h.expiresAt));
    await waitPastOnRedisClock(w.direct, new Date(oldest).toISOString());
    count(answers, 'expire');
    await step(m, w, async () => () => {});
  }
  toString = () => 'expire(oldest)';
}

/** Redis loses everything; the service notices by itself and rebuilds from Postgres. */
/**
 * Redis loses everything; the service notices by itself and rebuilds from Postgres. `waited`: the next step comes
 * once it has; otherwise at once, meeting products missing or being rebuilt.
 */
class RedisLoss implements Command {
  constructor(readonly waited: boolean) {}
  check = () => true;
  async run(m: Model, w: World) {
    await step(m, w, async () => {
      await w.direct.flushall();
      count(answers, this.waited ? 'redisLoss' : 'redisLoss (not waited)');
      const ids = m.products.map((p) => p.id);
      const rebuilt = async () => {
        if (w.app.rebuilder.rebuilding().length > 0) return false;
        const present = await Promise.all(ids.map((id) => w.direct.exists(productKeys(w.prefix, id).inventory)));
        return present.every((n) => n === 1);
      };
      const done = this.waited ? await eventually(rebuilt, 30_000) : true;
      // Holds live in Redis only; orders are Postgres's, and the records of live orders' holds are rebuilt.
      for (const h of m.holds) h.recorded = h.status === 'converted' && isLive(h.order!);
      m.losses++;
      m.rebuildUnwaited = !this.waited;
      return () => assert.ok(done, 'the service rebuilt its products after the loss');
    });
  }
  toString = () => `redisLoss(${this.waited ? 'waited' : 'not waited'})`;
}

const holdAnyone = fc
  .tuple(fc.nat({ max: 2 }), fc.integer({ min: 1, max: MAX_QTY + 1 }), fc.constantFrom(null, ...CUSTOMERS))
  .map(([product, qty, customer]) => new PlaceHold(product, qty, customer));
const holdCustomer = fc
  .tuple(fc.nat({ max: 2 }), fc.integer({ min: 1, max: 4 }), fc.constantFrom(...CUSTOMERS))
  .map(([product, qty, customer]) => new PlaceHold(product, qty, customer));
// A few keys, so that the same one comes back: with the same request (replayed) or another (refused).
const holdWithKey = fc
  .tuple(fc.nat({ max: 2 }), fc.integer({ min: 1, max: 3 }), fc.constantFrom(null, ...CUSTOMERS), fc.nat({ max: 2 }))
  .map(([product, qty, customer, key]) => new PlaceHold(product, qty, customer, key));
const convert = fc.nat().map((i) => new ConvertHold(i));
const pay = fc.nat().map((i) => new PaymentEvent(i, 'success'));
const fail = fc.nat().map((i) => new PaymentEvent(i, 'failure'));
// Listed more than once: weights. Time passing and Redis losses cost the most wall time, so they come least.
const commandArbitraries = [
  holdAnyone,
  holdAnyone,
  holdCustomer,
  holdCustomer,
  holdWithKey,
  fc.nat().map((i) => new RetryHold(i)),
  fc.nat().map((i) => new ReleaseHold(i)),
  convert,
  convert,
  convert,
  pay,
  pay,
  fail,
  fail,
  fc.nat().map((i) => new Redeliver(i)),
  fc.tuple(fc.nat({ max: 2 }), fc.integer({ min: 0, max: 15 })).map(([p, stock]) => new SetStock(p, stock)),
  fc.constant(new ExpireOldest()),
  fc.constant(new RedisLoss(true)),
  fc.constant(new RedisLoss(false)),
];

/** Three products: stock 0..12, each with a per-customer limit (1..5) or none. */
const productsArbitrary = fc.array(
  fc.record({
    stock: fc.integer({ min: 0, max: 12 }),
    limit: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5 })),
  }),
  { minLength: 3, maxLength: 3 },
);

t.test(
  'random sequences of holds, orders, payments, stock changes, expiries and Redis losses keep the model',
  async (t) => {
    const redisServer = await privateRedis(t);
    const service = await buildTestApp(t, {
      REDIS_URL: redisServer.url,
      WEBHOOK_SECRET: SECRET,
      HOLD_TTL_SECONDS: 1,
      MAX_QTY_PER_HOLD: MAX_QTY,
      // Refusing from a moment-old sold-out mark is staleness by design (test/sold-out-cache.test.ts); off here,
      // so that every answer follows from the sequence alone.
      SOLD_OUT_CACHE_MS: 0,
      REDIS_LOSS_CHECK_MS: 50,
      RECOVERY_INTERVAL_MS: 0,
      // Not a test of timeouts: a busy machine must not turn a step into a 503.
      REDIS_COMMAND_TIMEOUT_MS: 5000,
      // Hundreds of steps from one address: the rate limits (test/rate-limits.test.ts) are not modelled.
      RATE_LIMIT: 'off',
    });
    const direct = new Redis(redisServer.url);
    t.teardown(() => direct.disconnect());
    const pool = new pg.Pool({ connectionString: service.config.DATABASE_URL, max: 2 });
    t.teardown(() => pool.end());
    const db = createDatabase({ url: service.config.DATABASE_URL, timeoutMs: 10_000, poolSize: 2 });
    t.teardown(() => db.destroy());
    const world: World = { ...service, direct, pool };

    const property = fc.asyncProperty(
      productsArbitrary,
      fc.commands(commandArbitraries, { maxCommands: STEPS, size: 'max', replayPath: process.env.MODEL_REPLAY_PATH }),
      async (specs, commands) => {
        runsStarted++;
        const model: Model = {
          run: runsStarted,
          products: [],
          holds: [],
          orders: [],
          deliveries: [],
          keys: new Map(),
          losses: 0,
          rebuildUnwaited: false,
        };
        for (const spec of specs) {
          const created = await createProduct(service.app, {
            stock: spec.stock,
            ...(spec.limit > 0 ? { per_customer_limit: spec.limit } : {}),
          });
          model.products.push({ id: created.id, stock: spec.stock, limit: spec.limit });
        }
        try {
          await fc.asyncModelRun(() => ({ model, real: world }), commands);
          const report = await reconcile({
            db,
            redis: direct,
            prefix: service.prefix,
            productIds: model.products.map((p) => p.id),
          });
          assert.deepEqual(report.drifts, [], 'reconcile --check finds no drift');
          assert.equal(report.clean, true, 'reconcile --check is clean');
        } finally {
          await retireProducts(
            pool,
            model.products.map((p) => p.id),
          );
        }
      },
    );

    const seed = process.env.MODEL_SEED === undefined ? (Math.random() * 2 ** 31) | 0 : Number(process.env.MODEL_SEED);
    const started = Date.now();
    const details = await fc.check(property, {
      numRuns: RUNS,
      seed,
      path: process.env.MODEL_PATH,
      endOnFailure: process.env.MODEL_PATH !== undefined,
      // A discarded run (a step outran GUARD_MS) is replaced by another; many of them mean a machine too busy.
      maxSkipsPerRun: 1,
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    t.comment(
      `${details.numRuns} runs (${details.numSkips} discarded), ${runsStarted} started with shrinking, ` +
        `${stepsRun} steps, ${seconds} s; seed ${seed}`,
    );
    t.comment(
      `answers: ${[...answers]
        .sort()
        .map(([answer, n]) => `${answer} x${n}`)
        .join(', ')}`,
    );
    if (details.failed) {
      // What went wrong in the shrunk sequence (fast-check 4 keeps it out of its report's text).
      const error = details.errorInstance;
      t.comment(error instanceof Error ? error.message : String(error));
      // The counterexample's replayPath says which of its commands ran: with it, the replay is the same sequence.
      const replayPath = /replayPath="([^"]+)"/.exec(fc.stringify(details.counterexample))?.[1] ?? '';
      t.comment(
        `replay: MODEL_SEED=${seed} MODEL_PATH=${details.counterexamplePath} MODEL_REPLAY_PATH='${replayPath}' ` +
          'npx tap test/model.test.ts',
      );
    }
    t.notOk(details.failed, (await fc.asyncDefaultReportMessage(details)) ?? 'the model and the service agree');
    t.equal(details.numRuns, RUNS, `all ${RUNS} runs ran`);
    t.ok(stepsRun >= RUNS, 'and ran their steps');
  },
);
