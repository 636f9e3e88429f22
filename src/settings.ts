import type { Config } from './config.js';

/**
 * Due holds one script call expires in place before it judges the stock: a hold request that finds the stock
 * short (lua/reserveStock.lua), a stock change before it compares the new stock with what is committed
 * (lua/setStock-5.lua). Bounds the work of one call.
 */
/** Seconds a client is asked to wait before retrying after any 503: outages here are reconnects and failovers. */
export const RETRY_AFTER_SECONDS = '1';

export const INLINE_EXPIRY_LIMIT = 100;

/**
 * Most hold requests of one product sent in one reserveStock call: bounds the time Redis spends on one call
 * (~1 ms). lua/reserveStock.lua refuses a larger batch (its MAX_BATCH): the two must match, and
 * test/settings.test.ts fails if the script's bound is below this one.
 */
export const MAX_HOLD_BATCH = 256;

/**
 * Most conversions one order statement writes (src/db/order-batches.ts): bounds the statement's time and the
 * rows it locks; at 100 connections a turn of the event loop rarely brings more.
 */
export const MAX_ORDER_BATCH = 100;

/** Most payment events one webhook statement applies (src/db/payment-batches.ts), for the same reasons. */
export const MAX_PAYMENT_BATCH = 100;

/** Orders one settlement step cancels, or returns the units of. */
export const SETTLE_BATCH = 100;

/** Most products one sweeper claim hands out, however long the lease (SWEEP_LEASE_MS). */
export const SWEEP_CLAIM_MAX = 50;

/**
 * What one sweep step costs per hold it releases (ms), for sizing claims: a step of 1000 holds of
 * lua/releaseExpiredHolds-6.lua took 15-25 ms, round trip included, on a 2-core machine at a load average of 7
 * (CI and the bench are like it); this is the top of that.
 */
export const SWEEP_STEP_MS_PER_HOLD = 0.025;

/** A claim's work may take this share of the lease at most (see sweepClaimSize); the rest is margin. */
export const SWEEP_CLAIM_SHARE_OF_LEASE = 1 / 4;

/** A sweeper pass keeps claiming while work is due, but yields the event loop after this long. */
export const SWEEP_PASS_BUDGET_MS = 200;

/**
 * How many products one sweeper claim takes: as many as one sweep step each, at a full batch, fit in a quarter
 * of the lease (at least one, at most SWEEP_CLAIM_MAX). The steps of one claim are pipelined, so Redis runs them
 * one after another and the last product of a claim is rescheduled after all of them: sized this way, an instance
 * never holds more products than it sweeps well within their lease, however many are due, so a live instance's
 * lease does not run out under another sweeper, and a dead instance leaves at most one claim behind, which other
 * instances take over once its lease has run out (at most SWEEP_LEASE_MS, plus a sweep interval, after the death). Each product is rescheduled as soon as its own step is done (its lease ends
 * there); a pass then claims again, in small claims, until its time budget is spent. The pass budget does not
 * bound a lease: a pass is many claims.
 */
export function sweepClaimSize(leaseMs: number, sweepBatchSize: number): number {
  const stepMs = sweepBatchSize * SWEEP_STEP_MS_PER_HOLD;
  return Math.max(1, Math.min(SWEEP_CLAIM_MAX, Math.floor((leaseMs * SWEEP_CLAIM_SHARE_OF_LEASE) / stepMs)));
}

/** Products read from Postgres per query when the start loads into Redis those it lacks. */
export const PRODUCT_LOAD_BATCH = 500;

/**
 * The figures the rules work with, derived once from the configuration: durations in milliseconds (Redis's
 * clock and the scripts count in ms), and the fixed limits above, so no module multiplies `*_SECONDS` by 1000 or
 * writes a limit of its own.
 */
export interface Settings {
  /** Prefix of every Redis key. */
  readonly redisKeyPrefix: string;

  /** How long a hold reserves its units (HOLD_TTL_SECONDS). */
  readonly holdTtlMs: number;
  /** How long the record of an ended hold (released, expired) stays readable (HOLD_RETAIN_SECONDS). */
  readonly holdRetainMs: number;
  /**
   * How long the record of a converted hold is kept: at least until its order can no longer be cancelled (twice
   * the payment period, for margin), since returning a cancelled order's units reads the record.
   */
  readonly convertedHoldRetainMs: number;
  /** How long an Idempotency-Key of a hold request is remembered (IDEMPOTENCY_TTL_SECONDS). */
  readonly idempotencyTtlMs: number;
  /** Most units in one hold (MAX_QTY_PER_HOLD). */
  readonly maxQtyPerHold: number;
  /** See INLINE_EXPIRY_LIMIT. */
  readonly inlineExpiryLimit: number;
  /** See MAX_HOLD_BATCH. */
  readonly maxHoldBatch: number;
  /** See MAX_ORDER_BATCH. */
  readonly maxOrderBatch: number;
  /** See MAX_PAYMENT_BATCH. */
  readonly maxPaymentBatch: number;
  /**
   * How long a Redis command may take before its caller is answered 503 (REDIS_COMMAND_TIMEOUT_MS); a hold batch
   * carries now + this as its deadline, past which the script holds nothing.
   */
  readonly redisCommandTimeoutMs: number;
  /** How long an instance refuses holds on a product it saw sold out without asking Redis; 0: never (SOLD_OUT_CACHE_MS). */
  readonly soldOutCacheMs: number;

