/**
 * Group commit of conversions (src/db/order-batches.ts) against a real Postgres: the orders of one turn are one
 * statement (their rows share the transaction id that wrote them, `xmin`), each claim decides for itself, and
 * one bad order never costs its batch-mates theirs.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import t, { type Test } from 'tap';
import { createDatabase } from '../src/db/connection.js';
import { createOrderBatches } from '../src/db/order-batches.js';
import { claimOutcome, type NewOrder, type OrderWrite } from '../src/db/orders.js';
import type { Database } from '../src/db/schema.js';
import { StoreUnavailableError } from '../src/errors.js';
import { createTestDatabase } from './support/app.js';
import { proxyInFrontOf } from './support/tcp-proxy.js';

interface Shop {
  db: Kysely<Database>;
  productIds: number[];
}

/** A database of its own with two products, and a pool on it. */
async function shop(t: Test, url?: string): Promise<Shop> {
  const db = createDatabase({ url: url ?? (await createTestDatabase(t)), timeoutMs: 500, poolSize: 4 });
  t.teardown(() => db.destroy());
  const products = await db
    .insertInto('products')
    .values([
      { name: 'Lamp', price_cents: 1500, stock: 100 },
      { name: 'Desk', price_cents: 9000, stock: 100 },
    ])
    .returning('id')
    .execute();
  return { db, productIds: products.map((p) => p.id) };
}

/** The order a write answered, or undefined when it wrote none. */
const orderOf = (write: OrderWrite) => (write.kind === 'written' ? write.order : undefined);

let holdNumber = 0;

/** A conversion of a new hold (hold ids start with their product's id, as the service's do). */
function conversion(productId: number, changes: Partial<NewOrder> = {}): NewOrder {
  return {
    claimId: randomUUID(),
    holdId: `${productId}-hold${++holdNumber}`,
    customerId: `customer-${holdNumber}`,
    productId,
    qty: 2,
    unitPriceCents: 1500,
    paymentMethod: 'card',
    paymentTtlSeconds: 900,
    redisGeneration: 0,
    ...changes,
  };
}

/** The transaction that wrote each hold's order (`xmin`): one per statement in autocommit. */
async function writers(db: Kysely<Database>, holdIds: string[]): Promise<Map<string, string>> {
  const { rows } = await sql<{ hold_id: string; xmin: string }>`
    SELECT hold_id, xmin::text AS xmin FROM orders WHERE hold_id = ANY(${holdIds})`.execute(db);
  return new Map(rows.map((r) => [r.hold_id, r.xmin]));
}

/** Every row the conversion of a hold wrote: its claim, order, item and payment. */
async function rowsOfHold(db: Kysely<Database>, holdId: string) {
  const { rows } = await sql<{ outcome: string; total_cents: number; qty: number; amount_cents: number }>`
    SELECT c.outcome, o.total_cents, i.qty, p.amount_cents
    FROM hold_claims c JOIN orders o USING (hold_id) JOIN order_items i ON i.order_id = o.id
    JOIN payments p ON p.order_id = o.id
    WHERE c.hold_id = ${holdId}`.execute(db);
  return rows;
}

t.test('the conversions of one turn are written by one statement, each as its own order', async (t) => {
  const { db, productIds } = await shop(t);
  const batches = createOrderBatches(db, { maxOrderBatch: 100 });
  const asked = [
    conversion(productIds[0]!, { qty: 1 }),
    conversion(productIds[1]!, { qty: 3, unitPriceCents: 9000 }),
    conversion(productIds[0]!, { qty: 2, customerId: null, paymentMethod: null }),
    conversion(productIds[1]!, { qty: 1, unitPriceCents: 9000 }),
  ];
  const orders = await Promise.all(asked.map((order) => batches.insert(order).then(orderOf)));
  for (const [i, order] of orders.entries()) {
    const ask = asked[i]!;
    t.match(
      order,
      {
        hold_id: ask.holdId,
        customer_id: ask.customerId,
        status: 'pending_payment',
        payment_status: 'pending',
        total_cents: ask.qty * ask.unitPriceCents,
        items: [{ product_id: ask.productId, qty: ask.qty, unit_price_cents: ask.unitPriceCents }],
      },
      `conversion ${i} answered its own order`,
    );
    t.same(
      await rowsOfHold(db, ask.holdId),
      [
        {
          outcome: 'ordered',
          total_cents: ask.qty * ask.unitPriceCents,
          qty: ask.qty,
          amount_cents: ask.qty * ask.unitPriceCents,
        },
      ],
      `conversion ${i}: its claim 'ordered', one order, one item, one payment of its total`,
    );
  }
  t.equal(new Set(orders.map((o) => o?.id)).size, 4, 'four different orders');
  const xmins = await writers(
    db,
    asked.map((a) => a.holdId),
  );
  t.equal(xmins.size, 4, 'all four in Postgres');
  t.equal(new Set(xmins.values()).size, 1, 'written by one transaction: one statement, one commit');

  const later = conversion(productIds[0]!);
  await batches.insert(later);
  t.not(
    (await writers(db, [later.holdId])).get(later.holdId),
    [...xmins.values()][0],
    'a conversion of a later turn goes in a statement of its own',
  );
});

