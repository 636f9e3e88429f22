/**
 * The standard (docs/conversion.md): "a crash at any point leaves each hold as exactly one order with its units
 * sold, or no order with its units back on sale: never both, never neither, never stuck". Proven against the real
 * service: `src/server.ts` is started as a child process that kills itself (SIGKILL, as a power cut) at a fault
 * point named by FLASHSALE_FAULT, and is started again without it; recovery (the sweeper and the settlement loop)
 * must then finish or undo what the dead process left, within seconds given a short CONVERSION_LEASE_MS.
 * Postgres outages during conversions use the TCP proxy in front of Postgres.
 *
 * Every wait polls with a deadline. When recovery misses its deadline the test says so (a failed assertion), then
 * makes the product due for a sweep at once, so the safety checks that follow still run and say what they find.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { createProductAt, placeHold } from './support/api.js';
import { redisNow } from './support/clock.js';
import { describeError } from './support/http.js';
import {
  claimsOfHold,
  isPastPaymentDeadline,
  orderCount,
  ordersOfHold,
  unitsOrdered,
} from './support/postgres-state.js';
import { waitForExit } from './support/processes.js';
import { seededRandom } from './support/random.js';
import {
  conversions,
  holdRecord,
  indexedExpiry,
  inventory,
  makeDueForSweep,
  nextSweepOf,
  productOfHold,
  sweepSchedule,
} from './support/redis-state.js';
import { errorLines, serviceWorld, type Fault, type Service, type ServiceWorld } from './support/service-process.js';
import { proxyInFrontOf, type ProxyMode } from './support/tcp-proxy.js';
import { eventually, poll } from './support/wait.js';

// The service's timings in these tests: a claim is looked at by recovery half a second after it was made.
const LEASE_MS = 500;
const SWEEP_INTERVAL_MS = 50;
const RECOVERY_INTERVAL_MS = 100;
// How long recovery may take once the restarted service is ready: a few leases and sweeps, plus a busy machine.
const RECOVERY_DEADLINE_MS = LEASE_MS + 4500;
// What "fast" means for a 503 while Postgres is away (its timeouts are 500 ms).
const POSTGRES_OUTAGE_ANSWER_MS = 2000;

// Every test here starts the real service several times (a few seconds each on a busy machine).
t.setTimeout(300_000);

/** The test's own database and key prefix, and services started with this file's timings. */
function world(t: Test): Promise<ServiceWorld> {
  return serviceWorld(t, {
    // Hundreds of holds and orders from one address: the subject is crashes, not the rate limits.
    RATE_LIMIT: 'off',
    CONVERSION_LEASE_MS: String(LEASE_MS),
    SWEEP_INTERVAL_MS: String(SWEEP_INTERVAL_MS),
    RECOVERY_INTERVAL_MS: String(RECOVERY_INTERVAL_MS),
  });
}

/**
 * Waits for recovery to have decided every conversion claim of the products (their conversions zsets empty and
 * `done` true). Asserts it happens within RECOVERY_DEADLINE_MS; if not, makes the products due for a sweep at
 * once (what recovery should have done by itself) and waits again, so the safety checks after it still run.
 */
async function expectRecovery(
  t: Test,
  w: ServiceWorld,
  productIds: number[],
  what: string,
  done: () => Promise<boolean> = async () => true,
): Promise<number> {
  const started = Date.now();
  const settled = async () => {
    for (const id of productIds) if ((await conversions(w, id)).length > 0) return false;
    return done();
  };
  if (await eventually(settled, RECOVERY_DEADLINE_MS)) {
    const ms = Date.now() - started;
    t.pass(`${what}: recovered ${ms} ms after the restarted service was ready`);
    return ms;
  }
  const stuck: Record<number, string[]> = {};
  for (const id of productIds) stuck[id] = await conversions(w, id);
  t.fail(
    `${what}: recovery did not happen within ${RECOVERY_DEADLINE_MS} ms (lease ${LEASE_MS} ms, sweep every ${SWEEP_INTERVAL_MS} ms)`,
    {
      conversions: stuck,
      sweepSchedule: await sweepSchedule(w),
      redisNowMs: await redisNow(w.redis),
    },
  );
  // Make the products due now, so the rest of the test checks what recovery does once it runs.
  await makeDueForSweep(w, productIds);
  t.ok(await eventually(settled, RECOVERY_DEADLINE_MS), `${what}: recovered once the products were due for a sweep`);
  return Date.now() - started;
}

/**
 * Waits until the sweeper has looked at the product once (its schedule entry moved off the 0 a new product gets),
 * as it has for any product on sale for more than a moment: recovery must not depend on a product being new.
 */
async function waitUntilSwept(t: Test, w: ServiceWorld, productId: number): Promise<void> {
  const swept = await eventually(async () => ((await nextSweepOf(w, productId)) ?? 0) > 0, 10_000);
  if (!swept) throw new Error(`the sweeper never looked at product ${productId}`);
  t.comment(`product ${productId} has been swept once`);
}

