import { createHash } from 'node:crypto';
import { errors, refusals, type HoldRefusal } from '../errors.js';
import type { Logger } from '../log.js';
import { noMetrics, type MetricsRecorder } from '../observability/metrics.js';
import type { RedisCommands, Reservation } from '../redis/commands.js';
import { refusalError } from '../redis/finished-errors.js';
import type { HoldRecord } from '../redis/hold-record.js';
import type { Hold } from '../schemas/hold.js';
import type { Settings } from '../settings.js';
import { ownerCheck, shownCustomerId, type Caller, type CustomerTrust } from './callers.js';
import { newHoldId, productOfHold } from './hold-ids.js';
import type { Catalogue } from './products.js';
import { createRefusalLog } from './refusal-log.js';
import type { RedisRebuilder } from './redis-rebuild.js';
import type { SoldOutCache } from './sold-out-cache.js';

export interface HoldRequest {
  productId: number;
  qty: number;
  /** The customer the hold is for, as src/domain/callers.ts holdCustomer decided it. */
  customerId: string | null;
  /** The Idempotency-Key scoped to its caller (src/domain/callers.ts scopedIdempotencyKey). */
  idempotencyKey?: string;
}

/** A hold granted (`hold`) or refused for want of units (`refusal`, answered 409). */
export type PlacedHold =
  | { hold: Hold; refusal?: undefined; replayed: boolean }
  | { hold?: undefined; refusal: HoldRefusal; replayed: boolean };
// `replayed`: the answer is the stored first answer to this Idempotency-Key.

export type HoldDesk = ReturnType<typeof createHoldDesk>;

