import type { Catalogue } from '../domain/products.js';
import { AppError } from '../errors.js';
import type { Product } from '../schemas/product.js';
import type { OpsPoint, OpsProductRate, OpsSnapshot } from '../schemas/ops.js';
import type { CounterReading, SaleCounters } from './counters.js';

/** Most product rows the page shows: products with hold activity first, then the catalogue's first in id order. */
export const OPS_ROWS = 20;
/** One sample a second at most, however many pages ask: each page polls at this pace. */
export const OPS_SAMPLE_MS = 1000;
/** How far back the plots reach. */
export const OPS_HISTORY_MS = 5 * 60_000;
// Samples further apart than this (nobody was watching) leave a gap in the plots rather than a long average.
const GAP_MS = 5 * OPS_SAMPLE_MS;
// Polls arrive a little early or late: a sample this close to the last one counts as due.
const EARLY_MS = OPS_SAMPLE_MS / 10;

interface Sample {
  t: number;
  products: Product[];
  reading: CounterReading;
}

/**
 * Whether the counters count this product: it has a series of holds granted or refused. Not so without metrics,
 * or for a product past their label bound (counted under `other`): its rates are unknown, not 0.
 */
const counts = (reading: CounterReading, id: number) =>
  reading.holdsCreated?.has(id) === true || reading.holdsRefused?.has(id) === true;

/** A counter's total for a counted product (a series not made yet is 0); null for any other. */
const total = (reading: CounterReading, counter: Map<number, number> | undefined, id: number) =>
  counter && counts(reading, id) ? (counter.get(id) ?? 0) : null;

/**
 * The live view of a sale behind GET /ops/snapshot: samples taken when a page asks (at most one a second, shared
 * by every page), kept for OPS_HISTORY_MS, each with the rows' stock figures (from Redis, as GET /api/products
 * reads them) and the counters' totals; the rates are the changes between consecutive samples. Nothing runs
 * while nobody watches.
 */