/** Sends POST /api/orders to a service that is meant to kill itself there; asserts it did, by SIGKILL. */
async function orderThatKills(t: Test, service: Service, holdId: string): Promise<void> {
  const result = await service.attempt('POST', '/api/orders', { hold_id: holdId });
  t.notOk(
    result.answer,
    `POST /api/orders got no answer (fault ${service.fault})${result.answer ? `: ${result.answer.status} ${JSON.stringify(result.answer.body)}` : ''}`,
  );
  t.comment(`the request failed with ${describeError(result.error)}`);
  const exit = await waitForExit(service);
  t.same(exit, { code: null, signal: 'SIGKILL' }, `the service killed itself at ${service.fault}`);
}

/** A product of `stock` units made through the service's admin API. */
const createProductVia = (service: Service, stock: number, price = 1000) =>
  createProductAt(service.base, { name: 'Crash test', price_cents: price, stock });

/** A hold of `qty` units placed through the service. */
const holdVia = async (service: Service, productId: number, qty: number) =>
  (await placeHold(service.base, { product_id: productId, qty })).hold_id;

// ---------------------------------------------------------------------------------------------------------------

t.test(
  'a service killed between claiming a hold and committing its order: the hold is still one hold, and converts once',
  async (t) => {
    const w = await world(t);
    const dying = await w.start({ fault: 'after-claim' });
    // Products and holds cross no fault point: the process dies only on its first conversion.
    const productId = await createProductVia(dying, 10);
    await waitUntilSwept(t, w, productId);
    const quantities = [1, 2, 3, 1, 2];
    const holds: string[] = [];
    for (const qty of quantities) holds.push(await holdVia(dying, productId, qty));
    const target = holds[2]!;
    t.same(await inventory(w, productId), { stock: 10, held: 9, sold: 0 }, 'five holds, 9 units held');

    await orderThatKills(t, dying, target);

    // The state the crash left: a claim in Redis, nothing in Postgres.
    const claimed = await holdRecord(w, target);
    t.equal(claimed?.status, 'converting', 'the crash left the hold claimed for conversion');
    const claimId = claimed?.claim_id;
    t.ok(claimId, 'under a claim id');
    t.same(await conversions(w, productId), [target], 'and in the conversions index');
    t.equal(await orderCount(w, target), 0, 'no order was committed');
    t.same(await claimsOfHold(w, target), [], 'no claim outcome recorded');
    t.same(await inventory(w, productId), { stock: 10, held: 9, sold: 0 }, 'its units are still held, none sold');

    const restarted = await w.start();
    await expectRecovery(
      t,
      w,
      [productId],
      'the abandoned claim',
      async () => (await holdRecord(w, target))?.status === 'held',
    );

    const recovered = await holdRecord(w, target);
    t.match(recovered, { status: 'held', qty: 3 }, 'the hold is an ordinary hold again');
    t.notOk(recovered?.claim_id, 'without its claim');
    t.equal(await indexedExpiry(w, target), String(claimed?.expires_at), 'back in the expiry index at its own expiry');
    t.same(
      await claimsOfHold(w, target),
      [{ claim_id: claimId, outcome: 'abandoned' }],
      "the dead claim is recorded 'abandoned'",
    );
    t.same(
      await inventory(w, productId),
      { stock: 10, held: 9, sold: 0 },
      'held counter unchanged: nothing released, nothing sold',
    );
    t.match(
      await restarted.call('GET', `/api/holds/${target}`),
      { status: 200, body: { hold_id: target, status: 'held', qty: 3 } },
      'the API reads it held',
    );

    const order = await restarted.call('POST', '/api/orders', { hold_id: target });
    t.equal(order.status, 201, 'converting the hold now succeeds');
    t.match(
      order.body,
      { hold_id: target, status: 'pending_payment', items: [{ product_id: productId, qty: 3 }] },
      'the order of the hold',
    );
    t.equal(await orderCount(w, target), 1, 'exactly one order for the hold');
    t.same(await inventory(w, productId), { stock: 10, held: 6, sold: 3 }, 'its 3 units moved from held to sold');
    t.match(
      await restarted.call('GET', `/api/holds/${target}`),
      { status: 200, body: { status: 'converted' } },
      'the API reads it converted',
    );
    const again = await restarted.call('POST', '/api/orders', { hold_id: target });
    t.match(again, { status: 200, body: { order_id: order.body.order_id } }, 'a repeat answers the same order');
    t.equal(await orderCount(w, target), 1, 'still exactly one order');

    for (const holdId of holds.filter((h) => h !== target)) {
      t.equal((await holdRecord(w, holdId))?.status, 'held', `the other hold ${holdId} is untouched`);
      t.equal(await orderCount(w, holdId), 0);
    }
    t.same(await conversions(w, productId), [], 'no conversion left in progress');
    t.same(errorLines(dying, restarted), [], 'nothing logged at level error');
  },
);