/** Holds: placing, reading and releasing them. Every decision is made inside a Redis script. */
export function createHoldDesk(deps: {
  commands: RedisCommands;
  settings: Settings;
  catalogue: Catalogue;
  rebuilder: RedisRebuilder;
  soldOut: SoldOutCache;
  trust: CustomerTrust;
  log: Logger;
  events?: MetricsRecorder;
}) {
  const { commands, settings, catalogue, rebuilder, soldOut, trust, log, events = noMetrics } = deps;

  /** Redis has no copy of the hold's product: 503 while it is rebuilt; once rebuilt, the caller looks again. */
  async function recoverCopy(productId: number, holdId: string): Promise<void> {
    if (rebuilder.isRebuilding(productId)) throw errors.rebuilding(productId);
    if (!(await catalogue.ensureLoaded(productId))) throw errors.holdNotFound(holdId);
  }
  const refusalLog = createRefusalLog(log);

  // Refusals of a sold-out product differ only by the quantity asked: made once each.
  const soldOutRefusals = Array.from({ length: settings.maxQtyPerHold + 1 }, (_, qty) =>
    refusals.insufficientStock(0, qty),
  );

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
    const reservation: Reservation = {
      productId,
      holdId: newHoldId(productId),
      qty,
      customerId: request.customerId ?? '',
    };
    if (idempotencyKey !== undefined) {
      const fingerprint = requestFingerprint(request);
      if (!(await commands.claimIdempotencyKey(idempotencyKey, fingerprint))) throw errors.idempotencyKeyReused();
      reservation.idempotency = { key: idempotencyKey, fingerprint };
    }
    // A request refused before Redis decided anything for it gives its key back: the refusal leaves nothing.
    const giveKeyBack = async () => {
      if (reservation.idempotency)
        await commands.releaseIdempotencyKey(reservation.idempotency.key, reservation.idempotency.fingerprint);
    };
    let outcome;
    try {
      outcome = await commands.reserve(reservation);
      if (outcome.kind === 'productNotFound') {
        // Lost in Redis (or never loaded): refused with 503 while it is rebuilt, decided afresh once it is.
        if (rebuilder.isRebuilding(productId)) {
          await giveKeyBack();
          throw errors.rebuilding(productId);
        }
        if (await catalogue.ensureLoaded(productId)) outcome = await commands.reserve(reservation);
      }
    } catch (err) {
      soldOut.forget(productId);
      throw err;
    }
    if (outcome.kind === 'productNotFound' || outcome.kind === 'customerIdRequired') await giveKeyBack();
    if (outcome.kind === 'customerIdRequired' && trust.tokens) {
      throw errors.customerTokenRequired(`product ${productId} has a per-customer limit`);
    }
    if (outcome.kind === 'insufficientStock' && outcome.available <= 0) soldOut.markSoldOut(productId);
    else soldOut.forget(productId);
    switch (outcome.kind) {
      case 'held': {
        const { holdId, expiresAt, replayed } = outcome;
        if (!replayed) log.info({ hold_id: holdId, product_id: productId, qty }, 'hold created');
        const hold: Hold = {
          hold_id: holdId,
          product_id: productId,
          qty,
          customer_id: request.customerId,
          status: 'held',
          expires_at: new Date(expiresAt).toISOString(),
        };
        return { hold, replayed };
      }
      case 'insufficientStock':
        if (!outcome.replayed) refusalLog.insufficientStock(productId, outcome.available, outcome.requested);
        return {
          refusal: refusals.insufficientStock(outcome.available, outcome.requested),
          replayed: outcome.replayed,
        };
      case 'customerLimitExceeded':
        return {
          refusal: refusals.customerLimitExceeded(outcome.customerUnits, outcome.limit, qty),
          replayed: outcome.replayed,
        };
      default:
        throw refusalError(outcome, { productId });
    }
  }

  /** The hold's record as Redis has it now; 404 when there is none. */
  async function lookUp(holdId: string): Promise<{ productId: number; record: HoldRecord }> {
    const productId = productOfHold(holdId);
    if (productId === null) throw errors.holdNotFound(holdId);
    let lookup = await commands.getHold(productId, holdId);
    if (lookup.kind === 'productNotFound') {
      await recoverCopy(productId, holdId);
      lookup = await commands.getHold(productId, holdId);
    }
    if (lookup.kind !== 'found') throw refusalError(lookup, { holdId });
    return { productId, record: lookup.record };
  }

  /**
   * Refuses a caller who may not act on the hold (src/domain/callers.ts ownerCheck). Only with customer tokens
   * is there anything to check, so only then is the hold read first (its customer never changes).
   */
  async function checkOwner(holdId: string, caller: Caller): Promise<void> {
    if (!trust.tokens || caller.kind === 'admin') return;
    const { record } = await lookUp(holdId);
    ownerCheck(trust, caller, record.customer_id ?? null, () => errors.notYourHold(holdId));
  }

  async function find(holdId: string, caller: Caller): Promise<Hold> {
    const { productId, record } = await lookUp(holdId);
    ownerCheck(trust, caller, record.customer_id ?? null, () => errors.notYourHold(holdId));
    return toHold(holdId, productId, record, caller);
  }

  async function release(holdId: string, caller: Caller): Promise<Hold> {
    const productId = productOfHold(holdId);
    if (productId === null) throw errors.holdNotFound(holdId);
    await checkOwner(holdId, caller);
    let released = await commands.releaseHold(productId, holdId);
    if (released.kind === 'productNotFound') {
      await recoverCopy(productId, holdId);
      released = await commands.releaseHold(productId, holdId);
    }
    if (released.kind !== 'ended' && released.kind !== 'alreadyEnded') throw refusalError(released, { holdId });
    const hold = toHold(holdId, productId, released.record, caller);
    if (released.kind === 'ended') {
      soldOut.forget(productId);
      if (hold.status === 'released') events.holdReleased(productId);
      log.info({ hold_id: holdId, product_id: productId, qty: hold.qty, status: hold.status }, 'hold released');
    }
    return hold;
  }

  return { refusalWithoutRedis, place, find, release, checkOwner };
}

function requestFingerprint(request: HoldRequest): string {
  return createHash('sha256')
    .update(JSON.stringify([request.productId, request.qty, request.customerId ?? null]))
    .digest('base64url');
}

/**
 * A stored hold as the API shows it to a caller: a hold being converted is still held until its order is
 * committed, and its customer is shown to that customer and the admin only.
 */
function toHold(holdId: string, productId: number, record: HoldRecord, caller: Caller): Hold {
  return {
    hold_id: holdId,
    product_id: productId,
    qty: record.qty,
    customer_id: shownCustomerId(caller, record.customer_id ?? null),
    status: record.status === 'converting' ? 'held' : record.status,
    expires_at: new Date(record.expires_at).toISOString(),
  };
}
