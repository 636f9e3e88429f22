/**
 * The invariant check run after each scenario, on every product the scenario used:
 *
 * - granted units never above stock (units in the 201s clients received, per product);
 * - Redis's counters equal the hold records: `held` = Σ qty of the records in the product's `holds` hash whose
 *   status is `held` or `converting`;
 * - stock − held − sold ≥ 0;
 * - `sold` equals Postgres's orders: Σ order_items.qty of the product's orders whose units count as sold
 *   (SOLD_ORDER_STATUSES, src/db/schema.ts: `pending_payment`, `paid`; a `cancelled` order's units went back on
 *   sale, and `refund_required` is only reached from `cancelled`).
 *
 * The reads are not one atomic snapshot, so the check looks at the settled state: it is repeated for a few
 * seconds while work that was in flight when the load stopped (an order being written, say) finishes.
 */
import { SOLD_ORDER_STATUSES } from '../../src/db/schema.js';
import { productKeys } from '../../src/redis/keys.js';
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

const holdsKey = (prefix: string, id: number) => productKeys(prefix, id).holds;
const inventoryKey = (prefix: string, id: number) => productKeys(prefix, id).inventory;

/** Σ qty of a product's hold records that still hold units (status held or converting). */
function activeUnits(records: string[]): number {
  let units = 0;
  for (const raw of records) {
    const record = JSON.parse(raw) as { qty?: unknown; status?: unknown };
    if ((record.status === 'held' || record.status === 'converting') && typeof record.qty === 'number')
      units += record.qty;
  }
  return units;
}

async function holdRecordUnits(stores: Stores, ids: number[]): Promise<Map<number, number>> {
  const units = new Map<number, number>();
  const lengths = await stores.redis.pipeline(ids.map((id) => ['hlen', holdsKey(stores.prefix, id)])).exec();
  const small: number[] = [];
  for (const [i, id] of ids.entries()) {
    const length = Number(lengths?.[i]?.[1] ?? 0);
    if (length <= 2_000) small.push(id);
    else {
      // A hot product's hash: page through it rather than block Redis with one huge reply.
      let total = 0;
      let cursor = '0';
      do {
        const [next, flat] = await stores.redis.hscan(holdsKey(stores.prefix, id), cursor, 'COUNT', 1000);
        cursor = next;
        total += activeUnits(flat.filter((_, j) => j % 2 === 1));
      } while (cursor !== '0');
      units.set(id, total);
    }
  }
  const values = await stores.redis.pipeline(small.map((id) => ['hvals', holdsKey(stores.prefix, id)])).exec();
  for (const [i, id] of small.entries()) {
    const reply = values?.[i];
    if (!reply || reply[0]) throw reply?.[0] ?? new Error('no HVALS reply');
    units.set(id, activeUnits(reply[1] as string[]));
  }
  return units;
}

async function redisCounters(stores: Stores, ids: number[]): Promise<Map<number, Counters>> {
  const replies = await stores.redis
    .pipeline(ids.map((id) => ['hmget', inventoryKey(stores.prefix, id), 'stock', 'held', 'sold']))
    .exec();
  const counters = new Map<number, Counters>();
  for (const [i, id] of ids.entries()) {
    const reply = replies?.[i];
    if (!reply || reply[0]) throw reply?.[0] ?? new Error('no HMGET reply');
    const [stock, held, sold] = reply[1] as (string | null)[];
    if (stock === null || stock === undefined) throw new Error(`product ${id} is missing from Redis`);
    counters.set(id, { stock: Number(stock), held: Number(held ?? 0), sold: Number(sold ?? 0) });
  }
  return counters;
}

async function postgresSold(stores: Stores, ids: number[]): Promise<Map<number, number>> {
  const { rows } = await stores.db.query<{ product_id: number; units: number }>(
    `SELECT oi.product_id, SUM(oi.qty)::int AS units
       FROM order_items oi JOIN orders o ON o.id = oi.order_id
      WHERE oi.product_id = ANY($1) AND o.status = ANY($2)
      GROUP BY oi.product_id`,
    [ids, SOLD_ORDER_STATUSES],
  );
  return new Map(rows.map((row) => [Number(row.product_id), Number(row.units)]));
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
    records: new Rule('held = Σ qty of held/converting hold records'),
    available: new Rule('stock − held − sold ≥ 0'),
    sold: new Rule('sold = Σ qty of live orders in Postgres'),
  };
  const stores = deployment.stores;
  for (let start = 0; start < ids.length; start += BATCH) {
    const batch = ids.slice(start, start + BATCH);
    let counters: Map<number, Counters>;
    if (stores) {
      counters = await redisCounters(stores, batch);
      const [records, sold] = await Promise.all([holdRecordUnits(stores, batch), postgresSold(stores, batch)]);
      for (const id of batch) {
        const c = counters.get(id)!;
        const recordUnits = records.get(id) ?? 0;
        rules.records.expect(c.held === recordUnits, () => `product ${id}: held ${c.held}, records ${recordUnits}`);
        const orderUnits = sold.get(id) ?? 0;
        rules.sold.expect(c.sold === orderUnits, () => `product ${id}: sold ${c.sold}, orders ${orderUnits}`);
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
    rules.records.result(ids.length, noStores),
    rules.available.result(ids.length),
    rules.sold.result(ids.length, noStores),
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