t.test(
  'a service killed after committing the order but before moving the units: recovery finishes the conversion',
  async (t) => {
    const w = await world(t);
    const dying = await w.start({ fault: 'after-order-commit' });
    const productId = await createProductVia(dying, 10);
    await waitUntilSwept(t, w, productId);
    const holds = [
      await holdVia(dying, productId, 2),
      await holdVia(dying, productId, 3),
      await holdVia(dying, productId, 1),
    ];
    const target = holds[1]!;
    t.same(await inventory(w, productId), { stock: 10, held: 6, sold: 0 }, 'three holds, 6 units held');

    await orderThatKills(t, dying, target);

    // The state the crash left: the order committed, its units still held in Redis.
    const committed = await ordersOfHold(w, target);
    t.equal(committed.length, 1, 'the order was committed before the crash');
    const claimed = await holdRecord(w, target);
    t.equal(claimed?.status, 'converting', 'the hold is still claimed in Redis');
    t.same(
      await claimsOfHold(w, target),
      [{ claim_id: claimed?.claim_id, outcome: 'ordered' }],
      "its claim is recorded 'ordered'",
    );
    t.same(await inventory(w, productId), { stock: 10, held: 6, sold: 0 }, 'units not moved yet');

    const restarted = await w.start();
    await expectRecovery(
      t,
      w,
      [productId],
      'the committed conversion',
      async () => (await holdRecord(w, target))?.status === 'converted',
    );

    const orderId = committed[0]?.id;
    t.match(
      await holdRecord(w, target),
      { status: 'converted', order_id: String(orderId) },
      'the hold is converted, into that order',
    );
    t.match(
      await restarted.call('GET', `/api/holds/${target}`),
      { status: 200, body: { status: 'converted' } },
      'the API reads it converted',
    );
    t.same(await inventory(w, productId), { stock: 10, held: 3, sold: 3 }, 'sold == its qty, held decreased by it');
    t.equal(await orderCount(w, target), 1, 'exactly one order row');

    const repeat = await restarted.call('POST', '/api/orders', { hold_id: target });
    t.equal(repeat.status, 200, 'a repeated POST /api/orders answers 200');
    t.match(
      repeat.body,
      { order_id: orderId, hold_id: target, status: 'pending_payment', items: [{ qty: 3 }] },
      'with that order',
    );
    t.equal(await orderCount(w, target), 1, 'still one order');
    t.same(await inventory(w, productId), { stock: 10, held: 3, sold: 3 }, 'and the units moved once');
    for (const holdId of [holds[0]!, holds[2]!])
      t.equal((await holdRecord(w, holdId))?.status, 'held', 'the other holds are untouched');
    t.same(errorLines(dying, restarted), [], 'nothing logged at level error');
  },
);

