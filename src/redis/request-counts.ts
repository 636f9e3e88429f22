import { resetConnection, type Exchange, type RedisClient } from './connection.js';
import { redisFailure, ReplyMismatchError } from './errors.js';

/** One counter a request counts against: its key (src/redis/keys.ts requestCounterKey) and its limit. */
export interface RequestCounter {
  key: string;
  limit: number;
}

/** Most requests counted in one countRequests call: keeps one call well under a millisecond of Redis. */
const MAX_COUNT_BATCH = 512;

interface Waiting {
  counters: RequestCounter[];
  resolve: (retryAfterMs: number) => void;
  reject: (err: unknown) => void;
}

/**
 * Counts requests against their rate limits (lua/countRequests.lua). The requests of one turn of the event loop
 * go to Redis as one script call, as hold requests do (./reserve-batches.ts): under load a limit costs a round
 * trip per batch, not per request. Each request gets 0 (allowed) or how long (ms) until it would be.
 */
export function createRequestCounts(redis: RedisClient, exchange: Exchange, windowMs: number) {
  let pending: Waiting[] = [];
  let flushScheduled = false;

  function flush(): void {
    flushScheduled = false;
    if (pending.length > 0) send(pending);
    pending = [];
  }

  function send(batch: Waiting[]): void {
    const keys: string[] = [];
    const index = new Map<string, number>();
    const lines = batch.map(({ counters }) =>
      counters
        .map(({ key, limit }) => {
          let i = index.get(key);
          if (i === undefined) {
            i = keys.push(key); // Lua's KEYS are 1-based
            index.set(key, i);
          }
          return `${i}:${limit}`;
        })
        .join('\t'),
    );
    exchange(() => redis.countRequests(keys.length, ...keys, windowMs, lines.join('\n'))).then(
      (reply) => {
        const answers = typeof reply === 'string' ? reply.split('\n').map(Number) : [];
        if (answers.length !== batch.length || answers.some((ms) => !Number.isInteger(ms) || ms < 0)) {
          // Another command's reply: the connection is out of step.
          resetConnection(redis);
          const err = redisFailure(new ReplyMismatchError('countRequests', reply));
          for (const waiting of batch) waiting.reject(err);
          return;
        }
        batch.forEach((waiting, i) => waiting.resolve(answers[i]!));
      },
      (err: unknown) => {
        for (const waiting of batch) waiting.reject(err);
      },
    );
  }

  /** Counts one request; resolves to 0 when it is within every limit, else the ms until it would be. */
  function count(counters: RequestCounter[]): Promise<number> {
    return new Promise((resolve, reject) => {
      pending.push({ counters, resolve, reject });
      if (pending.length >= MAX_COUNT_BATCH) {
        const full = pending;
        pending = [];
        send(full);
      } else if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    });
  }

  return { count };
}
