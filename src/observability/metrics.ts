import cluster from 'node:cluster';
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { Config } from '../config.js';
import { groupExposition, shareRegistry } from './group-metrics.js';

/**
 * The service's metrics, in Prometheus text at GET /metrics (src/routes/metrics.ts). Each app has a registry of
 * its own (several apps in one process never share a series), and every name is listed in the README's Metrics
 * section, which docs/grafana/flashsale.json and the /ops page read.
 *
 * The rules report events through `MetricsRecorder`, one call where each event happens; with METRICS=off they
 * get `noMetrics`, whose calls do nothing. Figures that are state rather than events (stock, active holds,
 * sweeper lag, drift) are read when Prometheus scrapes, from a bounded set of keys (`LiveSources`).
 *
 * In a worker of a process group (WEB_CONCURRENCY > 1) a scrape is the whole group's (src/observability/group-metrics.ts):
 * the counts add up, and the state gauges, which every worker reads from the same stores, are taken at their max.
 */

/** What the rules tell the metrics, one method an event. */
export interface MetricsRecorder {
  /** A hold was granted (not a replayed answer). */
  holdCreated(productId: number, qty: number): void;
  /**
   * A hold request was refused with `code` (not a replayed answer); `availableStock` when the refusal says how
   * many units were left (INSUFFICIENT_STOCK), so that the moment a product sold out is seen.
   */
  holdRefused(productId: number, code: string, availableStock?: number): void;
  /** The client released a hold. */
  holdReleased(productId: number): void;
  /** The sweeper released `count` expired holds of a product. */
  holdsExpired(productId: number, count: number): void;
  /** An order was made from a hold, in this status, selling `qty` units. */
  orderCreated(productId: number, status: string, qty: number): void;
  /** `count` orders moved to `status` (paid, cancelled, refund_required). */
  orderStatusChanged(status: string, count?: number): void;
  /** A payment webhook was answered: paid, cancelled, refund_required, amount_mismatch, duplicate, ... */
  webhook(result: string): void;
  /** A product's copy in Redis was found lost (missing, or under another generation). */
  redisDataLoss(): void;
  /** A lost copy was rebuilt from Postgres (`rebuilt`), or its rebuild failed (`failed`). */
  redisRebuild(result: 'rebuilt' | 'failed'): void;
  /** Recovery finished or undid interrupted work: conversion_finished, claim_abandoned, ... */
  recoveryAction(action: string, count?: number): void;
}

const noop = () => {};
/** The recorder of METRICS=off, and of code run outside the service (the CLI, tests of one module). */
export const noMetrics: MetricsRecorder = {
  holdCreated: noop,
  holdRefused: noop,
  holdReleased: noop,
  holdsExpired: noop,
  orderCreated: noop,
  orderStatusChanged: noop,
  webhook: noop,
  redisDataLoss: noop,
  redisRebuild: noop,
  recoveryAction: noop,
};

/** A product's live figures as Redis has them, read at scrape time. */
export interface ProductFigures {
  stock: number;
  held: number;
  sold: number;
  activeHolds: number;
  /** Expiry (ms, Redis clock) of its earliest active hold; null when it has none. */
  oldestExpiry: number | null;
}

/** Where the scrape-time gauges read from (src/redis/commands.ts), each read bounded whatever the catalogue. */
export interface LiveSources {
  /** The figures of these products, in order; null for a product Redis does not have. */
  productFigures(productIds: number[]): Promise<(ProductFigures | null)[]>;
  /** Expiry of the earliest active hold among the first products due on the sweep schedule (ms); null: none. */
  oldestDueExpiry(): Promise<number | null>;
  /** Redis's clock (ms). */
  now(): number;
}

export interface MetricsOptions {
  /** Products always labelled by id (METRICS_PRODUCTS). */
  watchList: readonly number[];
  /** Products besides the watch list labelled by id, the first seen selling (METRICS_PRODUCT_LIMIT). */
  productLimit: number;
}

export function metricsOptionsFrom(config: Config): MetricsOptions {
  return {
    watchList: config.METRICS_PRODUCTS.split(',')
      .map((id) => id.trim())
      .filter(Boolean)
      .map(Number),
    productLimit: config.METRICS_PRODUCT_LIMIT,
  };
}

/** The label value of every product past the bound. */
export const OTHER_PRODUCTS = 'other';
/** The route label of a request no route matched (a 404, a bad method): never the raw URL. */
export const UNMATCHED_ROUTE = 'unmatched';

// Seconds. HTTP: the hot path answers in about a millisecond; a 503 after a command timeout takes 0.5 s or more.
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
// A script run is ~0.05-1 ms in Redis; the rest is the round trip and the wait behind other commands.
const SCRIPT_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