t.test(
  'conversions killed at random fault points across restarts: every hold is exactly one order or none, and the units add up',
  async (t) => {
    const seed = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
    t.comment(`seed ${seed} (replay with CRASH_SEED=${seed})`);
    const random = seededRandom(seed);
    const w = await world(t);

    // Rounds: each starts the service with a fault (or none), then converts a few holds at once: fresh ones, and
    // ones an earlier round left interrupted. A faulty process dies on the first request to reach its fault point.
    const faults: Fault[] = ['after-claim', 'after-claim', 'after-order-commit', 'after-order-commit', 'none', 'none'];
    for (let i = faults.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [faults[i], faults[j]] = [faults[j]!, faults[i]!];
    }
    // Each round's service is started while the round before runs (starting one takes seconds), so it is up when
    // the previous one has died: a restart, minus the wait. Its sweeper may meet the dead one's claims first.
    const starting = (fault: Fault) => {
      const promise = w.start({ fault });
      promise.catch(() => {}); // awaited below; not an unhandled rejection meanwhile
      return promise;
    };
    let next = starting(faults[0]!);

    const holds = new Map<string, number>(); // hold id -> qty
    const products: number[] = [];
    const fresh: string[] = [];
    const interrupted = new Set<string>();
    const released = new Set<string>();
    const acknowledged = new Map<string, number>(); // hold id -> order id some answer gave
    const services: Service[] = [];
    const tallies: string[] = [];

    for (const [round, fault] of faults.entries()) {
      const service = await next;
      services.push(service);
      next = starting(faults[round + 1] ?? 'none');
      if (round === 0) {
        // Products and holds cross no fault point, so the first service makes them, whatever its fault.
        products.push(await createProductVia(service, 30, 700), await createProductVia(service, 30, 1100));
        for (const productId of products) await waitUntilSwept(t, w, productId);
        for (const productId of products) {
          for (let i = 0; i < 12; i++) {
            const qty = 1 + Math.floor(random() * 2);
            const holdId = await holdVia(service, productId, qty);
            holds.set(holdId, qty);
            fresh.push(holdId);
          }
        }
      }
      const batch: string[] = [];
      for (let i = 0; i < 2 && fresh.length > 0; i++)
        batch.push(fresh.splice(Math.floor(random() * fresh.length), 1)[0]!);
      for (const holdId of [...interrupted]) if (random() < 0.5) batch.push(holdId);
      const results = await Promise.all(
        batch.map((holdId) => service.attempt('POST', '/api/orders', { hold_id: holdId })),
      );
      const seen: string[] = [];
      for (const [i, result] of results.entries()) {
        const holdId = batch[i]!;
        const status = result.answer?.status;
        seen.push(status === undefined ? 'died' : String(status));
        if (status === 201 || status === 200) {
          const orderId = result.answer!.body.order_id as number;
          const before = acknowledged.get(holdId);
          if (before !== undefined && before !== orderId)
            t.fail(`hold ${holdId} was answered two different orders: ${before}, ${orderId}`);
          acknowledged.set(holdId, orderId);
          interrupted.delete(holdId);
        } else if (status === undefined || status === 503) {
          // No answer (the process died) or "try again": the conversion is in doubt until recovery or a retry.
          interrupted.add(holdId);
        } else {
          t.fail(`round ${round} (${fault}): POST /api/orders for ${holdId} answered ${status}`, {
            body: result.answer?.body,
          });
        }
      }
      if (fault === 'none') {
        t.ok(
          results.every((r) => r.answer !== undefined),
          `round ${round}: a healthy service answers every conversion`,
        );
        // Release one hold that never went near a conversion: it must stay no order.
        const holdId = fresh.splice(Math.floor(random() * fresh.length), 1)[0]!;
        t.match(
          await service.call('DELETE', `/api/holds/${holdId}`),
          { status: 200, body: { status: 'released' } },
          `round ${round}: hold ${holdId} released`,
        );
        released.add(holdId);
        await service.stop(random() < 0.5 ? 'SIGKILL' : 'SIGTERM');
      } else {
        const exit = await waitForExit(service);
        t.same(exit, { code: null, signal: 'SIGKILL' }, `round ${round}: the service killed itself at ${fault}`);
        if (exit === undefined) await service.stop();
      }
      tallies.push(`${fault}: ${seen.join(' ')}`);
      // Sometimes the next round's requests come while the dead one's claims are still leased, sometimes after.
      await sleep(Math.floor(random() * LEASE_MS * 2));
    }
    t.comment(`rounds (answers per request): ${tallies.join(' | ')}`);

    const final = await next;
    services.push(final);
    await expectRecovery(t, w, products, 'every interrupted conversion');

    // Every hold: exactly one order (converted, one order row, its claim 'ordered') or none (held / released /
    // expired, no order row, no 'ordered' claim). Never converting.
    const activeUnits = new Map<number, number>(products.map((p) => [p, 0]));
    let converted = 0;
    for (const [holdId, qty] of holds) {
      const record = await holdRecord(w, holdId);
      const orders = await ordersOfHold(w, holdId);
      const ordered = (await claimsOfHold(w, holdId)).filter((c) => c.outcome === 'ordered');
      const where = `${holdId} (${record?.status}, ${orders.length} orders)`;
      if (record?.status === 'converted') {
        converted++;
        if (
          orders.length !== 1 ||
          ordered.length !== 1 ||
          record.order_id !== String(orders[0]!.id) ||
          orders[0]!.qty !== qty
        ) {
          t.fail(`converted hold ${where} is not exactly one order of its qty`, { record, orders, ordered });
        }
        const ack = acknowledged.get(holdId);
        if (ack !== undefined && ack !== orders[0]?.id)
          t.fail(`hold ${holdId} was answered order ${ack} but has ${orders[0]?.id}`);
      } else if (record?.status === 'held' || record?.status === 'released' || record?.status === 'expired') {
        if (orders.length !== 0 || ordered.length !== 0)
          t.fail(`hold ${where} is not an order but has one`, { orders, ordered });
        if (acknowledged.has(holdId)) t.fail(`hold ${holdId} was answered an order, but is ${record.status}`);
        if (released.has(holdId) && record.status !== 'released') t.fail(`released hold ${where} is not released`);
        if (record.status === 'held') {
          if ((await indexedExpiry(w, holdId)) === null) t.fail(`held hold ${holdId} is not in the expiry index`);
          activeUnits.set(productOfHold(holdId), activeUnits.get(productOfHold(holdId))! + qty);
        }
      } else {
        t.fail(`hold ${where} is neither an order nor a hold: stuck`, { record });
      }
    }
    t.pass(`${holds.size} holds checked: ${converted} orders, ${acknowledged.size} of them answered during the rounds`);
    t.ok(converted >= acknowledged.size, 'every acknowledged order exists');

    for (const productId of products) {
      const units = await inventory(w, productId);
      t.same(await conversions(w, productId), [], `product ${productId}: no conversion left in progress`);
      t.equal(
        units.sold,
        await unitsOrdered(w, productId),
        `product ${productId}: sold (${units.sold}) == units of its orders not cancelled`,
      );
      t.equal(
        units.held,
        activeUnits.get(productId),
        `product ${productId}: held (${units.held}) == units of its active holds`,
      );
      const product = await final.call('GET', `/api/products/${productId}`);
      t.equal(
        product.body.stock,
        product.body.available_stock + product.body.held + product.body.sold,
        `product ${productId}: stock == available + held + sold`,
      );
      t.ok(units.stock - units.held - units.sold >= 0, `product ${productId}: available >= 0`);
    }

    // Nothing is left unusable: every hold not released converts now, once.
    const remaining = [...holds.keys()].filter((h) => !released.has(h));
    const last = await Promise.all(
      remaining.map(async (holdId) => ({
        holdId,
        answer: await final.call('POST', '/api/orders', { hold_id: holdId }),
      })),
    );
    const refused = last.filter((r) => r.answer.status !== 200 && r.answer.status !== 201);
    t.same(
      refused.map((r) => `${r.holdId}: ${r.answer.status} ${JSON.stringify(r.answer.body)}`),
      [],
      'every hold not released converts',
    );
    for (const holdId of remaining)
      if ((await orderCount(w, holdId)) !== 1) t.fail(`hold ${holdId} does not have exactly one order`);
    for (const productId of products) {
      const units = await inventory(w, productId);
      t.equal(
        units.sold,
        await unitsOrdered(w, productId),
        `product ${productId}: after converting the rest, sold still == units ordered`,
      );
      t.equal(units.held, 0, `product ${productId}: nothing held any more`);
    }
    t.same(errorLines(...services), [], 'nothing logged at level error');
  },
);

