import type { RedisClient } from '../redis/connection.js';
import type { Kysely, Transaction } from 'kysely';
import { loadConfig } from '../config.js';
import { lockProduct } from '../db/products.js';
import { productIdsAfter, productLedger, productLedgers, type ProductLedger } from '../db/reconcile.js';
import { SOLD_ORDER_STATUSES, type Database, type ProductRow } from '../db/schema.js';
import { createRedisCommands, type Counters, type RedisCommands } from '../redis/commands.js';
import { readProductState, type BucketCheck, type RedisProductState } from '../redis/product-state.js';
import { defineScripts } from '../redis/scripts.js';
import { settingsFrom } from '../settings.js';
import { bucketLabels } from '../redis/keys.js';
import { createRedisRebuilder } from './redis-rebuild.js';

// The rebuild logs for the service; reconcile reports what it did itself.
const silentLog = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} };

/**
 * Reconciliation (`npm run reconcile`): compares each product's Redis counters with its hold records and with
 * Postgres, the ledger, and repairs what can be repaired from the two. The rules compared are those of
 * docs/conversion.md; `compareProduct` is the one place that states them as expected values.
 */

/** One field of one product whose Redis value is not what its records or Postgres say it must be. */
export interface Drift {
  product_id: number;
  /** `stock`, `held`, `sold`, `customer_units[<customer>]`, `hold-expiries[<hold>]`, `available`... */
  field: string;
  redis: number | string | null;
  expected: number | string | null;
  /** Where the expected value comes from. */
  source: string;
  /** Whether --repair can fix it (from Postgres and the hold records). */
  fixable: boolean;
}

/** An order whose units are between the two stores, as the hold record and Postgres together show. */
export interface InFlightHold {
  holdId: string;
  /** `converting`: committed, units still in `held`; `unreturned`: cancelled, units still in `sold`. */
  kind: 'converting' | 'unreturned';
  qty: number;
  /** Set when the hold counts in its customer's units. */
  customerId: string | undefined;
}

/** The holds Redis has under conversion: their orders are what the ledger needs to look up. */
export function convertingHoldIds(state: RedisProductState): string[] {
  return [...state.records].filter(([, record]) => record.status === 'converting').map(([holdId]) => holdId);
}

/**
 * The orders whose units Redis counts differently from Postgres for now: committed while the hold is still
 * converting (the step that moves units held → sold has not run yet), or cancelled with units not returned yet.
 * The service finishes both on its own (recovery, the settlement loop); until then they are not drift.
 */
export function inFlightHolds(state: RedisProductState, ledger: ProductLedger): InFlightHold[] {
  const holds: InFlightHold[] = [];
  for (const [holdId, order] of ledger.ordersInFlight) {
    const record = state.records.get(holdId);
    if (!record) continue;
    const customerId = record.limited ? record.customer_id : undefined;
    if (record.status === 'converting' && order.live)
      holds.push({ holdId, kind: 'converting', qty: record.qty, customerId });
    else if (record.status === 'converted' && !record.units_returned && !order.live)
      holds.push({ holdId, kind: 'unreturned', qty: record.qty, customerId });
  }
  return holds;
}

/** What the product's Redis state must be, given its records and the ledger. */
export interface ExpectedState {
  held: number;
  sold: number;
  customerUnits: Map<string, number>;
  activeHolds: number;
  inFlight: InFlightHold[];
}

export function expectedState(state: RedisProductState, ledger: ProductLedger): ExpectedState {
  const limited = ledger.per_customer_limit !== null;
  const customerUnits = new Map<string, number>(limited ? ledger.liveUnitsByCustomer : []);
  const addUnits = (customer: string | undefined, units: number) => {
    if (customer !== undefined) customerUnits.set(customer, (customerUnits.get(customer) ?? 0) + units);
  };
  let held = 0;
  let activeHolds = 0;
  for (const record of state.records.values()) {
    if (record.status !== 'held' && record.status !== 'converting') continue;
    held += record.qty;
    activeHolds++;
    if (record.limited) addUnits(record.customer_id, record.qty);
  }
  const inFlight = inFlightHolds(state, ledger);
  let sold = ledger.liveUnits;
  for (const hold of inFlight) {
    const sign = hold.kind === 'converting' ? -1 : 1;
    sold += sign * hold.qty;
    addUnits(hold.customerId, sign * hold.qty);
  }
  for (const [customer, units] of customerUnits) if (units <= 0) customerUnits.delete(customer);
  return { held, sold, customerUnits, activeHolds, inFlight };
}

