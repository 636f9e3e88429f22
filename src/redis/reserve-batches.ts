import { isNoScript, pipelineGroups, resetConnection, type Exchange, type RedisClient } from './connection.js';
import { redisFailure, ReplyMismatchError, ScriptReplyError } from './errors.js';
import { holdIdempotencyKey, productKeys, productScriptKeys } from './keys.js';
import type { Settings } from '../settings.js';
import { ScriptCode } from './script-codes.js';
import { holdIdPrefix } from '../domain/hold-ids.js';

/** One hold request as lua/reserveStock.lua takes it. */
export interface Reservation {
  productId: number;
  /** The stock bucket (its label: src/redis/keys.ts bucketLabels) the request is decided in; 0 for most. */
  label?: number;
  holdId: string;
  qty: number;
  /** '' for none. */
  customerId: string;
  /** The request's Idempotency-Key, with the fingerprint of the request; undefined when it has none. */
  idempotency?: { key: string; fingerprint: string };
}

/** What lua/reserveStock.lua decided for one request; `replayed`: the stored first answer to its Idempotency-Key. */
export type ReserveOutcome =
  | { kind: 'held'; holdId: string; expiresAt: number; replayed: boolean }
  | { kind: 'insufficientStock'; available: number; requested: number; replayed: boolean }
  | { kind: 'customerLimitExceeded'; customerUnits: number; limit: number; replayed: boolean }
  | { kind: 'productNotFound' }
  | { kind: 'idempotencyKeyReused' }
  | { kind: 'customerIdRequired' }
  | { kind: 'deadlinePassed' };

export interface ReserveBatchSettings extends Pick<
  Settings,
  | 'redisKeyPrefix'
  | 'holdTtlMs'
  | 'inlineExpiryLimit'
  | 'idempotencyTtlMs'
  | 'holdRetainMs'
  | 'maxHoldBatch'
  | 'redisCommandTimeoutMs'
> {
  /** The moment (ms, Redis's clock) past which the callers of a batch sent now have been answered 503. */
  reserveDeadline: () => number;
}

// Separators of the script's request lines (see lua/reserveStock.lua).
const FIELD_BREAK = /[\t\n]/;

interface Waiting {
  reservation: Reservation;
  resolve: (outcome: ReserveOutcome) => void;
  reject: (err: unknown) => void;
}

/**
 * Sends the hold requests for one product that arrive in the same turn of the event loop as one reserveStock
 * call. Under load, a hot product's requests then cost Redis one script run and one write per key per batch
 * instead of per hold, and this process one command to encode and one reply to parse. The script decides each
 * request in arrival order, exactly as separate calls would; a request alone is a batch of one, sent as soon as
 * the current turn ends.
 */
