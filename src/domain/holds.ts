import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { Config } from '../config.js';
import { AppError, errors, refusals, type HoldRefusal } from '../errors.js';
import { idempotencyClaimKey, productKeys, productScriptKeys } from '../redis/keys.js';
import type { RedisClock } from '../redis/clock.js';
import { createReserveBatches, type Reservation } from '../redis/reserve-batches.js';
import { ScriptCode, type ReserveReply } from '../redis/scripts.js';
import type { Hold, HoldStatus } from '../schemas/hold.js';
import type { Catalogue } from './products.js';
import type { SoldOutCache } from './sold-out-cache.js';

// Due holds a hold request expires in place when the stock looks short, before it refuses.
const INLINE_EXPIRY_LIMIT = 100;
const HOLD_ID = /^([1-9][0-9]{0,9})-[A-Za-z0-9_-]{12}$/;

export interface HoldRequest {
  productId: number;
  qty: number;
  customerId: string | null;
  idempotencyKey?: string;
}

/** A hold granted (`hold`) or refused for want of units (`refusal`, answered 409). */
export type PlacedHold =
  | { hold: Hold; refusal?: undefined; replayed: boolean }
  | { hold?: undefined; refusal: HoldRefusal; replayed: boolean };
// `replayed`: the answer is the stored first answer to this Idempotency-Key.

/** A hold record as the scripts store it in the product's `holds` hash. */
interface HoldRecord {
  qty: number;
  /** Absent when the hold was made without one. */
  customer_id?: string;
  /** 'converting' is internal: the API shows such a hold as held until its order is committed. */
  status: HoldStatus | 'converting';
  expires_at: number;
  price_cents: number;
  ended_at?: number;
}

// Random bytes drawn 4 KiB at a time: one randomBytes call per hold cost ~8% of a hold's CPU (profiled).
const RANDOM_POOL_SIZE = 4096;
const HOLD_ID_RANDOM_BYTES = 9;
let randomPool = randomBytes(RANDOM_POOL_SIZE);
let randomOffset = 0;

/** A hold id carries its product, so its keys are found without a lookup: `<product id>-<12 random chars>`. */
export function newHoldId(productId: number): string {
  if (randomOffset + HOLD_ID_RANDOM_BYTES > RANDOM_POOL_SIZE) {
    randomPool = randomBytes(RANDOM_POOL_SIZE);
    randomOffset = 0;
  }
  const random = randomPool.toString('base64url', randomOffset, randomOffset + HOLD_ID_RANDOM_BYTES);
  randomOffset += HOLD_ID_RANDOM_BYTES;
  return `${productId}-${random}`;
}

/** The product of a well-formed hold id, or null. */
export function productOfHold(holdId: string): number | null {
  const match = HOLD_ID.exec(holdId);
  return match ? Number(match[1]) : null;
}

export type HoldDesk = ReturnType<typeof createHoldDesk>;

/** Holds: placing, reading and releasing them. Every decision is made inside a Redis script. */
export function createHoldDesk(deps: {
  redis: Redis;
  clock: RedisClock;
  config: Config;
  catalogue: Catalogue;
  soldOut: SoldOutCache;
  log: Logger;
}) {
  const { redis, clock, config, catalogue, soldOut, log } = deps;
  const prefix = config.REDIS_KEY_PREFIX;
  const ttlMs = config.HOLD_TTL_SECONDS * 1000;
  const retainMs = config.HOLD_RETAIN_SECONDS * 1000;
  const idempotencyTtlMs = config.IDEMPOTENCY_TTL_SECONDS * 1000;

  const refusalLog = createRefusalLog(log);
  const expiryTimes = createIsoTimeCache();
  const batches = createReserveBatches(redis, {
    prefix,
    ttlMs,
    inlineExpiryLimit: INLINE_EXPIRY_LIMIT,
    idempotencyTtlMs,
    retainMs,
    // Past this moment (Redis's clock) the callers have been answered 503, so the script must not hold anything.
    deadline: () => Math.floor(clock.now()) + config.REDIS_COMMAND_TIMEOUT_MS,
  });

  // Refusals of a sold-out product differ only by the quantity asked: made once each.
  const soldOutRefusals = Array.from({ length: config.MAX_QTY_PER_HOLD + 1 }, (_, qty) => refusals.insufficientStock(0, qty));

  /**
   * The refusal of a request for a product this instance saw sold out a moment ago, decided without a round
   * trip (see SoldOutCache); undefined when the request must go to Redis (`place`).
   */
  function refusalWithoutRedis(request: HoldRequest): HoldRefusal | undefined {
    const { productId, qty } = request;
    // A request with an Idempotency-Key always reaches Redis: its answer must be the one stored there.
    if (request.idempotencyKey !== undefined || !soldOut.refuses(productId)) return undefined;
    refusalLog.insufficientStock(productId, 0, qty);
    return soldOutRefusals[qty] ?? refusals.insufficientStock(0, qty);
  }

  /** Decides a hold in Redis, in the next batch of its product; callers ask `refusalWithoutRedis` first. */
  async function place(request: HoldRequest): Promise<PlacedHold> {
    const { productId, qty, idempotencyKey } = request;
    const reservation: Reservation = { productId, holdId: newHoldId(productId), qty, customerId: request.customerId ?? '' };
    if (idempotencyKey !== undefined) {
      const fingerprint = requestFingerprint(request);
      await claimIdempotencyKey(idempotencyKey, fingerprint);
      reservation.idempotency = { key: idempotencyKey, fingerprint };
    }
    let reply: ReserveReply;
    try {
      reply = await batches.reserve(reservation);
      if (reply[0] === ScriptCode.ProductNotFound && (await catalogue.ensureLoaded(productId))) {
        reply = await batches.reserve(reservation);
      }
    } catch (err) {
      soldOut.forget(productId);
      throw err;
    }
    const [code, grantedId, a, b, replayedFlag] = reply;
    const replayed = replayedFlag === 1;
    if (code === ScriptCode.InsufficientStock && a <= 0) soldOut.markSoldOut(productId);
    else soldOut.forget(productId);
    switch (code) {
      case ScriptCode.Ok: {
        if (!replayed) log.info({ hold_id: grantedId, product_id: productId, qty }, 'hold created');
        const hold: Hold = {
          hold_id: grantedId,
          product_id: productId,
          qty,
          customer_id: request.customerId,
          status: 'held',
          expires_at: expiryTimes.iso(a),
        };
        return { hold, replayed };
      }
      case ScriptCode.InsufficientStock:
        if (!replayed) refusalLog.insufficientStock(productId, a, b);
        return { refusal: refusals.insufficientStock(a, b), replayed };
      case ScriptCode.CustomerLimitExceeded:
        return { refusal: refusals.customerLimitExceeded(a, b, qty), replayed };
      default:
        throw refusal(code, { productId });
    }
  }

  /**
   * Claims an Idempotency-Key for this request's fingerprint across all products. Copies of one request pass
   * (the product's script then answers them all alike); another request with the key is refused.
   */
  async function claimIdempotencyKey(idempotencyKey: string, fingerprint: string): Promise<void> {
    const previous = await redis.set(
      idempotencyClaimKey(prefix, idempotencyKey), fingerprint, 'PX', idempotencyTtlMs, 'NX', 'GET',
    );
    if (previous !== null && previous !== fingerprint) throw errors.idempotencyKeyReused();
  }

  async function find(holdId: string): Promise<Hold> {
    const productId = productOfHold(holdId);
    if (productId === null) throw errors.holdNotFound(holdId);
    const [code, record] = await redis.getHold(productKeys(prefix, productId).holds, holdId);
    if (code !== ScriptCode.Ok) throw refusal(code, { holdId });
    return toHold(holdId, productId, record);
  }

  async function release(holdId: string): Promise<Hold> {
    const productId = productOfHold(holdId);
    if (productId === null) throw errors.holdNotFound(holdId);
    const [code, record] = await redis.releaseHold(...productScriptKeys(productKeys(prefix, productId)), holdId, retainMs);
    if (code !== ScriptCode.Ok) throw refusal(code, { holdId });
    const hold = toHold(holdId, productId, record);
    soldOut.forget(productId);
    log.info({ hold_id: holdId, product_id: productId, qty: hold.qty, status: hold.status }, 'hold released');
    return hold;
  }

  return { refusalWithoutRedis, place, find, release };
}