/**
 * The orders of conversions that arrive together are written by one statement (src/db/order-batches.ts). Kills
 * the service at each step of such a batch, with several conversions in flight: at `after-claim` (the first
 * claim of the turn came back from Redis, none of the batch is in Postgres yet) and at `after-order-commit` (a
 * batch committed, none of its units moved; the product's row is held FOR UPDATE meanwhile, so every
 * conversion's statement is sent and waiting in Postgres when the first one commits and the process dies).
 */
for (const fault of ['after-claim', 'after-order-commit'] as const) {
  t.test(
    `a service killed at ${fault} with a batch of conversions in flight: every hold of it is exactly one order or none`,
    async (t) => {
      const w = await world(t);
      // A longer lease and Postgres timeout for the dying service only: its conversions wait on the held row
      // for a moment, and its own recovery must not give their claims up meanwhile.
      const dying = await w.start({ fault, env: { CONVERSION_LEASE_MS: '3000', DATABASE_TIMEOUT_MS: '10000' } });
      const productId = await createProductVia(dying, 40);
      await waitUntilSwept(t, w, productId);
      const quantities = [1, 2, 1, 3, 1, 2, 1, 1, 2, 1];
      const holds: string[] = [];
      for (const qty of quantities) holds.push(await holdVia(dying, productId, qty));
      const heldUnits = quantities.reduce((a, b) => a + b, 0);

      const rowHolder = fault === 'after-order-commit' ? await w.db.connect() : undefined;
      if (rowHolder) {
        await rowHolder.query('BEGIN');
        await rowHolder.query('SELECT id FROM products WHERE id = $1 FOR UPDATE', [productId]);
      }
      const sent = Promise.all(holds.map((holdId) => dying.attempt('POST', '/api/orders', { hold_id: holdId })));
      if (rowHolder) {
        const claimed = await eventually(async () => {
          for (const holdId of holds) if ((await holdRecord(w, holdId))?.status !== 'converting') return false;
          return true;
        }, 10_000);
        t.ok(claimed, 'every hold was claimed before the row was let go');
        // Each batch's statement waits on the row: see them all there before it is let go.
        const waiting = async () =>
          (
            await w.db.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%AS i(claim_id, hold_id%'",
            )
          ).rows[0]!.n;
        let statements = await waiting();
        for (let stable = 0; stable < 4; stable++) {
          await sleep(50);
          const now = await waiting();
          if (now !== statements) stable = -1;
          statements = now;
        }
        t.ok(statements >= 1, `the conversions wait in Postgres, in ${statements} statement(s)`);
        await rowHolder.query('COMMIT');
        rowHolder.release();
      }
      const results = await sent;
      t.same(
        results.filter((r) => r.answer !== undefined).map((r) => r.answer?.status),
        [],
        'no conversion was answered: the process died first',
      );
      const exit = await waitForExit(dying);
      t.same(exit, { code: null, signal: 'SIGKILL' }, `the service killed itself at ${fault}`);

      // What the crash left, once Postgres has finished what was sent to it.
      await eventually(
        async () =>
          (
            await w.db.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%hold_claims%' AND state = 'active'",
            )
          ).rows[0]!.n === 0,
        10_000,
      );
      const { rows: writers } = await w.db.query<{ xmin: string; n: number }>(
        'SELECT xmin::text AS xmin, count(*)::int AS n FROM orders GROUP BY xmin ORDER BY n DESC',
      );
      const committed = writers.reduce((n, s) => n + s.n, 0);
      t.comment(
        `orders committed before recovery: ${committed}, by statements of ${writers.map((s) => s.n).join(', ')}`,
      );
      if (fault === 'after-claim') {
        t.equal(committed, 0, 'no order was committed: the process died before any statement was sent');
      } else {
        t.ok(committed >= 2, 'several conversions were committed around the crash');
      }
      t.same(await inventory(w, productId), { stock: 40, held: heldUnits, sold: 0 }, 'no units moved yet');

      const restarted = await w.start();
      await expectRecovery(t, w, [productId], `the batch killed at ${fault}`, async () => {
        for (const holdId of holds) {
          const status = (await holdRecord(w, holdId))?.status;
          if (status !== 'held' && status !== 'converted') return false;
        }
        return true;
      });
      let sold = 0;
      let converted = 0;
      for (const [i, holdId] of holds.entries()) {
        const record = await holdRecord(w, holdId);
        const orders = await ordersOfHold(w, holdId);
        const ordered = (await claimsOfHold(w, holdId)).filter((c) => c.outcome === 'ordered');
        if (record?.status === 'converted') {
          sold += quantities[i]!;
          converted++;
          if (orders.length !== 1 || ordered.length !== 1 || record.order_id !== String(orders[0]!.id))
            t.fail(`converted hold ${holdId} is not exactly one order`, { record, orders, ordered });
        } else if (orders.length !== 0 || ordered.length !== 0) {
          t.fail(`hold ${holdId} (${record?.status}) is not converted but has an order`, { orders, ordered });
        }
      }
      t.equal(converted, committed, 'recovery converted exactly the holds whose orders were committed');
      t.same(
        await inventory(w, productId),
        { stock: 40, held: heldUnits - sold, sold },
        `every committed order's units sold (${sold}), the rest held again`,
      );
      t.equal(sold, await unitsOrdered(w, productId), 'sold == units of the orders');

      // Every hold converts now, once: the committed ones answer their order, the others get theirs.
      const last = await Promise.all(holds.map((holdId) => restarted.call('POST', '/api/orders', { hold_id: holdId })));
      t.same(
        last.filter((a) => a.status !== 200 && a.status !== 201).map((a) => `${a.status} ${JSON.stringify(a.body)}`),
        [],
        'every hold converts after the restart',
      );
      for (const holdId of holds)
        if ((await orderCount(w, holdId)) !== 1) t.fail(`hold ${holdId} does not have exactly one order`);
      t.same(await inventory(w, productId), { stock: 40, held: 0, sold: heldUnits }, 'every unit sold, once');
      t.same(await conversions(w, productId), [], 'no conversion left in progress');
      t.same(errorLines(dying, restarted), [], 'nothing logged at level error');
    },
  );
}