export function createSaleWatch(deps: { catalogue: Catalogue; counters: SaleCounters; now?: () => number }) {
  const { catalogue, counters, now = Date.now } = deps;
  let last: Sample | undefined;
  const points: OpsPoint[] = [];
  const soldOutAt = new Map<number, number[]>();
  let sampling: Promise<void> | undefined;

  async function rowsFor(reading: CounterReading): Promise<Product[]> {
    const active = [...new Set([...(reading.holdsCreated?.keys() ?? []), ...(reading.holdsRefused?.keys() ?? [])])];
    const rows = new Map<number, Product>();
    // The counters' products (already bounded by the metrics' own label limit), most holds first.
    active.sort((a, b) => (reading.holdsCreated?.get(b) ?? 0) - (reading.holdsCreated?.get(a) ?? 0));
    for (const id of active.slice(0, OPS_ROWS)) {
      const product = await catalogue.get(id).catch((err: unknown) => {
        if (err instanceof AppError && err.code === 'PRODUCT_NOT_FOUND') return null;
        throw err;
      });
      if (product) rows.set(id, product);
    }
    if (rows.size < OPS_ROWS) {
      for (const product of await catalogue.list({ limit: OPS_ROWS, afterId: 0 })) {
        if (rows.size >= OPS_ROWS) break;
        if (!rows.has(product.id)) rows.set(product.id, product);
      }
    }
    return [...rows.values()].sort((a, b) => a.id - b.id);
  }

  /** A counter's change between two samples for one product; null when it is not counted. */
  function change(
    before: Sample | undefined,
    after: Sample,
    counter: (reading: CounterReading) => Map<number, number> | undefined,
    id: number,
  ): number | null {
    const now = total(after.reading, counter(after.reading), id);
    return now === null || !before ? null : now - (counter(before.reading)?.get(id) ?? 0);
  }

  function pointBetween(before: Sample | undefined, after: Sample): OpsPoint {
    const dt = before ? (after.t - before.t) / 1000 : 0;
    const span = before !== undefined && after.t - before.t <= GAP_MS;
    const rate = (change: number | null) => (span && change !== null ? change / dt : null);
    const earlier = new Map(before?.products.map((p) => [p.id, p]));
    const products: OpsProductRate[] = after.products.map((product) => {
      const last = earlier.get(product.id);
      const taken = last ? product.held + product.sold - (last.held + last.sold) : null;
      return {
        id: product.id,
        holds_per_s: rate(change(before, after, (reading) => reading.holdsCreated, product.id)),
        refusals_per_s: rate(change(before, after, (reading) => reading.holdsRefused, product.id)),
        units_taken_per_s: rate(taken),
      };
    });
    const unavailable =
      after.reading.unavailable !== undefined && before?.reading.unavailable !== undefined
        ? after.reading.unavailable - before.reading.unavailable
        : null;
    return {
      t: after.t,
      products,
      unavailable_per_s: rate(unavailable),
      sweeper_lag_seconds: after.reading.sweeperLagSeconds ?? null,
    };
  }

  /**
   * A sold-out moment: available went from above 0 to 0 between two samples, or the counters saw one (their
   * sold_out_total rose: it sold out, was restocked and sold out again in between). At most one a sample.
   */
  function noteSoldOut(before: Sample | undefined, after: Sample): void {
    if (!before) return;
    const earlier = new Map(before.products.map((p) => [p.id, p]));
    for (const product of after.products) {
      if (product.available_stock !== 0) continue;
      const last = earlier.get(product.id);
      const reached = last !== undefined && last.available_stock > 0;
      const counted = (change(before, after, (reading) => reading.soldOut, product.id) ?? 0) > 0;
      if (reached || counted) soldOutAt.set(product.id, [...(soldOutAt.get(product.id) ?? []), after.t]);
    }
  }

  async function takeSample(): Promise<void> {
    const reading = await counters.read();
    const sample: Sample = { t: now(), products: await rowsFor(reading), reading };
    points.push(pointBetween(last, sample));
    noteSoldOut(last, sample);
    last = sample;
    const oldest = sample.t - OPS_HISTORY_MS;
    while (points.length > 0 && points[0]!.t < oldest) points.shift();
    for (const [id, times] of soldOutAt) {
      const kept = times.filter((t) => t >= oldest);
      if (kept.length > 0) soldOutAt.set(id, kept);
      else soldOutAt.delete(id);
    }
  }

  /** The latest figures, and the plot points after `after` (ms; 0 for all of them). */
  async function snapshot(after: number): Promise<OpsSnapshot> {
    if (!last || now() - last.t >= OPS_SAMPLE_MS - EARLY_MS) {
      // Pages asking at once share one sample.
      sampling ??= takeSample().finally(() => {
        sampling = undefined;
      });
      await sampling;
    }
    const latest = last!;
    const { reading } = latest;
    return {
      t: latest.t,
      sample_ms: OPS_SAMPLE_MS,
      history_ms: OPS_HISTORY_MS,
      rates_from: reading.holdsCreated ? 'counters' : 'stock figures',
      products: latest.products.map((product) => ({
        id: product.id,
        name: product.name,
        stock: product.stock,
        held: product.held,
        sold: product.sold,
        available_stock: product.available_stock,
        holds_total: total(reading, reading.holdsCreated, product.id),
        refusals_total: total(reading, reading.holdsRefused, product.id),
        sold_out_at: soldOutAt.get(product.id) ?? [],
      })),
      points: points.filter((point) => point.t > after),
      unavailable_total: reading.unavailable ?? null,
      webhooks: reading.webhooks ?? null,
      sweeper_lag_seconds: reading.sweeperLagSeconds ?? null,
    };
  }

  return { snapshot };
}

export type SaleWatch = ReturnType<typeof createSaleWatch>;