export function createReserveBatches(redis: RedisClient, exchange: Exchange, settings: ReserveBatchSettings) {
  // By bucket: the product id for its first bucket (every product not split), `<id>.<label>` for another.
  const pending = new Map<number | string, Waiting[]>();
  let flushScheduled = false;

  function flush(): void {
    flushScheduled = false;
    if (pending.size === 0) return; // its only batch was full and went already
    if (pending.size === 1) {
      for (const batch of pending.values()) send(batch);
    } else {
      // Batches of several products go in one write per node, as one explicit pipeline (on one server: one).
      const batches = [...pending.values()];
      for (const { indices } of pipelineGroups(redis, batches, inventoryKey)) {
        const group = indices.map((i) => batches[i]!);
        if (group.length === 1) send(group[0]!);
        else sendPipelined(group);
      }
    }
    pending.clear();
  }

  /** The batches of several products whose keys live on one node, in one pipeline. */
  function sendPipelined(group: Waiting[][]): void {
    const batches = group.map((batch) => ({ batch, args: scriptArguments(batch) }));
    const key = inventoryKey(group[0]!);
    const started = Date.now();
    exchange(
      () => {
        const pipeline = redis.pipeline();
        for (const { args } of batches) pipeline.reserveStock(...args);
        return pipeline.exec();
      },
      undefined,
      undefined,
      key,
    ).then(
      (results) =>
        batches.forEach(({ batch, args }, i) => {
          const [err, reply] = results?.[i] ?? [new ScriptReplyError('reserveStock', 'no reply in the pipeline')];
          if (!err) return decide(batch, Promise.resolve(reply), key);
          // A NOSCRIPT did not run: that batch goes again alone, within what is left of the deadline.
          const left = settings.redisCommandTimeoutMs - (Date.now() - started);
          if (isNoScript(err) && left > 0)
            return decide(
              batch,
              exchange(() => redis.reserveStock(...args), undefined, left, key),
              key,
            );
          fail(batch, redisFailure(err));
        }),
      (err: unknown) => {
        for (const { batch } of batches) fail(batch, err);
      },
    );
  }

  /** The inventory key of a batch's bucket: where its script runs. */
  function inventoryKey(batch: Waiting[]): string {
    const { productId, label = 0 } = batch[0]!.reservation;
    return productKeys(settings.redisKeyPrefix, productId, label).inventory;
  }

  function send(batch: Waiting[]): void {
    const key = inventoryKey(batch);
    decide(
      batch,
      exchange(() => redis.reserveStock(...scriptArguments(batch)), undefined, undefined, key),
      key,
    );
  }

  /** Settles a batch's requests once its reply (or its error) is in. */
  function decide(batch: Waiting[], reply: Promise<unknown>, key: string): void {
    reply.then(
      (lines) => settle(batch, lines, key),
      (err: unknown) => fail(batch, err),
    );
  }

  /** The key count, the keys and the arguments of lua/reserveStock.lua for one product's batch. */
  function scriptArguments(batch: Waiting[]): [number, ...(string | number)[]] {
    const { productId, label = 0 } = batch[0]!.reservation;
    const keys: string[] = productScriptKeys(productKeys(settings.redisKeyPrefix, productId, label));
    const lines: string[] = [];
    for (const { reservation } of batch) {
      const { idempotency } = reservation;
      let keyIndex = 0;
      if (idempotency) {
        keys.push(holdIdempotencyKey(settings.redisKeyPrefix, productId, idempotency.key, label));
        keyIndex = keys.length; // Lua's KEYS are 1-based
      }
      // Tabs and newlines cannot occur in a field: hold ids and fingerprints are ours, customer ids checked above.
      lines.push(
        `${reservation.holdId}\t${reservation.qty}\t${reservation.customerId}\t${idempotency?.fingerprint ?? ''}\t${keyIndex}`,
      );
    }
    return [
      keys.length,
      ...keys,
      settings.holdTtlMs,
      settings.inlineExpiryLimit,
      settings.idempotencyTtlMs,
      settings.holdRetainMs,
      settings.reserveDeadline(),
      lines.join('\n'),
    ];
  }

  /**
   * Settles each request of a batch with its line of the script's reply. A reply with another number of lines, or
   * granting a hold this batch did not ask for, is another command's: the connection is out of step.
   */
  function settle(batch: Waiting[], reply: unknown, key: string): void {
    const lines = typeof reply === 'string' ? reply.split('\n') : [];
    const outcomes = lines.map(decodeLine);
    const foreign = lines.length !== batch.length || outcomes.some((o, i) => o && !ownHold(batch[i]!.reservation, o));
    if (foreign) {
      resetConnection(redis, key);
      fail(batch, redisFailure(new ReplyMismatchError('reserveStock', reply)));
      return;
    }
    for (let i = 0; i < batch.length; i++) {
      const outcome = outcomes[i];
      if (outcome) batch[i]!.resolve(outcome);
      else batch[i]!.reject(new ScriptReplyError('reserveStock', lines[i]));
    }
  }

  function fail(batch: Waiting[], err: unknown): void {
    for (const waiting of batch) waiting.reject(err);
  }

  /** Reserves through the next batch of the request's product; the reply is this request's part of it. */
  function reserve(reservation: Reservation): Promise<ReserveOutcome> {
    return new Promise((resolve, reject) => {
      // The HTTP schemas allow neither; a caller that let one through must not spoil its batch-mates' requests.
      if (FIELD_BREAK.test(reservation.customerId)) {
        reject(new Error('reserveStock: a customer id holds a tab or a newline'));
        return;
      }
      const bucket = reservation.label ? `${reservation.productId}.${reservation.label}` : reservation.productId;
      let batch = pending.get(bucket);
      if (!batch) {
        batch = [];
        pending.set(bucket, batch);
      }
      batch.push({ reservation, resolve, reject });
      if (batch.length >= settings.maxHoldBatch) {
        pending.delete(bucket);
        send(batch);
      } else if (!flushScheduled) {
        flushScheduled = true;
        // After the I/O callbacks of this turn: every request parsed in it joins the batch.
        setImmediate(flush);
      }
    });
  }

  return { reserve };
}

/** A granted hold is the request's own, or for a replay one of the same bucket (ids start with the product and label). */
function ownHold(reservation: Reservation, outcome: ReserveOutcome): boolean {
  if (outcome.kind !== 'held') return true;
  return outcome.replayed
    ? outcome.holdId.startsWith(holdIdPrefix(reservation.productId, reservation.label ?? 0))
    : outcome.holdId === reservation.holdId;
}

/** One line of reserveStock's reply: code, hold id, a, b, replayed (see lua/reserveStock.lua); undefined if malformed. */
function decodeLine(line: string): ReserveOutcome | undefined {
  const fields = line.split('\t');
  if (fields.length !== 5) return undefined;
  const [code, holdId, a, b] = [Number(fields[0]), fields[1]!, Number(fields[2]), Number(fields[3])];
  const replayed = fields[4] === '1';
  switch (code) {
    case ScriptCode.HELD:
      return { kind: 'held', holdId, expiresAt: a, replayed };
    case ScriptCode.INSUFFICIENT_STOCK:
      return { kind: 'insufficientStock', available: a, requested: b, replayed };
    case ScriptCode.CUSTOMER_LIMIT_EXCEEDED:
      return { kind: 'customerLimitExceeded', customerUnits: a, limit: b, replayed };
    case ScriptCode.PRODUCT_NOT_FOUND:
      return { kind: 'productNotFound' };
    case ScriptCode.IDEMPOTENCY_KEY_REUSED:
      return { kind: 'idempotencyKeyReused' };
    case ScriptCode.CUSTOMER_ID_REQUIRED:
      return { kind: 'customerIdRequired' };
    case ScriptCode.DEADLINE_PASSED:
      return { kind: 'deadlinePassed' };
    default:
      return undefined;
  }
}
