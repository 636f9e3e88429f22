/**
 * The invariant check run after each scenario, on every product the scenario used:
 *
 * - granted units never above stock (units in the 201s clients received, per product);
 * - stock − held − sold ≥ 0;
 * - with access to the stores, the reconciliation finds no drift (src/domain/reconcile.ts, `npm run reconcile`):
 *   `held` = Σ qty of the hold records that are held or converting; `sold` = Σ order_items.qty of the product's
 *   orders whose units count as sold (SOLD_ORDER_STATUSES), give or take orders between the two stores; each
 *   customer's units; stock = Postgres's; every active hold in its index.
 *
 * The reads are not one atomic snapshot, so the check looks at the settled state: it is repeated for a few
 * seconds while work that was in flight when the load stopped (an order being written, say) finishes.
 */
import { Kysely, PostgresDialect } from 'kysely';
import type { Database } from '../../src/db/schema.js';
import { reconcile, type Drift } from '../../src/domain/reconcile.js';
import { bucketLabels, productKeys } from '../../src/redis/keys.js';
import { getProduct } from './api.js';
import type { Deployment, Stores } from './environment.js';
import { sleep } from './processes.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface InvariantReport {
  ok: boolean;
  checks: Check[];
  /** Seconds waited for the state to settle before every check held (or the wait ran out). */
  settleSeconds: number;
  /** Times the checks ran: more than 1 means work still in flight when the load stopped had to finish first. */
  attempts: number;
}

interface Counters {
  stock: number;
  held: number;
  sold: number;
}

/** Units clients were granted (201s × qty) per product in a scenario. */
export type Grants = ReadonlyMap<number, number>;

const BATCH = 500;
const SETTLE_TIMEOUT_MS = 15_000;
const IN_FLIGHT_GRACE_MS = 300;

const inventoryKey = (prefix: string, id: number) => productKeys(prefix, id).inventory;

async function redisCounters(stores: Stores, ids: number[]): Promise<Map<number, Counters>> {
  const replies = await stores.redis
    .pipeline(
      ids.map((id) => ['hmget', inventoryKey(stores.prefix, id), 'stock', 'held', 'sold', 'buckets', 'total_stock']),
    )
    .exec();
  const counters = new Map<number, Counters>();
  for (const [i, id] of ids.entries()) {
    const reply = replies?.[i];
    if (!reply || reply[0]) throw reply?.[0] ?? new Error('no HMGET reply');
    const [stock, held, sold, buckets, total] = reply[1] as (string | null)[];
    if (stock === null || stock === undefined) throw new Error(`product ${id} is missing from Redis`);
    const c = { stock: Number(total ?? stock), held: Number(held ?? 0), sold: Number(sold ?? 0) };
    // A bucketed product: its first bucket keeps the total stock, every bucket its own held and sold.
    for (const label of bucketLabels(id, Number(buckets ?? 1)).slice(1)) {
      const [h, s] = await stores.redis.hmget(productKeys(stores.prefix, id, label).inventory, 'held', 'sold');
      c.held += Number(h ?? 0);
      c.sold += Number(s ?? 0);
    }
    counters.set(id, c);
  }
  return counters;
}

// A Kysely handle on the bench's pool of the deployment's database, for reconcile(); made once per deployment.
const ledgers = new WeakMap<Stores, Kysely<Database>>();
function ledgerOf(stores: Stores): Kysely<Database> {
  let db = ledgers.get(stores);
  if (!db) {
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: stores.db }) });
    ledgers.set(stores, db);
  }
  return db;
}

/** Collects per-product violations of one rule into one Check. */
class Rule {
  private readonly violations: string[] = [];
  private count = 0;
  constructor(readonly name: string) {}
  expect(ok: boolean, describe: () => string): void {
    if (ok) return;
    this.count++;
    if (this.violations.length < 3) this.violations.push(describe());
  }
  result(products: number, skipped?: string): Check {
    if (skipped) return { name: this.name, ok: true, detail: `skipped: ${skipped}` };
    return {
      name: this.name,
      ok: this.count === 0,
      detail:
        this.count === 0
          ? `holds for ${products} product(s)`
          : `${this.count} product(s) violate it, e.g. ${this.violations.join('; ')}`,
    };
  }
}

async function checkOnce(deployment: Deployment, ids: number[], grants: Grants): Promise<Check[]> {
  const rules = {
    granted: new Rule('granted units ≤ stock'),
    reconciled: new Rule('Redis agrees with its hold records and Postgres (reconcile)'),
    available: new Rule('stock − held − sold ≥ 0'),
  };
  const stores = deployment.stores;
  for (let start = 0; start < ids.length; start += BATCH) {
    const batch = ids.slice(start, start + BATCH);
    let counters: Map<number, Counters>;
    if (stores) {
      counters = await redisCounters(stores, batch);
      const report = await reconcile({
        db: ledgerOf(stores),
        redis: stores.redis,
        prefix: stores.prefix,
        productIds: batch,
      });
      const drifting = new Map<number, Drift[]>();
      for (const drift of report.drifts)
        drifting.set(drift.product_id, [...(drifting.get(drift.product_id) ?? []), drift]);
      for (const id of batch) {
        const drifts = drifting.get(id) ?? [];
        rules.reconciled.expect(drifts.length === 0, () =>
          drifts.map((d) => `product ${id}: ${d.field} ${d.redis}, expected ${d.expected} (${d.source})`).join('; '),
        );
      }
    } else {
      counters = new Map();
      for (const id of batch) counters.set(id, await getProduct(deployment.url, id));
    }
    for (const id of batch) {
      const c = counters.get(id)!;
      rules.available.expect(
        c.stock - c.held - c.sold >= 0,
        () => `product ${id}: stock ${c.stock}, held ${c.held}, sold ${c.sold}`,
      );
      const granted = grants.get(id);
      if (granted !== undefined)
        rules.granted.expect(granted <= c.stock, () => `product ${id}: granted ${granted}, stock ${c.stock}`);
    }
  }
  const noStores = stores ? undefined : 'no store access (set BENCH_REDIS_URL and BENCH_DATABASE_URL)';
  return [
    rules.granted.result(grants.size),
    rules.reconciled.result(ids.length, noStores),
    rules.available.result(ids.length),
  ];
}

/**
 * Runs the checks on `productIds` until they all hold or SETTLE_TIMEOUT_MS passes, plus the scenario's own
 * `extra` checks (evaluated once, after settling).
 */
export async function checkInvariants(
  deployment: Deployment,
  productIds: number[],
  grants: Grants,
  extra: () => Promise<Check[]> = async () => [],
): Promise<InvariantReport> {
  const started = performance.now();
  // autocannon stops at once, but the service still answers the requests that were in flight (up to one per
  // connection): give them a moment before the first look.
  await sleep(IN_FLIGHT_GRACE_MS);
  let checks: Check[];
  let attempts = 0;
  for (;;) {
    attempts++;
    checks = await checkOnce(deployment, productIds, grants);
    if (checks.every((c) => c.ok) || performance.now() - started > SETTLE_TIMEOUT_MS) break;
    await sleep(500);
  }
  checks.push(...(await extra()));
  return { ok: checks.every((c) => c.ok), checks, settleSeconds: (performance.now() - started) / 1000, attempts };
}
