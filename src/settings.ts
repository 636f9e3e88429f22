import type { Config } from './config.js';

/**
 * Due holds one script call expires in place before it judges the stock: a hold request that finds the stock
 * short (lua/reserveStock.lua), a stock change before it compares the new stock with what is committed
 * (lua/setStock-5.lua). Bounds the work of one call.
 */
export const INLINE_EXPIRY_LIMIT = 100;

/**
 * Most hold requests of one product sent in one reserveStock call: bounds the time Redis spends on one call
 * (~1 ms). lua/reserveStock.lua refuses a larger batch (its MAX_BATCH): the two must match, and
 * test/settings.test.ts fails if the script's bound is below this one.
 */
export const MAX_HOLD_BATCH = 256;

/** Orders one settlement step cancels, or returns the units of. */
export const SETTLE_BATCH = 100;

/** Products one sweeper claim hands out. */
export const SWEEP_CLAIM_SIZE = 50;

/**
 * How long products claimed by a sweeper stay leased to its instance: other instances skip them meanwhile, and
 * take them over if this one dies before rescheduling them. Far above a pass's time budget.
 */
export const SWEEP_LEASE_MS = 10_000;

/** A sweeper pass keeps claiming while work is due, but yields the event loop after this long. */
export const SWEEP_PASS_BUDGET_MS = 200;

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
  /** Pause between order settlement passes; 0: no settlement loop (RECOVERY_INTERVAL_MS). */
  readonly recoveryIntervalMs: number;

  /** Pause between sweeper passes; 0: no sweeper (SWEEP_INTERVAL_MS). */
  readonly sweepIntervalMs: number;
  /** Most holds one sweep step releases for one product (SWEEP_BATCH_SIZE). */
  readonly sweepBatchSize: number;
  /** See SWEEP_CLAIM_SIZE. */
  readonly sweepClaimSize: number;
  /** See SWEEP_LEASE_MS. */
  readonly sweepLeaseMs: number;
  /** See SWEEP_PASS_BUDGET_MS. */
  readonly sweepPassBudgetMs: number;
  /** See PRODUCT_LOAD_BATCH. */
  readonly productLoadBatch: number;

  /** Payment webhook signing secrets (WEBHOOK_SECRET split at commas); empty: webhooks are accepted unsigned. */
  readonly webhookSecrets: readonly string[];
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
    redisCommandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
    soldOutCacheMs: config.SOLD_OUT_CACHE_MS,
    orderPaymentTtlMs,
    conversionLeaseMs: config.CONVERSION_LEASE_MS,
    settleBatch: SETTLE_BATCH,
    recoveryIntervalMs: config.RECOVERY_INTERVAL_MS,
    redisLossCheckMs: config.REDIS_LOSS_CHECK_MS,
    sweepIntervalMs: config.SWEEP_INTERVAL_MS,
    sweepBatchSize: config.SWEEP_BATCH_SIZE,
    sweepClaimSize: SWEEP_CLAIM_SIZE,
    sweepLeaseMs: SWEEP_LEASE_MS,
    sweepPassBudgetMs: SWEEP_PASS_BUDGET_MS,
    productLoadBatch: PRODUCT_LOAD_BATCH,
    webhookSecrets: Object.freeze(
      config.WEBHOOK_SECRET.split(',')
        .map((secret) => secret.trim())
        .filter(Boolean),
    ),
  });
}