// Refusals that name a product Redis has: they may give it a label (see `series`).
const DECIDED_BY_REDIS = new Set(['INSUFFICIENT_STOCK', 'CUSTOMER_LIMIT_EXCEEDED']);

/**
 * The hot path's counts are plain numbers, written into the registry only when it is scraped: prom-client's own
 * inc() and observe() hash their label set at every call, even through a `.labels()` handle, which cost more
 * than a sold-out refusal's whole answer is allowed to (the cost is measured in bench/, --metrics-cost).
 */
class Tally {
  value = 0;
  constructor(readonly labels: Record<string, string>) {}
  inc(by = 1): void {
    this.value += by;
  }
}

/** One label set's histogram: counts per bucket (the last one past every bound), sum and count. */
class Distribution {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Record<string, string>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }
  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

/** The counts of one product label. */
interface ProductSeries {
  created: Tally;
  released: Tally;
  expired: Tally;
  unitsHeld: Tally;
  unitsSold: Tally;
  soldOut: Tally;
  refused: Map<string, Tally>;
  /** The refusal counted last, and its code: a sold-out tail repeats one code, found without a lookup. */
  lastRefused: Tally | undefined;
  lastRefusalCode: string;
  label: string;
}

/** Counts the answers of one route and method, one series per status. */
export type RequestRecorder = (status: number, seconds: number) => void;

export type Metrics = ReturnType<typeof createMetrics>;

