import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient } from '../../src/redis/connection.js';

/** A clock in milliseconds, as code that takes a `now` option reads it. */
export interface Clock {
  now(): number;
}

/** A clock that stands still until the test moves it. */
export interface ManualClock extends Clock {
  advance(ms: number): void;
}

/** A clock that starts at the real time and then moves only by `advance`. */
export function manualClock(startMs = Date.now()): ManualClock {
  let time = startMs;
  return {
    now: () => time,
    advance: (ms) => {
      time += ms;
    },
  };
}

/** Redis's clock now, in milliseconds: holds expire by it, not by ours. */
export async function redisNow(redis: RedisClient): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

/** Waits until Redis's clock has passed an ISO time (hold expiry is decided by Redis's clock, not ours). */
export async function waitPastOnRedisClock(redis: RedisClient, iso: string): Promise<void> {
  for (;;) {
    const remaining = Date.parse(iso) - (await redisNow(redis));
    if (remaining < 0) return;
    await sleep(remaining + 5);
  }
}