t.test('a claim that already has an outcome, or a fenced hold, gets no order; its batch-mates do', async (t) => {
  const { db, productIds } = await shop(t);
  const batches = createOrderBatches(db, { maxOrderBatch: 100 });
  const abandoned = conversion(productIds[0]!);
  const ordered = conversion(productIds[0]!);
  await db
    .insertInto('hold_claims')
    .values({ claim_id: abandoned.claimId, hold_id: abandoned.holdId, outcome: 'abandoned' })
    .execute();
  const first = orderOf(await batches.insert(ordered));
  t.ok(first, 'a first conversion writes its order');
  // Redis lost the second product's copy since its hold was claimed: the rebuild moved the generation on.
  await db.updateTable('products').set({ redis_generation: 7 }).where('id', '=', productIds[1]!).execute();
  const fenced = conversion(productIds[1]!);
  const fresh = conversion(productIds[1]!, { redisGeneration: 7 });
  const good = conversion(productIds[0]!);

  const answers = await Promise.all(
    [abandoned, ordered, fenced, fresh, good].map((order) => batches.insert(order).then(orderOf)),
  );
  t.equal(answers[0], undefined, 'the abandoned claim: no order');
  t.equal(await claimOutcome(db, abandoned.claimId), 'abandoned', "and its claim is still 'abandoned'");
  t.equal(answers[1], undefined, 'a claim already ordered: no second order');
  t.equal(await claimOutcome(db, ordered.claimId), 'ordered', 'whose outcome reads ordered');
  t.equal(answers[2], undefined, 'a hold of a rebuilt copy: no order');
  t.equal(await claimOutcome(db, fenced.claimId), undefined, 'and no outcome (fenced)');
  t.equal(answers[3]?.hold_id, fresh.holdId, 'a hold of the rebuilt copy is ordered');
  t.equal(answers[4]?.hold_id, good.holdId, 'and so is the other product');
  const xmins = await writers(db, [fresh.holdId, good.holdId]);
  t.equal(new Set(xmins.values()).size, 1, 'those two in one statement');
  const { rows } = await sql<{
    n: number;
  }>`SELECT count(*)::int AS n FROM orders WHERE hold_id = ${ordered.holdId}`.execute(db);
  t.equal(rows[0]!.n, 1, 'the ordered hold still has exactly one order');
});

t.test('copies of one conversion in one batch: one order, the copies read the outcome', async (t) => {
  const { db, productIds } = await shop(t);
  const batches = createOrderBatches(db, { maxOrderBatch: 100 });
  const original = conversion(productIds[0]!);
  const other = conversion(productIds[0]!);
  const answers = await Promise.all(
    [original, original, other, original].map((order) => batches.insert(order).then(orderOf)),
  );
  t.equal(answers[0]?.hold_id, original.holdId, 'the first copy gets the order');
  t.same([answers[1], answers[3]], [undefined, undefined], 'the other copies none, as if they had waited for it');
  t.equal(await claimOutcome(db, original.claimId), 'ordered', "and read the claim 'ordered'");
  t.equal(answers[2]?.hold_id, other.holdId, 'the batch-mate its own');
  t.equal((await rowsOfHold(db, original.holdId)).length, 1, 'one order for the hold');
});