/** A registry of the service's metrics and the recorder that feeds it. */
export function createMetrics(options: MetricsOptions) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const product = ['product'] as const;

  const holdsCreated = tallied('flashsale_holds_created_total', 'holds granted', product);
  const holdsRefused = tallied('flashsale_holds_refused_total', 'hold requests refused, by error code', [
    'product',
    'reason',
  ]);
  const holdsReleased = tallied('flashsale_holds_released_total', 'holds released by the client', product);
  const holdsExpired = tallied('flashsale_holds_expired_total', 'expired holds released by the sweeper', product);
  const unitsHeld = tallied('flashsale_units_held_total', 'units put on hold by granted holds', product);
  const unitsSold = tallied('flashsale_units_sold_total', 'units of orders made from holds', product);
  const soldOut = tallied(
    'flashsale_sold_out_total',
    'moments a product sold out: its first refusal at 0 units left after a grant',
    product,
  );
  const orders = counter('flashsale_orders_total', 'orders made from holds, by their first status', ['status']);
  const statusChanges = counter('flashsale_order_status_changes_total', 'orders moved to a status', ['status']);
  const webhooks = counter('flashsale_webhooks_total', 'payment webhooks answered, by result', ['result']);
  const dataLoss = counter(
    'flashsale_redis_data_loss_detected_total',
    "product copies found lost in Redis (missing, or under another generation than Postgres's)",
    [],
  );
  const rebuilds = counter('flashsale_redis_rebuilds_total', 'rebuilds of lost product copies from Postgres', [
    'result',
  ]);
  const recovery = counter('flashsale_recovery_actions_total', 'interrupted work finished or undone by recovery', [
    'action',
  ]);
  const httpRequests = tallied('flashsale_http_requests_total', 'HTTP requests answered', [
    'route',
    'method',
    'status',
  ]);
  const httpDuration = distributed(
    'flashsale_http_request_duration_seconds',
    'time from a request to its answer, by route template',
    HTTP_BUCKETS,
  );
  const scriptDuration = distributed(
    'flashsale_redis_script_duration_seconds',
    'time from sending a Redis script to its reply, by script',
    SCRIPT_BUCKETS,
  );

  function counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames: [...labelNames], registers: [registry] });
  }

  /** A counter fed by Tallies, one per label set, copied into it at each scrape. */
  function tallied(name: string, help: string, labelNames: readonly string[]) {
    const tallies: Tally[] = [];
    new Counter({
      name,
      help,
      labelNames: [...labelNames],
      registers: [registry],
      collect() {
        this.reset();
        for (const tally of tallies) this.inc(tally.labels, tally.value);
      },
    });
    return (labels: Record<string, string>): Tally => {
      const tally = new Tally(labels);
      tallies.push(tally);
      return tally;
    };
  }

  /**
   * A histogram fed by Distributions, one per label set, written out at each scrape as prom-client writes its own
   * (`_bucket` with `le`, cumulative, then `_sum` and `_count`).
   */
  function distributed(name: string, help: string, bounds: readonly number[]) {
    const series: Distribution[] = [];
    const metric = {
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      get: async () => ({
        name,
        help,
        type: 'histogram',
        aggregator: 'sum',
        values: series.flatMap((d) => {
          let cumulative = 0;
          const buckets = [...bounds, '+Inf'].map((le, i) => {
            cumulative += d.counts[i]!;
            return { metricName: `${name}_bucket`, labels: { ...d.labels, le }, value: cumulative };
          });
          return [
            ...buckets,
            { metricName: `${name}_sum`, labels: d.labels, value: d.sum },
            { metricName: `${name}_count`, labels: d.labels, value: d.count },
          ];
        }),
      }),
    };
    registry.registerMetric(metric as unknown as Metric);
    return (labels: Record<string, string>): Distribution => {
      const distribution = new Distribution(labels, bounds);
      series.push(distribution);
      return distribution;
    };
  }

  // The product label: the watch list, then the first `productLimit` other products seen, then `other`.
  const watched = new Set(options.watchList);
  const seriesById = new Map<number, ProductSeries>();
  let labelled = 0;
  const seriesOf = (label: string): ProductSeries => {
    const labels = { product: label };
    return {
      label,
      created: holdsCreated(labels),
      released: holdsReleased(labels),
      expired: holdsExpired(labels),
      unitsHeld: unitsHeld(labels),
      unitsSold: unitsSold(labels),
      soldOut: soldOut(labels),
      refused: new Map(),
      lastRefused: undefined,
      lastRefusalCode: '',
    };
  };
  const other = seriesOf(OTHER_PRODUCTS);
  for (const id of watched) seriesById.set(id, seriesOf(String(id)));
  // A sale's events come in long runs for one product: the series found last is kept at hand.
  let lastProductId = NaN;
  let lastSeries = other;
  /**
   * The series of a product; `assign`: give it a label of its own if there is one left. Only events that prove
   * the product exists assign one (a grant, a refusal Redis decided, an expiry), so requests naming ids that do
   * not exist cannot use the labels up.
   */
  function series(productId: number, assign = true): ProductSeries {
    if (productId === lastProductId) return lastSeries;
    let found = seriesById.get(productId);
    if (!found) {
      // Not kept at hand: a later event that may assign a label must look again.
      if (!assign || labelled >= options.productLimit) return other;
      labelled++;
      found = seriesOf(String(productId));
      seriesById.set(productId, found);
    }
    lastProductId = productId;
    lastSeries = found;
    return found;
  }
  // Products sold out as this instance last saw them: a refusal at 0 left counts a moment only once per sell-out.
  const soldOutNow = new Set<number>();

  const recorder: MetricsRecorder = {
    holdCreated(productId, qty) {
      const s = series(productId);
      s.created.inc();
      s.unitsHeld.inc(qty);
      if (soldOutNow.size > 0) soldOutNow.delete(productId);
    },
    holdRefused(productId, code, availableStock) {
      const s = series(productId, DECIDED_BY_REDIS.has(code));
      let refused = s.lastRefusalCode === code ? s.lastRefused : s.refused.get(code);
      if (!refused) {
        refused = holdsRefused({ product: s.label, reason: code });
        s.refused.set(code, refused);
      }
      s.lastRefused = refused;
      s.lastRefusalCode = code;
      refused.inc();
      if (availableStock === 0 && !soldOutNow.has(productId)) {
        soldOutNow.add(productId);
        s.soldOut.inc();
      }
    },
    holdReleased(productId) {
      series(productId).released.inc();
    },
    holdsExpired(productId, count) {
      series(productId).expired.inc(count);
    },
    orderCreated(productId, status, qty) {
      orders.inc({ status });
      series(productId).unitsSold.inc(qty);
    },
    orderStatusChanged(status, count = 1) {
      statusChanges.inc({ status }, count);
    },
    webhook(result) {
      webhooks.inc({ result });
    },
    redisDataLoss() {
      dataLoss.inc();
    },
    redisRebuild(result) {
      rebuilds.inc({ result });
    },
    recoveryAction(action, count = 1) {
      recovery.inc({ action }, count);
    },
  };

  // Requests by route, method and status: a tally and a distribution per combination (a few dozen in all).
  const requestRecorders = new Map<string, RequestRecorder>();
  /**
   * The recorder of the answers to `method` requests of `route` (the route's template; UNMATCHED_ROUTE when none
   * matched), made once per route and method. The status found last is kept at hand: a route answers mostly one.
   */
  function requestRecorder(route: string, method: string): RequestRecorder {
    const key = `${method} ${route}`;
    const known = requestRecorders.get(key);
    if (known) return known;
    const byStatus = new Map<number, { count: Tally; duration: Distribution }>();
    let lastStatus = 0;
    let last: { count: Tally; duration: Distribution } | undefined;
    const record: RequestRecorder = (status, seconds) => {
      if (status !== lastStatus || !last) {
        last = byStatus.get(status);
        if (!last) {
          const labels = { route, method, status: String(status) };
          last = { count: httpRequests(labels), duration: httpDuration(labels) };
          byStatus.set(status, last);
        }
        lastStatus = status;
      }
      last.count.inc();
      last.duration.observe(seconds);
    };
    requestRecorders.set(key, record);
    return record;
  }

  const scriptSeries = new Map<string, Distribution>();
  /** Times one Redis script call, from sending to its reply (src/redis/scripts.ts). */
  function observeScript(script: string, seconds: number): void {
    let handle = scriptSeries.get(script);
    if (!handle) scriptSeries.set(script, (handle = scriptDuration({ script })));
    handle.observe(seconds);
  }

  // The state gauges: read from Redis at each scrape, for the labelled products only (at most the watch list and
  // productLimit more), so a scrape costs one pipelined read whatever the catalogue's size.
  // Max over a process group's workers: each reads the same Redis, so a sum would count a figure once a worker.
  const productGauge = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ['product'], registers: [registry], aggregator: 'max' });
  const stockGauge = productGauge('flashsale_product_stock', "a labelled product's total stock (units)");
  const heldGauge = productGauge('flashsale_product_held_units', 'units in active holds');
  const soldGauge = productGauge('flashsale_product_sold_units', 'units sold');
  const availableGauge = productGauge('flashsale_product_available', 'units on sale: stock - held - sold');
  const activeHoldsGauge = productGauge('flashsale_active_holds', 'active holds: held, not expired or being converted');
  const sweeperLag = new Gauge({
    name: 'flashsale_sweeper_lag_seconds',
    help: 'age of the oldest expired hold still present (0 if none), among the labelled products and the first due on the sweep schedule',
    registers: [registry],
    aggregator: 'max',
  });
  const drift = new Gauge({
    name: 'flashsale_invariant_drift',
    help: 'products whose Redis figures disagreed with Postgres in two sampled checks in a row (0 when healthy)',
    registers: [registry],
    aggregator: 'max',
  });
  const driftUnchecked = new Gauge({
    name: 'flashsale_invariant_drift_unchecked_products',
    help: 'products the last sampled drift check left out for their number of hold records (see flashsale reconcile)',
    registers: [registry],
    aggregator: 'max',
  });
  let driftingProducts = 0;
  drift.set(0);
  driftUnchecked.set(0);
  sweeperLag.set(0);

  let sources: LiveSources | undefined;
  // One read serves all five product gauges of a scrape (prom-client collects each gauge in turn).
  let reading: Promise<void> | undefined;
  async function readLive(): Promise<void> {
    if (!sources) return;
    const ids = [...seriesById.keys()];
    const [figures, dueExpiry] = await Promise.all([sources.productFigures(ids), sources.oldestDueExpiry()]);
    const now = sources.now();
    for (const gauge of [stockGauge, heldGauge, soldGauge, availableGauge, activeHoldsGauge]) gauge.reset();
    let oldest = dueExpiry ?? Infinity;
    ids.forEach((id, i) => {
      const f = figures[i];
      if (!f) return;
      const labels = { product: String(id) };
      stockGauge.set(labels, f.stock);
      heldGauge.set(labels, f.held);
      soldGauge.set(labels, f.sold);
      availableGauge.set(labels, f.stock - f.held - f.sold);
      activeHoldsGauge.set(labels, f.activeHolds);
      if (f.oldestExpiry !== null) oldest = Math.min(oldest, f.oldestExpiry);
    });
    sweeperLag.set(oldest < now ? (now - oldest) / 1000 : 0);
  }

  /** Reads the live figures (stock gauges, sweeper lag) now; a failed read leaves them as last read. */
  async function refreshLive(): Promise<void> {
    reading ??= readLive().finally(() => (reading = undefined));
    await reading.catch(() => {});
  }

  if (cluster.isWorker) shareRegistry(registry, refreshLive);

  return {
    registry,
    recorder,
    requestRecorder,
    observeScript,
    /** Gives the scrape-time gauges their stores, once they are connected. */
    readFrom(live: LiveSources): void {
      sources = live;
    },
    /** Sets the drift gauge (src/observability/drift-check.ts). */
    setDrift(products: number, unchecked = 0): void {
      driftingProducts = products;
      drift.set(products);
      driftUnchecked.set(unchecked);
    },
    drifting: () => driftingProducts,
    refreshLive,
    /** The text exposition, with the live figures read first; in a worker, the whole process group's. */
    async exposition(): Promise<string> {
      if (cluster.isWorker) return groupExposition();
      await refreshLive();
      return registry.metrics();
    },
    contentType: registry.contentType,
  };
}
