/**
 * Grouped order reads (src/db/order-reads.ts) against a real Postgres: the orders asked for in one turn are read
 * by one statement, each caller gets its own row (or none), and an outage fails every read of the statement fast.
 */
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, RootOperationNode } from 'kysely';
import t from 'tap';
import { createDatabase } from '../src/db/connection.js';
import { createOrderReads } from '../src/db/order-reads.js';
import { StoreUnavailableError } from '../src/errors.js';
import { createTestDatabase } from './support/app.js';
import { proxyInFrontOf } from './support/tcp-proxy.js';

/** Counts the statements a Kysely handle sends. */
class StatementCount implements KyselyPlugin {
  count = 0;
  transformQuery({ node }: PluginTransformQueryArgs): RootOperationNode {
    this.count++;
    return node;
  }
  async transformResult({ result }: PluginTransformResultArgs) {
    return result;
  }
}

async function ordersIn(url: string, n: number): Promise<number[]> {
  const db = createDatabase({ url, timeoutMs: 2000, poolSize: 1 });
  try {
    const rows = await db
      .insertInto('orders')
      .values(
        Array.from({ length: n }, (_, i) => ({
          hold_id: `1-read${i}`,
          customer_id: `customer-${i}`,
          status: 'pending_payment' as const,
          payment_status: 'pending' as const,
          total_cents: 100 * (i + 1),
          payment_due_at: new Date(Date.now() + 900_000),
        })),
      )
      .returning('id')
      .execute();
    return rows.map((r) => r.id);
  } finally {
    await db.destroy();
  }
}

t.test('the reads of one turn are one statement; each caller gets its own row', async (t) => {
  const url = await createTestDatabase(t);
  const ids = await ordersIn(url, 3);
  const counter = new StatementCount();
  const db = createDatabase({ url, timeoutMs: 2000, poolSize: 2 }).withPlugin(counter);
  t.teardown(() => db.destroy());
  const reads = createOrderReads(db, { maxBatch: 100 });

  const asked = [ids[2]!, ids[0]!, 999_999, ids[2]!, ids[1]!];
  const rows = await Promise.all(asked.map((id) => reads.find(id)));
  t.equal(counter.count, 1, 'five reads, one statement');
  t.same(
    rows.map((row) => row?.id),
    [ids[2], ids[0], undefined, ids[2], ids[1]],
    'each its own order, none for an id that has none, a repeated id twice',
  );
  t.same(
    rows.map((row) => row?.total_cents),
    [300, 100, undefined, 300, 200],
    'the rows as stored',
  );

  await reads.find(ids[0]!);
  t.equal(counter.count, 2, 'a read of a later turn is a statement of its own');

  const small = createOrderReads(db, { maxBatch: 2 });
  await Promise.all(ids.map((id) => small.find(id)));
  t.equal(counter.count, 4, 'three reads with batches of at most two: two statements');
});

t.test('Postgres unreachable: every read of the statement fails as unavailable, fast', async (t) => {
  const url = await createTestDatabase(t);
  const ids = await ordersIn(url, 2);
  const { proxy, url: proxied } = await proxyInFrontOf(t, url);
  const db = createDatabase({ url: proxied, timeoutMs: 500, poolSize: 2 });
  t.teardown(() => db.destroy());
  const reads = createOrderReads(db, { maxBatch: 100 });
  await proxy.cut('blackhole');
  const started = Date.now();
  const settled = await Promise.allSettled([...ids, ids[0]!].map((id) => reads.find(id)));
  const ms = Date.now() - started;
  t.ok(
    settled.every((s) => s.status === 'rejected' && s.reason instanceof StoreUnavailableError),
    'each read fails as Postgres unavailable (503)',
  );
  t.ok(ms < 2000, `answered within ${ms} ms`);
  await proxy.restore();
});