function soldSource(ledger: ProductLedger, inFlight: InFlightHold[]): string {
  const parts = [`Postgres: ${ledger.liveUnits} units in orders ${SOLD_ORDER_STATUSES.join('/')}`];
  const converting = inFlight.filter((h) => h.kind === 'converting');
  const unreturned = inFlight.filter((h) => h.kind === 'unreturned');
  const units = (holds: InFlightHold[]) => holds.reduce((sum, h) => sum + h.qty, 0);
  if (converting.length > 0)
    parts.push(`- ${units(converting)} of ${converting.length} committed order(s) whose hold is still converting`);
  if (unreturned.length > 0)
    parts.push(`+ ${units(unreturned)} of ${unreturned.length} cancelled order(s) whose units are not returned yet`);
  return parts.join(' ');
}

/**
 * Every drift of one product: Redis's state against its hold records and the ledger (undefined: Postgres has no
 * such product). Pure: the reads are the caller's.
 */
export function compareProduct(
  productId: number,
  state: RedisProductState,
  ledger: ProductLedger | undefined,
): Drift[] {
  const drifts: Drift[] = [];
  const drift = (field: string, redis: Drift['redis'], expected: Drift['expected'], source: string, fixable = true) =>
    drifts.push({ product_id: productId, field, redis, expected, source, fixable });
  const inventory = state.inventory;
  if (!ledger) {
    if (inventory) drift('product', 'present', 'absent', 'Postgres has no such product', false);
    return drifts;
  }
  for (const holdId of state.malformed)
    drift(`holds[${holdId}]`, 'malformed record', 'a hold record', 'src/redis/hold-record.ts', false);

  const expected = expectedState(state, ledger);
  if (ledger.countedUnits !== ledger.liveUnits)
    // Postgres against itself: the count an order insert is checked against (src/db/orders.ts) is off.
    drift(
      'postgres product_sales.sold_units',
      ledger.countedUnits,
      ledger.liveUnits,
      `Postgres: units of the product's orders ${SOLD_ORDER_STATUSES.join('/')} (the count is kept by triggers)`,
      false,
    );
  if (!inventory) {
    drift('inventory', null, 'loaded', 'Postgres products row (Redis lost the product)');
  } else {
    const stockSource = `Postgres products.stock (version ${ledger.stock_version})`;
    if (inventory.stock !== ledger.stock) drift('stock', inventory.stock, ledger.stock, stockSource);
    if (inventory.stock_version !== ledger.stock_version)
      drift('stock_version', inventory.stock_version, ledger.stock_version, 'Postgres products.stock_version');
    if (inventory.per_customer_limit !== (ledger.per_customer_limit ?? 0))
      drift(
        'per_customer_limit',
        inventory.per_customer_limit,
        ledger.per_customer_limit ?? 0,
        'Postgres products.per_customer_limit',
        false,
      );
    if (inventory.held !== expected.held)
      drift('held', inventory.held, expected.held, `hold records: ${expected.activeHolds} held or converting`);
    if (inventory.sold !== expected.sold)
      drift('sold', inventory.sold, expected.sold, soldSource(ledger, expected.inFlight));
  }

  const customers = new Set([...state.customerUnits.keys(), ...expected.customerUnits.keys()]);
  for (const customer of [...customers].sort()) {
    const redis = state.customerUnits.get(customer) ?? 0;
    const units = expected.customerUnits.get(customer) ?? 0;
    if (redis !== units)
      drift(
        `customer_units[${customer}]`,
        redis,
        units,
        ledger.per_customer_limit === null
          ? 'the product has no per-customer limit'
          : "the customer's held or converting limited holds + Postgres live orders",
      );
  }

  for (const [holdId, record] of state.records) {
    if (record.status === 'held' && !state.expiryIndex.has(holdId))
      drift(`hold-expiries[${holdId}]`, 'missing', record.expires_at, 'hold record (held)');
    if (record.status === 'converting' && !state.conversions.has(holdId))
      drift(`conversions[${holdId}]`, 'missing', 'present', 'hold record (converting)');
  }
  const stale = (index: string, members: Set<string>, status: string) => {
    for (const holdId of members) {
      const record = state.records.get(holdId);
      if (record?.status !== status)
        drift(`${index}[${holdId}]`, 'present', 'absent', record ? `hold record (${record.status})` : 'no hold record');
    }
  };
  stale('hold-expiries', state.expiryIndex, 'held');
  stale('conversions', state.conversions, 'converting');

  for (const bucket of state.buckets ?? []) compareBucket(bucket, drift);
  if (state.buckets && inventory) {
    const shares = state.buckets.reduce((units, b) => units + (b.counters?.stock ?? 0) + b.movingOut, 0);
    if (shares !== inventory.stock)
      drift(
        'bucket shares',
        shares,
        inventory.stock,
        "the first bucket's total stock: the buckets' shares + units of moves not finished must add up to it",
        false,
      );
  }

  const available = ledger.stock - expected.held - expected.sold;
  if (available < 0)
    drift(
      'available',
      inventory ? inventory.stock - inventory.held - inventory.sold : null,
      '>= 0',
      `oversold: stock ${ledger.stock} - held ${expected.held} - sold ${expected.sold} = ${available}`,
      false,
    );
  return drifts;
}