t.test("an order Postgres refuses fails alone: its batch-mates' orders are written", async (t) => {
  const { db, productIds } = await shop(t);
  const batches = createOrderBatches(db, { maxOrderBatch: 100 });
  // A hold that already has an order under an older claim: orders.hold_id is unique.
  const earlier = conversion(productIds[0]!);
  t.ok(orderOf(await batches.insert(earlier)), 'the earlier order');
  const secondClaim = conversion(productIds[0]!, { holdId: earlier.holdId });
  // A quantity the order_items check refuses (qty > 0), and a price the orders check refuses (total >= 0).
  const noUnits = conversion(productIds[1]!, { qty: 0 });
  const negative = conversion(productIds[1]!, { unitPriceCents: -5 });
  const good = [conversion(productIds[0]!), conversion(productIds[1]!), conversion(productIds[1]!)];

  const settled = await Promise.allSettled(
    [good[0]!, secondClaim, good[1]!, noUnits, negative, good[2]!].map((order) => batches.insert(order).then(orderOf)),
  );
  const reasons = settled.map((s) => (s.status === 'rejected' ? (s.reason as { code?: string }).code : 'ok'));
  t.same(
    reasons,
    ['ok', '23505', 'ok', '23514', '23514', 'ok'],
    'each refused order its own error (unique violation, check violations); the others written',
  );
  for (const order of good) {
    t.equal((await rowsOfHold(db, order.holdId)).length, 1, `${order.holdId} has its order`);
  }
  for (const [what, order] of [
    ['second claim', secondClaim],
    ['no units', noUnits],
    ['negative price', negative],
  ] as const) {
    t.equal(await claimOutcome(db, order.claimId), undefined, `${what}: nothing recorded for its claim`);
  }
  t.same(
    (await rowsOfHold(db, earlier.holdId)).map((r) => r.outcome),
    ['ordered'],
    'the hold of the second claim still has its one order',
  );
});

t.test('more conversions in one turn than a batch takes go in several statements', async (t) => {
  const { db, productIds } = await shop(t);
  const batches = createOrderBatches(db, { maxOrderBatch: 3 });
  const asked = Array.from({ length: 7 }, (_, i) => conversion(productIds[i % 2]!));
  const orders = await Promise.all(asked.map((order) => batches.insert(order).then(orderOf)));
  t.ok(
    orders.every((o, i) => o?.hold_id === asked[i]!.holdId),
    'every conversion answered its own order',
  );
  const xmins = await writers(
    db,
    asked.map((a) => a.holdId),
  );
  const perStatement = [...xmins.values()].reduce((n, x) => n.set(x, (n.get(x) ?? 0) + 1), new Map<string, number>());
  t.same([...perStatement.values()].sort(), [1, 3, 3], 'two full batches of 3, then the one left');
});

