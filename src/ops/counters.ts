/**
 * What the ops page reads from the service's own counters: totals since this process started, so the page's
 * rates are this instance's. A figure the counters do not keep is left out, and the page says it has none.
 */
export interface CounterReading {
  /** Hold requests granted, per product id. */
  holdsCreated?: Map<number, number>;
  /** Hold requests refused (any reason), per product id. */
  holdsRefused?: Map<number, number>;
  /** Moments a product's available stock reached 0, per product id. */
  soldOut?: Map<number, number>;
  /** Answers with status 503. */
  unavailable?: number;
  /** Payment webhook deliveries, by result (paid, cancelled, duplicate, bad_signature, ...). */
  webhooks?: Record<string, number>;
  /** Age of the oldest expired hold still present (0 when none), in seconds. */
  sweeperLagSeconds?: number;
}

/** Where the counters come from (the metrics registry), behind one call. */
export interface SaleCounters {
  read(): Promise<CounterReading>;
}

/** No counters: the page shows what the stores say (stock, held, sold) and rates derived from it. */
export const noCounters: SaleCounters = { read: async () => ({}) };

/** One metric's series as a prom-client registry gives them (`registry.getSingleMetric(name).get()`). */
interface MetricSeries {
  values: { labels: Partial<Record<string, string | number>>; value: number }[];
}

/** What the page needs of a prom-client Registry: its metrics by name (names: the README's Metrics section). */
export interface MetricsRegistry {
  getSingleMetric(name: string): { get(): Promise<MetricSeries> | MetricSeries } | undefined;
}

// A product label is its id, or `other` past the label bound: `other` is no row of the page.
const PRODUCT_LABEL = /^[1-9][0-9]*$/;

/** The series of a metric that `keep` accepts; undefined when the registry lacks the metric. */
async function seriesOf(
  registry: MetricsRegistry,
  name: string,
  keep: (labels: MetricSeries['values'][number]['labels']) => boolean = () => true,
) {
  const metric = registry.getSingleMetric(name);
  return metric ? (await metric.get()).values.filter((series) => keep(series.labels)) : undefined;
}

/** Sums a metric's series per product id (the `other` series left out); undefined when the registry lacks it. */
async function perProduct(registry: MetricsRegistry, name: string): Promise<Map<number, number> | undefined> {
  const series = await seriesOf(registry, name, (labels) => PRODUCT_LABEL.test(String(labels.product)));
  if (!series) return undefined;
  const totals = new Map<number, number>();
  for (const { labels, value } of series) {
    const id = Number(labels.product);
    totals.set(id, (totals.get(id) ?? 0) + value);
  }
  return totals;
}

/**
 * The counters of the app's metrics registry. `refresh` updates the figures read at scrape time (the sweeper
 * lag) before they are read.
 */
export function countersFromRegistry(registry: MetricsRegistry, refresh?: () => Promise<void>): SaleCounters {
  return {
    async read() {
      await refresh?.();
      const [holdsCreated, holdsRefused, soldOut, requests, webhookSeries, lag] = await Promise.all([
        perProduct(registry, 'flashsale_holds_created_total'),
        perProduct(registry, 'flashsale_holds_refused_total'),
        perProduct(registry, 'flashsale_sold_out_total'),
        seriesOf(registry, 'flashsale_http_requests_total', (labels) => String(labels.status) === '503'),
        seriesOf(registry, 'flashsale_webhooks_total'),
        seriesOf(registry, 'flashsale_sweeper_lag_seconds'),
      ]);
      const webhooks: Record<string, number> = {};
      for (const { labels, value } of webhookSeries ?? []) {
        const result = String(labels.result);
        webhooks[result] = (webhooks[result] ?? 0) + value;
      }
      return {
        holdsCreated,
        holdsRefused,
        soldOut,
        unavailable: requests?.reduce((sum, series) => sum + series.value, 0),
        webhooks: webhookSeries ? webhooks : undefined,
        sweeperLagSeconds: lag?.[0]?.value,
      };
    },
  };
}