  /** How long after its creation an unpaid order is cancelled (ORDER_PAYMENT_TTL_SECONDS). */
  readonly orderPaymentTtlMs: number;
  /** How long a hold conversion may take before recovery decides it from Postgres (CONVERSION_LEASE_MS). */
  readonly conversionLeaseMs: number;
  /** See SETTLE_BATCH. */
  readonly settleBatch: number;
  /** Pause between passes of the Redis loss watcher; 0: none (REDIS_LOSS_CHECK_MS). */
  readonly redisLossCheckMs: number;
  /** Pause between passes of the stock rebalancer of bucketed products; 0: none (STOCK_REBALANCE_MS). */
  readonly stockRebalanceMs: number;
  /** Pause between order settlement passes; 0: no settlement loop (RECOVERY_INTERVAL_MS). */
  readonly recoveryIntervalMs: number;

  /** Pause between sweeper passes; 0: no sweeper (SWEEP_INTERVAL_MS). */
  readonly sweepIntervalMs: number;
  /** Most holds one sweep step releases for one product (SWEEP_BATCH_SIZE). */
  readonly sweepBatchSize: number;
  /**
   * How long products a sweeper claimed stay leased to its instance (SWEEP_LEASE_MS): other instances skip them
   * meanwhile, and take them over once it has passed, if this one died before rescheduling them.
   */
  readonly sweepLeaseMs: number;
  /** Most products one sweeper claim takes: see sweepClaimSize. */
  readonly sweepClaimSize: number;
  /** See SWEEP_PASS_BUDGET_MS. */
  readonly sweepPassBudgetMs: number;
  /** See PRODUCT_LOAD_BATCH. */
  readonly productLoadBatch: number;

  /** Payment webhook signing secrets (WEBHOOK_SECRET split at commas); empty: see webhookAllowUnsigned. */
  readonly webhookSecrets: readonly string[];

  /** Pause between memory usage lines in the log; 0: none (MEMORY_LOG_INTERVAL_MS). */
  readonly memoryLogIntervalMs: number;
  /** With no secret, unsigned webhooks are accepted (WEBHOOK_ALLOW_UNSIGNED); otherwise they are refused. */
  readonly webhookAllowUnsigned: boolean;
  /** How long a delivery for an order that does not exist is kept (WEBHOOK_RETAIN_SECONDS). */
  readonly webhookRetainMs: number;
  /** The currency of every price and order total (CURRENCY). */
  readonly currency: string;
}

/** The settings of a configuration; call once, where the configuration is loaded, and hand the result around. */
export function settingsFrom(config: Config): Settings {
  const holdRetainMs = config.HOLD_RETAIN_SECONDS * 1000;
  const orderPaymentTtlMs = config.ORDER_PAYMENT_TTL_SECONDS * 1000;
  return Object.freeze({
    redisKeyPrefix: config.REDIS_KEY_PREFIX,
    holdTtlMs: config.HOLD_TTL_SECONDS * 1000,
    holdRetainMs,
    convertedHoldRetainMs: Math.max(holdRetainMs, 2 * orderPaymentTtlMs),
    idempotencyTtlMs: config.IDEMPOTENCY_TTL_SECONDS * 1000,
    maxQtyPerHold: config.MAX_QTY_PER_HOLD,
    inlineExpiryLimit: INLINE_EXPIRY_LIMIT,
    maxHoldBatch: MAX_HOLD_BATCH,
    maxOrderBatch: MAX_ORDER_BATCH,
    maxPaymentBatch: MAX_PAYMENT_BATCH,
    redisCommandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
    soldOutCacheMs: config.SOLD_OUT_CACHE_MS,
    orderPaymentTtlMs,
    conversionLeaseMs: config.CONVERSION_LEASE_MS,
    settleBatch: SETTLE_BATCH,
    recoveryIntervalMs: config.RECOVERY_INTERVAL_MS,
    redisLossCheckMs: config.REDIS_LOSS_CHECK_MS,
    stockRebalanceMs: config.STOCK_REBALANCE_MS,
    memoryLogIntervalMs: config.MEMORY_LOG_INTERVAL_MS,
    sweepIntervalMs: config.SWEEP_INTERVAL_MS,
    sweepBatchSize: config.SWEEP_BATCH_SIZE,
    sweepLeaseMs: config.SWEEP_LEASE_MS,
    sweepClaimSize: sweepClaimSize(config.SWEEP_LEASE_MS, config.SWEEP_BATCH_SIZE),
    sweepPassBudgetMs: SWEEP_PASS_BUDGET_MS,
    productLoadBatch: PRODUCT_LOAD_BATCH,
    webhookSecrets: Object.freeze(
      config.WEBHOOK_SECRET.split(',')
        .map((secret) => secret.trim())
        .filter(Boolean),
    ),
    webhookAllowUnsigned: config.WEBHOOK_ALLOW_UNSIGNED,
    webhookRetainMs: config.WEBHOOK_RETAIN_SECONDS * 1000,
    currency: config.CURRENCY,
  });
}