t.test(
  'a service killed after cancelling an unpaid order, before returning its units: recovery returns them, once',
  async (t) => {
    const w = await world(t);
    const settings = { ORDER_PAYMENT_TTL_SECONDS: '1', RECOVERY_INTERVAL_MS: String(RECOVERY_INTERVAL_MS) };

    // The order is made by a service that does not settle orders, so it is still unpaid when the faulty one starts.
    const maker = await w.start({ env: { ...settings, RECOVERY_INTERVAL_MS: '0' } });
    const productId = await createProductVia(maker, 5);
    const holdId = await holdVia(maker, productId, 2);
    const order = await maker.call('POST', '/api/orders', { hold_id: holdId });
    t.equal(order.status, 201, 'an order is made');
    t.same(await inventory(w, productId), { stock: 5, held: 0, sold: 2 });
    t.same(await maker.stop('SIGTERM'), { code: 0, signal: null }, 'its service shuts down cleanly');
    const overdue = await eventually(() => isPastPaymentDeadline(w, holdId), 5000);
    t.ok(overdue, 'the order is past its payment deadline');

    // Its first settlement pass cancels the order, then the process dies before the units go back.
    const dying = await w.start({ fault: 'after-cancel-commit', env: settings, ready: false });
    t.same(
      await waitForExit(dying),
      { code: null, signal: 'SIGKILL' },
      'the service killed itself after the cancellation committed',
    );
    const [cancelled] = await ordersOfHold(w, holdId);
    t.match(
      cancelled,
      { status: 'cancelled', payment_status: 'failed', units_released_at: null },
      'the order is cancelled, its units not yet released',
    );
    t.same(await inventory(w, productId), { stock: 5, held: 0, sold: 2 }, 'the units are still counted sold');
    t.notOk((await holdRecord(w, holdId))?.units_returned, 'the hold record has not returned them');

    // Watch `sold` from here to the end: it never goes below 0, nor below what is ordered.
    let lowestSold = Infinity;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        lowestSold = Math.min(lowestSold, (await inventory(w, productId)).sold);
        await sleep(10);
      }
    })();

    const restarted = await w.start({ env: settings });
    const released = await eventually(
      async () => Boolean((await ordersOfHold(w, holdId))[0]?.units_released_at),
      RECOVERY_DEADLINE_MS,
    );
    t.ok(released, 'units_released_at is set after the restart');
    const [settled] = await ordersOfHold(w, holdId);
    t.same(
      await inventory(w, productId),
      { stock: 5, held: 0, sold: 0 },
      'the units are back: sold 0, all 5 available',
    );
    t.match(
      await restarted.call('GET', `/api/products/${productId}`),
      { status: 200, body: { available_stock: 5, held: 0, sold: 0 } },
      'the API shows all 5 units available',
    );
    t.match(
      await holdRecord(w, holdId),
      { status: 'converted', units_returned: true },
      'the hold record remembers the return',
    );
    await restarted.stop();

    const again = await w.start({ env: settings });
    // Nothing is due, so there is nothing to wait for: give the settlement loop ten passes to do something wrong.
    await sleep(RECOVERY_INTERVAL_MS * 10);
    t.same(await inventory(w, productId), { stock: 5, held: 0, sold: 0 }, 'a second restart changes nothing');
    const [still] = await ordersOfHold(w, holdId);
    t.equal(
      still?.units_released_at?.getTime(),
      settled?.units_released_at?.getTime(),
      'units_released_at is unchanged',
    );
    watching = false;
    await watcher;
    t.equal(lowestSold, 0, 'sold never went below 0: the units came back once');
    t.same(errorLines(dying, restarted, again), [], 'nothing logged at level error');
  },
);

