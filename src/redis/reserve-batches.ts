import type { Redis } from 'ioredis';
import { holdIdempotencyKey, productKeys, productScriptKeys } from './keys.js';
import type { ReserveReply } from './scripts.js';

/** One hold request as lua/reserveStock.lua takes it. */
export interface Reservation {
  productId: number;
  holdId: string;
  qty: number;
  /** '' for none. */
  customerId: string;
  /** The request's Idempotency-Key, with the fingerprint of the request; undefined when it has none. */
  idempotency?: { key: string; fingerprint: string };
}

export interface ReserveBatchSettings {
  prefix: string;
  ttlMs: number;
  inlineExpiryLimit: number;
  idempotencyTtlMs: number;
  retainMs: number;
  /** The moment (ms, Redis's clock) past which the callers of a batch sent now have been answered 503. */
  deadline: () => number;
}

/** Most requests in one script call: bounds the time Redis spends on one call (~1 ms). */
export const MAX_RESERVE_BATCH = 256;
const REPLY_WIDTH = 5;

interface Waiting {
  reservation: Reservation;
  resolve: (reply: ReserveReply) => void;
  reject: (err: unknown) => void;
}

/**
 * Sends the hold requests for one product that arrive in the same turn of the event loop as one reserveStock
 * call. Under load, a hot product's requests then cost Redis one script run and one write per key per batch
 * instead of per hold, and this process one command to encode and one reply to parse. The script decides each
 * request in arrival order, exactly as separate calls would; a request alone is a batch of one, sent as soon as
 * the current turn ends.
 */
export function createReserveBatches(redis: Redis, settings: ReserveBatchSettings) {
  const pending = new Map<number, Waiting[]>();
  let flushScheduled = false;

  function flush(): void {
    flushScheduled = false;
    for (const [productId, batch] of pending) send(productId, batch);
    pending.clear();
  }

  function send(productId: number, batch: Waiting[]): void {
    const keys: string[] = productScriptKeys(productKeys(settings.prefix, productId));
    const args: (string | number)[] = [
      settings.ttlMs, settings.inlineExpiryLimit, settings.idempotencyTtlMs, settings.retainMs, settings.deadline(),
      batch.length,
    ];
    for (const { reservation } of batch) {
      const { idempotency } = reservation;
      let keyIndex = 0;
      if (idempotency) {
        keys.push(holdIdempotencyKey(settings.prefix, productId, idempotency.key));
        keyIndex = keys.length; // Lua's KEYS are 1-based
      }
      args.push(reservation.holdId, reservation.qty, reservation.customerId, idempotency?.fingerprint ?? '', keyIndex);
    }
    redis.reserveStock(keys.length, ...keys, ...args).then(
      (reply) => {
        if (reply.length !== batch.length * REPLY_WIDTH) {
          const err = new Error(`reserveStock answered ${reply.length} values for ${batch.length} requests`);
          for (const waiting of batch) waiting.reject(err);
          return;
        }
        batch.forEach((waiting, i) =>
          waiting.resolve(reply.slice(i * REPLY_WIDTH, (i + 1) * REPLY_WIDTH) as ReserveReply));
      },
      (err: unknown) => {
        for (const waiting of batch) waiting.reject(err);
      },
    );
  }

  /** Reserves through the next batch of the request's product; the reply is this request's part of it. */
  function reserve(reservation: Reservation): Promise<ReserveReply> {
    return new Promise((resolve, reject) => {
      let batch = pending.get(reservation.productId);
      if (!batch) {
        batch = [];
        pending.set(reservation.productId, batch);
      }
      batch.push({ reservation, resolve, reject });
      if (batch.length >= MAX_RESERVE_BATCH) {
        pending.delete(reservation.productId);
        send(reservation.productId, batch);
      } else if (!flushScheduled) {
        flushScheduled = true;
        // After the I/O callbacks of this turn: every request parsed in it joins the batch.
        setImmediate(flush);
      }
    });
  }

  return { reserve };
}
