import { pipelinePerNode, resetConnection, slotOf, type Exchange, type RedisClient } from './connection.js';
import { redisFailure, ReplyMismatchError } from './errors.js';

/** One counter a request counts against: its key (src/redis/keys.ts requestCounterKey) and its limit. */
export interface RequestCounter {
  key: string;
  limit: number;
}

/** Most requests counted in one countRequests call: keeps one call well under a millisecond of Redis. */
const MAX_COUNT_BATCH = 512;

/** The counters of one slot in a batch: their keys, and each request's line of `i:limit` pairs (by request). */
interface SlotCall {
  keys: string[];
  index: Map<string, number>;
  requests: Map<number, string>;
}

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

  /**
   * One countRequests call per slot the batch's counters live in (on one server: one call for all), pipelined per
   * node. Every counter of a request is counted whatever the others say, so each slot's counters are decided
   * apart exactly as one call would; a request waits as long as the first of its slots that refuses it says.
   */
  function send(batch: Waiting[]): void {
    const slots = new Map<number, SlotCall>();
    batch.forEach(({ counters }, r) => {
      for (const counter of counters) {
        const slot = slotOf(redis, counter.key);
        let call = slots.get(slot);
        if (!call) slots.set(slot, (call = { keys: [], index: new Map(), requests: new Map() }));
        let i = call.index.get(counter.key);
        if (i === undefined) {
          i = call.keys.push(counter.key); // Lua's KEYS are 1-based
          call.index.set(counter.key, i);
        }
        const line = call.requests.get(r);
        call.requests.set(r, `${line === undefined ? '' : `${line}\t`}${i}:${counter.limit}`);
      }
    });
    const calls = [...slots.values()];
    const args = (call: SlotCall): [number, ...(string | number)[]] => [
      call.keys.length,
      ...call.keys,
      windowMs,
      [...call.requests.values()].join('\n'),
    ];
    const replies: Promise<unknown[]> =
      calls.length === 1
        ? exchange(() => redis.countRequests(...args(calls[0]!)), undefined, undefined, calls[0]!.keys[0]).then(
            (reply) => [reply],
          )
        : pipelinePerNode(
            redis,
            exchange,
            calls,
            (call) => call.keys[0]!,
            (pipeline, call) => pipeline.countRequests(...args(call)),
          ).then((results) =>
            results.map((result) => {
              const [err, reply] = result[0] ?? [new ReplyMismatchError('countRequests', 'no reply')];
              if (err) throw redisFailure(err);
              return reply;
            }),
          );
    replies.then(
      (perCall) => {
        const answered = new Map<SlotCall, Map<number, number>>();
        for (let c = 0; c < calls.length; c++) {
          const call = calls[c]!;
          const reply = perCall[c];
          const answers = typeof reply === 'string' ? reply.split('\n').map(Number) : [];
          if (answers.length !== call.requests.size || answers.some((ms) => !Number.isInteger(ms) || ms < 0)) {
            // Another command's reply: the connection is out of step.
            resetConnection(redis, call.keys[0]);
            const err = redisFailure(new ReplyMismatchError('countRequests', reply));
            for (const waiting of batch) waiting.reject(err);
            return;
          }
          answered.set(call, new Map([...call.requests.keys()].map((r, k) => [r, answers[k]!])));
        }
        batch.forEach((waiting, r) => {
          // In the order of the request's counters, as one call decides it.
          const waits = waiting.counters.map(({ key }) => answered.get(slots.get(slotOf(redis, key))!)?.get(r) ?? 0);
          waiting.resolve(waits.find((ms) => ms > 0) ?? 0);
        });
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