/**
 * Logs refusals for insufficient stock at warn, at most once a second per product, with how many were refused
 * since the last line: a sold-out product is refused thousands of times a second, and a line each would cost
 * more than the refusals.
 */
function createRefusalLog(log: Logger) {
  const products = new Map<number, { loggedAt: number; refused: number }>();
  return {
    insufficientStock(productId: number, available: number, requested: number): void {
      const now = Date.now();
      const entry = products.get(productId) ?? { loggedAt: 0, refused: 0 };
      entry.refused++;
      if (now - entry.loggedAt >= 1000) {
        log.warn({ product_id: productId, available_stock: available, requested, refused: entry.refused }, 'insufficient stock');
        entry.loggedAt = now;
        entry.refused = 0;
      }
      products.set(productId, entry);
    },
  };
}

/**
 * The ISO form of the last expiry time asked for: the holds of one batch share their expiry, and formatting a
 * date (~0.6 µs) is one of the larger costs of answering a hold.
 */
function createIsoTimeCache() {
  let lastMs = Number.NaN;
  let lastIso = '';
  return {
    iso(ms: number): string {
      if (ms !== lastMs) {
        lastIso = new Date(ms).toISOString();
        lastMs = ms;
      }
      return lastIso;
    },
  };
}

/** The script refusals that carry no figures, as API errors: the one place script codes become errors. */
function refusal(code: number, context: { productId?: number; holdId?: string }): AppError | Error {
  switch (code) {
    case ScriptCode.ProductNotFound:
      return errors.productNotFound(context.productId ?? '?');
    case ScriptCode.CustomerIdRequired:
      return errors.customerIdRequired(context.productId ?? 0);
    case ScriptCode.IdempotencyKeyReused:
      return errors.idempotencyKeyReused();
    case ScriptCode.HoldNotFound:
      return errors.holdNotFound(context.holdId ?? '?');
    case ScriptCode.HoldConverted:
      return errors.holdConverted(context.holdId ?? '?');
    case ScriptCode.HoldConverting:
      return errors.holdConverting(context.holdId ?? '?');
    case ScriptCode.DeadlinePassed:
      return errors.unavailable('Redis');
    default:
      return new Error(`unexpected script reply code ${code}`);
  }
}


function requestFingerprint(request: HoldRequest): string {
  return createHash('sha256')
    .update(JSON.stringify([request.productId, request.qty, request.customerId ?? null]))
    .digest('base64url');
}

function toHold(holdId: string, productId: number, json: string): Hold {
  const record = JSON.parse(json) as HoldRecord;
  if (typeof record.qty !== 'number' || typeof record.expires_at !== 'number' || typeof record.status !== 'string') {
    throw new Error(`malformed hold record for ${holdId}`);
  }
  return {
    hold_id: holdId,
    product_id: productId,
    qty: record.qty,
    customer_id: record.customer_id ?? null,
    status: record.status === 'converting' ? 'held' : record.status,
    expires_at: new Date(record.expires_at).toISOString(),
  };
}