/**
 * One stock bucket of a bucketed product: present, under the product's generation, with `held` what its own hold
 * records hold and its own share never short (each bucket keeps the invariant for its share). Only a rebuild
 * repairs a bucket (--repair does it for a lost one); the other drifts are reported.
 */
function compareBucket(
  bucket: BucketCheck,
  drift: (field: string, redis: Drift['redis'], expected: Drift['expected'], source: string, fixable?: boolean) => void,
): void {
  const field = `buckets[${bucket.label}]`;
  const counters = bucket.counters;
  if (!counters) {
    drift(field, null, 'present', 'a bucket of the product (Redis lost it; a rebuild restores the product)');
    return;
  }
  if (counters.held !== bucket.recordsHeld)
    drift(`${field}.held`, counters.held, bucket.recordsHeld, "the bucket's held or converting hold records", false);
  const available = counters.stock - counters.held - counters.sold;
  if (available < 0)
    drift(
      `${field}.available`,
      available,
      '>= 0',
      `oversold bucket: share ${counters.stock} - held ${counters.held} - sold ${counters.sold}`,
      false,
    );
}

/** What --repair did to one product. */
export interface ProductRepairReport {
  product_id: number;
  /** `repaired`: written (some drift may remain: see `remaining`); `failed`: nothing written. */
  outcome: 'repaired' | 'failed';
  loaded?: boolean;
  before?: Counters;
  after?: Counters;
  customers_corrected?: number;
  holds_reindexed?: number;
  index_entries_dropped?: number;
  /** Why nothing was written (failed). */
  reason?: string;
}

export interface ReconcileReport {
  /** No drift (after repair, when repairing). */
  clean: boolean;
  products_checked: number;
  /** The drifts found by the check. */
  drifts: Drift[];
  /** Set when repairing: what was done per drifting product, and the drifts still there afterwards. */
  repairs?: ProductRepairReport[];
  remaining?: Drift[];
}

export interface ReconcileOptions {
  db: Kysely<Database>;
  redis: RedisClient;
  /** REDIS_KEY_PREFIX of the deployment. */
  prefix: string;
  /** Only these products; default: every product in Postgres. */
  productIds?: readonly number[];
  repair?: boolean;
}

const PAGE = 500;
// Products read from Redis at once (a few commands each); Postgres is read once per page.
const CHECK_CONCURRENCY = 8;
// A repair retries when a conversion or a return finished between its reads and its script, or an order changed.
const REPAIR_ATTEMPTS = 5;