t.test(
  'an order a crash left half converted, then cancelled for non-payment before recovery: its units come back once',
  async (t) => {
    const w = await world(t);
    const settings = { ORDER_PAYMENT_TTL_SECONDS: '1' };
    const dying = await w.start({ fault: 'after-order-commit', env: { ...settings, RECOVERY_INTERVAL_MS: '0' } });
    const productId = await createProductVia(dying, 5);
    const holdId = await holdVia(dying, productId, 2);
    await orderThatKills(t, dying, holdId);
    t.equal((await holdRecord(w, holdId))?.status, 'converting', 'the order is committed, its hold still converting');

    // The service stays down past the payment deadline (an outage longer than ORDER_PAYMENT_TTL_SECONDS).
    t.ok(await eventually(() => isPastPaymentDeadline(w, holdId), 5000), 'the order is past its payment deadline');

    // Settlement comes first (here: an instance without a sweeper; in production whichever loop wins the race at
    // start): the order is cancelled while its hold is still converting.
    const settler = await w.start({ env: { ...settings, SWEEP_INTERVAL_MS: '0' } });
    t.ok(
      await eventually(
        async () => Boolean((await ordersOfHold(w, holdId))[0]?.units_released_at),
        RECOVERY_DEADLINE_MS,
      ),
      'the order is cancelled and its units marked released',
    );
    const settlerErrors = errorLines(settler);
    await settler.stop();

    // Then recovery decides the claim. This test is about what it does, not when: make the product due at once.
    const recoverer = await w.start({ env: settings });
    await makeDueForSweep(w, [productId]);
    t.ok(
      await eventually(async () => (await conversions(w, productId)).length === 0, RECOVERY_DEADLINE_MS),
      'recovery decided the claim',
    );
    // Give the settlement loop a few passes to repair what it can.
    await sleep(RECOVERY_INTERVAL_MS * 5);

    const [order] = await ordersOfHold(w, holdId);
    t.match(order, { status: 'cancelled', qty: 2 }, 'the order is cancelled');
    t.not(order?.units_released_at, null, 'its units are marked released');
    t.equal(await unitsOrdered(w, productId), 0, 'no order holds units');
    t.same(
      await inventory(w, productId),
      { stock: 5, held: 0, sold: 0 },
      'so nothing is sold or held: all 5 units are for sale again',
    );
    t.match(
      await recoverer.call('GET', `/api/products/${productId}`),
      { status: 200, body: { available_stock: 5, sold: 0 } },
      'the API shows all 5 units available',
    );
    t.comment(`hold record at the end: ${JSON.stringify(await holdRecord(w, holdId))}`);
    const errors = [...settlerErrors, ...errorLines(recoverer)];
    t.same(errors, [], 'nothing logged at level error');
  },
);

// ---------------------------------------------------------------------------------------------------------------
// Postgres away during conversions: the service reaches Postgres through a TCP proxy the test cuts.

