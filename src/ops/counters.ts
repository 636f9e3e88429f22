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