/** Checks (and with `repair`, repairs) the products; the function the CLI, the bench and tests call. */
export async function reconcile(options: ReconcileOptions): Promise<ReconcileReport> {
  const { db, redis, prefix } = options;
  // The scripts are registered on the service's connections already; a plain client (the bench's) gets them here.
  if (typeof (redis as Partial<RedisClient>).repairProduct !== 'function') defineScripts(redis);
  // The two commands the repair sends (repairProduct, loadProduct) read nothing of the settings but the prefix.
  const commands = createRedisCommands(redis, settingsFrom(loadConfig({}, { REDIS_KEY_PREFIX: prefix })));

  const drifts: Drift[] = [];
  let checked = 0;
  // Not one snapshot: under live traffic, a conversion or a cancellation between the Redis and the Postgres reads
  // can show as drift that the next check does not find (the bench checks until settled). Repairs are fenced.
  const check = async (ids: readonly number[], trx: Kysely<Database> = db): Promise<Drift[]> => {
    const states = await mapConcurrently(ids, CHECK_CONCURRENCY, (id) => readProductState(redis, prefix, id));
    const ledgers = await productLedgers(trx, ids, states.flatMap(convertingHoldIds));
    return ids.flatMap((id, i) => compareProduct(id, states[i]!, ledgers.get(id)));
  };
  for await (const page of productPages(db, options.productIds)) {
    checked += page.length;
    drifts.push(...(await check(page)));
  }
  const report: ReconcileReport = { clean: drifts.length === 0, products_checked: checked, drifts };
  if (!options.repair) return report;

  report.repairs = [];
  report.remaining = [];
  for (const id of new Set(drifts.map((d) => d.product_id))) {
    const malformed = drifts.some((d) => d.product_id === id && d.field.startsWith('holds['));
    const { repair, remaining } = await db.transaction().execute(async (trx) => {
      // The fence: stock changes and reloads of this product take this lock, and a new order's item waits on it
      // (its foreign key locks the product row FOR KEY SHARE), until the repair has been written and checked.
      const row = await lockProduct(trx, id);
      const repair: ProductRepairReport = !row
        ? { product_id: id, outcome: 'failed', reason: 'Postgres has no such product' }
        : malformed
          ? { product_id: id, outcome: 'failed', reason: 'malformed hold records: repair them by hand first' }
          : await repairProduct(trx, redis, prefix, commands, row);
      return { repair, remaining: await check([id], trx) };
    });
    report.repairs.push(repair);
    report.remaining.push(...remaining);
  }
  report.clean = report.remaining.length === 0;
  return report;
}

/** The products to check, a page at a time: the ones asked for, or every product in Postgres in id order. */
async function* productPages(db: Kysely<Database>, only: readonly number[] | undefined): AsyncGenerator<number[]> {
  if (only) {
    for (let i = 0; i < only.length; i += PAGE) yield only.slice(i, i + PAGE);
    return;
  }
  for (let after = 0; ;) {
    const page = await productIdsAfter(db, after, PAGE);
    if (page.length > 0) yield page;
    if (page.length < PAGE) return;
    after = page[page.length - 1]!;
  }
}