for (const mode of ['refuse', 'blackhole'] as const satisfies readonly ProxyMode[]) {
  t.test(
    `Postgres stopped during conversions (proxy ${mode}): 503, holds unharmed; after it is back, conversions succeed and nothing is stuck`,
    async (t) => {
      const w = await world(t);
      const { proxy, url: proxiedUrl } = await proxyInFrontOf(t, w.databaseUrl);
      const env = { DATABASE_URL: proxiedUrl, DATABASE_TIMEOUT_MS: '500' };
      let service = await w.start({ env });
      const services = [service];

      const productId = await createProductVia(service, 10);
      const single = await holdVia(service, productId, 2);
      const contested = await holdVia(service, productId, 3);
      t.same(await inventory(w, productId), { stock: 10, held: 5, sold: 0 }, 'two holds, 5 units held');

      // Postgres goes away in the middle of conversions: the test holds a lock that makes their transactions wait
      // (each hold is claimed in Redis by then), and cuts the proxy while they wait.
      const locker = await w.db.connect();
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE hold_claims IN ACCESS EXCLUSIVE MODE');
      const inFlight = [single, contested, contested, contested, contested, contested].map((holdId) =>
        service.attempt('POST', '/api/orders', { hold_id: holdId }),
      );
      const database = new URL(w.databaseUrl).pathname.slice(1);
      const waitingOnLocks = async () => {
        const { rows } = await w.db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
          [database],
        );
        return rows[0]!.n;
      };
      const waiting = await poll(waitingOnLocks, (n) => n >= inFlight.length, 300, 5);
      t.comment(
        `${waiting >= inFlight.length ? waiting : 'not all'} conversions waiting in Postgres when it went away`,
      );
      await proxy.cut(mode);
      const answers = await Promise.all(inFlight);
      await locker.query('ROLLBACK');
      locker.release();
      t.same(
        answers.map((r) => r.answer?.status ?? describeError(r.error)),
        [503, 503, 503, 503, 503, 503],
        'conversions in flight answer 503',
      );
      const slowest = Math.max(...answers.map((r) => r.answer?.ms ?? Infinity));
      t.ok(slowest < POSTGRES_OUTAGE_ANSWER_MS, `the slowest answered in ${slowest.toFixed(0)} ms`);
      t.match(answers[0]?.answer?.body, { code: 'SERVICE_UNAVAILABLE' }, 'with code SERVICE_UNAVAILABLE');

      const died = await waitForExit(service, 100);
      if (died) {
        t.fail(`the service process died when Postgres went away (${JSON.stringify(died)})`, {
          log: service.output().slice(-15),
        });
      } else {
        t.pass('the service is still running');
        // While Postgres is away: answered at once, again and again.
        const again = await service.call('POST', '/api/orders', { hold_id: single });
        t.match(
          again,
          { status: 503, body: { code: 'SERVICE_UNAVAILABLE' } },
          'a conversion while Postgres is away answers 503',
        );
        t.ok(again.ms < POSTGRES_OUTAGE_ANSWER_MS, `answered in ${again.ms.toFixed(0)} ms, not a hang`);
        const copies = await Promise.all(
          Array.from({ length: 5 }, () => service.call('POST', '/api/orders', { hold_id: contested })),
        );
        t.same(
          copies.map((a) => a.status),
          [503, 503, 503, 503, 503],
          'concurrent conversions of one hold all answer 503',
        );
        const slowestCopy = Math.max(...copies.map((a) => a.ms));
        t.ok(slowestCopy < POSTGRES_OUTAGE_ANSWER_MS, `the slowest answered in ${slowestCopy.toFixed(0)} ms`);
        for (const [holdId, qty] of [
          [single, 2],
          [contested, 3],
        ] as const) {
          t.match(
            await service.call('GET', `/api/holds/${holdId}`),
            { status: 200, body: { status: 'held', qty } },
            `hold ${holdId} still reads held`,
          );
        }
        t.match(
          await service.call('GET', `/api/products/${productId}`),
          { status: 200, body: { held: 5, sold: 0, available_stock: 5 } },
          'the API shows the product unchanged',
        );
      }
      for (const holdId of [single, contested]) {
        t.ok(
          ['held', 'converting'].includes((await holdRecord(w, holdId))?.status ?? ''),
          `hold ${holdId} is still a hold (or claimed)`,
        );
      }
      t.same(await inventory(w, productId), { stock: 10, held: 5, sold: 0 }, 'held unchanged, nothing sold');
      // A conversion's statement that Postgres had received may still commit once the lock is gone, though the
      // service lost its connection (and answered 503): its outcome is unknown until a retry or recovery reads it.
      const committed = new Map<string, number>();
      for (const holdId of [single, contested]) {
        const count = await orderCount(w, holdId);
        t.ok(count <= 1, `hold ${holdId}: at most one order (${count}) while Postgres was away`);
        committed.set(holdId, count);
      }

      await proxy.restore();
      if (died) {
        service = await w.start({ env });
        services.push(service);
      }
      t.ok(await eventually(() => service.isReady(), 10_000, 100), 'ready again');

      // 201, or 200 with the order whose commit the outage hid.
      const placed = await service.call('POST', '/api/orders', { hold_id: single });
      t.equal(placed.status, committed.get(single) ? 200 : 201, 'the same hold converts once Postgres is back');
      t.match(placed.body, { hold_id: single, items: [{ qty: 2 }] }, 'its order');
      t.equal(await orderCount(w, single), 1, 'exactly one order');

      const one = await service.call('POST', '/api/orders', { hold_id: contested });
      t.equal(one.status, committed.get(contested) ? 200 : 201, 'the contested hold converts once Postgres is back');
      t.equal(await orderCount(w, contested), 1, 'exactly one order for it, whatever its eleven copies left behind');
      t.match(
        await service.call('POST', '/api/orders', { hold_id: contested }),
        { status: 200, body: { order_id: one.body.order_id } },
        'a repeat answers that order',
      );
      t.same(await inventory(w, productId), { stock: 10, held: 0, sold: 5 }, 'both holds sold, once');

      // Nothing stuck: a lease later, no claim is left for recovery, and each hold has one claim 'ordered'.
      await sleep(LEASE_MS);
      t.ok(
        await eventually(async () => (await conversions(w, productId)).length === 0, RECOVERY_DEADLINE_MS),
        'no conversion left in progress',
      );
      for (const holdId of [single, contested]) {
        t.same(
          (await claimsOfHold(w, holdId)).filter((c) => c.outcome === 'ordered').length,
          1,
          `hold ${holdId}: one claim 'ordered'`,
        );
        t.equal((await holdRecord(w, holdId))?.status, 'converted', `hold ${holdId} is converted`);
      }
      t.equal(await unitsOrdered(w, productId), 5, 'sold == units ordered');
      // Errors of the loops and of recovery retrying while Postgres was away are expected; nothing else.
      const errors = errorLines(...services).filter((line) => !/failed; retrying/.test(line));
      t.same(errors, [], 'nothing logged at level error but retries while Postgres was away');
    },
  );
}