t.test('Postgres unreachable: every conversion of the batch is answered unavailable, at once', async (t) => {
  const { proxy, url } = await proxyInFrontOf(t, await createTestDatabase(t));
  const { db, productIds } = await shop(t, url);
  const batches = createOrderBatches(db, { maxOrderBatch: 100 });
  await proxy.cut('blackhole');
  const started = Date.now();
  const settled = await Promise.allSettled([0, 1, 0, 1].map((i) => batches.insert(conversion(productIds[i]!))));
  const ms = Date.now() - started;
  t.ok(
    settled.every((s) => s.status === 'rejected' && s.reason instanceof StoreUnavailableError),
    'each one fails as Postgres unavailable (503), none as a bug',
  );
  // About one timeout (500 ms): an outage is a fast 503 for every order of the batch.
  t.ok(ms < 2000, `answered within ${ms} ms`);
  await proxy.restore();
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM orders`.execute(db);
  t.equal(rows[0]!.n, 0, 'nothing was written');
});

/** The ledger's count of a product's units in live orders (product_sales, kept by triggers). */
async function soldUnits(db: Kysely<Database>, productId: number): Promise<number> {
  const row = await db
    .selectFrom('product_sales')
    .select('sold_units')
    .where('product_id', '=', productId)
    .executeTakeFirstOrThrow();
  return row.sold_units;
}

t.test('Postgres refuses orders beyond the stock its live orders leave, whatever Redis granted', async (t) => {
  const { db, productIds } = await shop(t);
  const [lamp, desk] = productIds as [number, number];
  await db.updateTable('products').set({ stock: 5 }).where('id', '=', lamp).execute();
  t.equal(await soldUnits(db, lamp), 0, 'a new product starts with nothing sold');
  const batches = createOrderBatches(db, { maxOrderBatch: 100 });

  // Six units asked of five, in one batch (claim ids sorted: the ledger lets them in in that order).
  const asked = [1, 2, 3].map(() => conversion(lamp, { qty: 2 })).sort((a, b) => (a.claimId < b.claimId ? -1 : 1));
  const other = conversion(desk, { qty: 2 });
  const writes = await Promise.all([...asked, other].map((order) => batches.insert(order)));
  t.same(
    writes.map((w) => w.kind),
    ['written', 'written', 'beyondStock', 'written'],
    'the first two fit, the third is refused, the other product is not held back',
  );
  t.equal(await claimOutcome(db, asked[2]!.claimId), undefined, 'the refused claim: nothing recorded');
  t.equal((await rowsOfHold(db, asked[2]!.holdId)).length, 0, 'and no order');
  t.equal(await soldUnits(db, lamp), 4, 'the count has the two orders written');
  t.equal(await soldUnits(db, desk), 2, 'and the other product its own');

  const [fits, beyond] = await Promise.all(
    [conversion(lamp, { qty: 1 }), conversion(lamp, { qty: 1 })].map((o) => batches.insert(o)),
  );
  t.same(
    [fits!.kind, beyond!.kind].sort(),
    ['beyondStock', 'written'],
    'of two single units one fits: sold out exactly',
  );
  t.equal(await soldUnits(db, lamp), 5, 'five of five sold');

  // A cancellation returns the units to the ledger (and a payment, which keeps them sold, changes nothing).
  const [first] = writes as [OrderWrite & { kind: 'written' }];
  await db
    .updateTable('orders')
    .set({ status: 'paid', payment_status: 'completed' })
    .where('id', '=', first.order.id)
    .execute();
  t.equal(await soldUnits(db, lamp), 5, 'a paid order still counts');
  await db.updateTable('orders').set({ status: 'cancelled' }).where('id', '=', first.order.id).execute();
  t.equal(await soldUnits(db, lamp), 3, 'a cancelled one gives its two units back');
  t.equal(orderOf(await batches.insert(conversion(lamp, { qty: 2 })))?.status, 'pending_payment', 'which sell again');
  t.equal(await soldUnits(db, lamp), 5, 'sold out again');
});

t.test('concurrent batches on one product from separate pools never sell more than its stock', async (t) => {
  const url = await createTestDatabase(t);
  const { db, productIds } = await shop(t, url);
  const lamp = productIds[0]!;
  await db.updateTable('products').set({ stock: 50 }).where('id', '=', lamp).execute();
  // Four "instances", each with its own pool and batches, each asked for 30 units at once in batches of 5.
  const instances = Array.from({ length: 4 }, () => {
    const own = createDatabase({ url, timeoutMs: 5000, poolSize: 3 });
    t.teardown(() => own.destroy());
    return createOrderBatches(own, { maxOrderBatch: 5 });
  });
  const writes = await Promise.all(
    instances.flatMap((batches) => Array.from({ length: 30 }, () => batches.insert(conversion(lamp, { qty: 1 })))),
  );
  const written = writes.filter((w) => w.kind === 'written').length;
  t.equal(written, 50, `120 units asked of 50: exactly 50 orders written (${writes.length - written} refused)`);
  t.ok(
    writes.every((w) => w.kind !== 'notWritten'),
    'every other one refused as beyond the stock',
  );
  t.equal(await soldUnits(db, lamp), 50, 'the count says 50');
  const { rows } = await sql<{ units: number }>`
    SELECT coalesce(sum(qty), 0)::int AS units FROM order_items WHERE product_id = ${lamp}`.execute(db);
  t.equal(rows[0]!.units, 50, 'and so do the order items');
});