/** `work` on every item, at most `limit` at a time; the results in the items' order. */
async function mapConcurrently<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The repair of one product, under its row lock (`trx`, in which `row` was locked). */
async function repairProduct(
  trx: Transaction<Database>,
  redis: RedisClient,
  prefix: string,
  commands: RedisCommands,
  row: ProductRow,
): Promise<ProductRepairReport> {
  const id = row.id;
  let loaded = false;
  for (let attempt = 1; attempt <= REPAIR_ATTEMPTS; attempt++) {
    const state = await readProductState(redis, prefix, id);
    const converting = convertingHoldIds(state);
    const ledger = (await productLedger(trx, id, converting))!;
    const lostBucket = state.buckets?.some((bucket) => !bucket.counters) ?? false;
    if (!state.inventory || lostBucket) {
      // Lost in Redis: rebuilt from Postgres under a new generation, as the loss watcher would (under this lock).
      const rebuilder = createRedisRebuilder({ db: trx, commands, log: silentLog });
      loaded = (await rebuilder.ensureLocked(trx, row, 'reconcile: missing in redis')) === 'rebuilt';
      for (const label of bucketLabels(id, row.buckets)) await commands.scheduleSweep(id, 0, 'new', label);
      continue;
    }
    // The repair script rewrites one slot's counters from the product's ledger: a bucketed product's drift is
    // reported for a person to judge (a rebuild fixes it, dropping the product's active holds).
    if (state.buckets)
      return {
        product_id: id,
        outcome: 'failed',
        ...(loaded ? { loaded } : {}),
        reason: 'a bucketed product is repaired only by a rebuild from Postgres, which drops its active holds',
      };
    const outcome = await commands.repairProduct(id, {
      stock: ledger.stock,
      stockVersion: ledger.stock_version,
      liveUnits: ledger.liveUnits,
      liveUnitsByCustomer: ledger.per_customer_limit === null ? new Map() : ledger.liveUnitsByCustomer,
      inFlight: inFlightHolds(state, ledger),
    });
    if (outcome.kind !== 'repaired') continue;
    // An order cancelled meanwhile (cancellations do not take the product lock) changed what `sold` must be:
    // the figures written are then recomputed, which the next attempt does.
    const now = (await productLedger(trx, id, converting))!;
    if (sameOrders(ledger, now)) {
      return {
        product_id: id,
        outcome: 'repaired',
        ...(loaded ? { loaded } : {}),
        before: outcome.before,
        after: outcome.after,
        customers_corrected: outcome.customersCorrected,
        holds_reindexed: outcome.holdsReindexed,
        index_entries_dropped: outcome.indexEntriesDropped,
      };
    }
  }
  return { product_id: id, outcome: 'failed', reason: `its state kept changing (${REPAIR_ATTEMPTS} attempts)` };
}

function sameOrders(a: ProductLedger, b: ProductLedger): boolean {
  const key = (l: ProductLedger) =>
    JSON.stringify([l.liveUnits, [...l.liveUnitsByCustomer].sort(), [...l.ordersInFlight].sort()]);
  return key(a) === key(b);
}

/** The report as text for a terminal: every drift, what the repair did, and a last line with the verdict. */
export function formatReport(report: ReconcileReport): string {
  const lines: string[] = [];
  const table = (drifts: Drift[]) => {
    for (const d of drifts)
      lines.push(
        `  product ${d.product_id}  ${d.field}: redis ${d.redis ?? '(none)'}, expected ${d.expected ?? '(none)'}` +
          `  (${d.source})${d.fixable ? '' : '  [not repairable]'}`,
      );
  };
  if (report.drifts.length > 0) {
    const products = new Set(report.drifts.map((d) => d.product_id)).size;
    lines.push(`drift in ${products} of ${report.products_checked} product(s):`);
    table(report.drifts);
  }
  for (const r of report.repairs ?? []) {
    if (r.outcome === 'failed') {
      lines.push(`product ${r.product_id}: not repaired: ${r.reason}`);
      continue;
    }
    const moved = (['stock', 'held', 'sold'] as const)
      .filter((f) => r.before![f] !== r.after![f])
      .map((f) => `${f} ${r.before![f]} -> ${r.after![f]}`);
    const parts = [
      ...(r.loaded ? ['loaded from Postgres'] : []),
      ...(moved.length > 0 ? moved : ['counters unchanged']),
      `${r.customers_corrected} customer unit(s) corrected`,
      `${r.holds_reindexed} hold(s) put back in an index`,
      `${r.index_entries_dropped} stale index entr(ies) dropped`,
    ];
    lines.push(`product ${r.product_id}: repaired: ${parts.join(', ')}`);
  }
  if (report.remaining && report.remaining.length > 0) {
    lines.push('still drifting after the repair:');
    table(report.remaining);
  }
  if (report.clean) {
    lines.push(
      report.repairs && report.repairs.length > 0
        ? `clean after repair: ${report.products_checked} product(s) checked`
        : `clean: ${report.products_checked} product(s) checked`,
    );
  }
  return lines.join('\n');
}
