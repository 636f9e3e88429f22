import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { Config } from '../config.js';
import { productKeys, productScriptKeys, sweepScheduleKey } from '../redis/keys.js';

// Products one claim hands out, and how long they stay leased to this instance.
const CLAIM_SIZE = 50;
const LEASE_MS = 10_000;
// A pass keeps claiming while work is due, but yields the event loop after this long.
const PASS_BUDGET_MS = 200;

export interface SweepResult {
  products: number;
  expired: number;
  purged: number;
  /** The pass stopped at its time budget with products still due. */
  more: boolean;
}

/**
 * One pass of the sweeper: releases the expired holds of every product whose sweep is due, in batches, and
 * purges records of holds ended longer ago than the retention period. Any number of instances may run passes
 * at once: products are leased to one of them, and each hold is released in the same script step that takes it
 * off the expiry index, so it is released exactly once.
 */
export async function releaseExpiredHolds(redis: Redis, config: Config, log: Logger): Promise<SweepResult> {
  const prefix = config.REDIS_KEY_PREFIX;
  const schedule = sweepScheduleKey(prefix);
  const result: SweepResult = { products: 0, expired: 0, purged: 0, more: false };
  const started = Date.now();
  for (;;) {
    if (Date.now() - started >= PASS_BUDGET_MS) {
      result.more = true;
      break;
    }
    const productIds = await redis.claimDueProducts(schedule, CLAIM_SIZE, LEASE_MS);
    if (productIds.length === 0) break;
    const steps = await Promise.all(
      productIds.map(async (id) => {
        const productId = Number(id);
        const [expired, purged, nextSweepAt] = await redis.releaseExpiredHolds(
          ...productScriptKeys(productKeys(prefix, productId)),
          config.SWEEP_BATCH_SIZE,
          config.HOLD_RETAIN_SECONDS * 1000,
          config.HOLD_TTL_SECONDS * 1000,
        );
        await redis.zadd(schedule, nextSweepAt, id);
        if (expired > 0) log.info({ product_id: productId, count: expired }, 'holds expired');
        return { expired, purged };
      }),
    );
    result.products += productIds.length;
    for (const step of steps) {
      result.expired += step.expired;
      result.purged += step.purged;
    }
  }
  return result;
}

export interface Sweeper {
  stop(): Promise<void>;
}

/** Runs sweeper passes every `SWEEP_INTERVAL_MS` (at once again while a pass found work) until stopped. */
export function startSweeper(redis: Redis, config: Config, log: Logger): Sweeper {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let failing = false;

  const tick = () => {
    running = releaseExpiredHolds(redis, config, log).then(
      (result) => {
        if (failing) log.info('sweeper recovered');
        failing = false;
        schedule(result.more ? 0 : config.SWEEP_INTERVAL_MS);
      },
      (err: unknown) => {
        // Redis away: say so once, keep trying; holds past expiry are unusable meanwhile anyway.
        if (!failing) log.error({ err }, 'sweeper pass failed');
        failing = true;
        schedule(config.SWEEP_INTERVAL_MS);
      },
    );
  };
  const schedule = (delay: number) => {
    if (!stopped) timer = setTimeout(tick, delay);
  };
  schedule(0);

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
