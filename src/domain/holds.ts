import { createHash } from 'node:crypto';
import { errors, refusals, type HoldRefusal } from '../errors.js';
import type { Logger } from '../log.js';
import { noMetrics, type MetricsRecorder } from '../observability/metrics.js';
import type { RedisCommands, Reservation, ReserveOutcome } from '../redis/commands.js';
import { bucketLabels, homeBucket } from '../redis/keys.js';
import { refusalError } from '../redis/finished-errors.js';
import type { HoldRecord } from '../redis/hold-record.js';
import type { Hold } from '../schemas/hold.js';
import type { Settings } from '../settings.js';
import { ownerCheck, shownCustomerId, type Caller, type CustomerTrust } from './callers.js';
import { newHoldId, productOfHold } from './hold-ids.js';
import type { Catalogue } from './products.js';
import { createRefusalLog } from './refusal-log.js';
import type { Rebalancer } from './rebalancer.js';
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
  rebalancer: Rebalancer;
  soldOut: SoldOutCache;
  trust: CustomerTrust;
  log: Logger;
  events?: MetricsRecorder;
}) {
  const { commands, settings, catalogue, rebuilder, rebalancer, soldOut, trust, log, events = noMetrics } = deps;
  // Where the next unrouted hold of each bucketed product starts: its buckets take turns.
  const nextBucket = new Map<number, number>();

  /**
   * Decides a hold in one of its product's stock buckets (src/domain/rebalancer.ts). A product not split has one.
   * A hold that must live in one known bucket goes there alone: on a product with a per-customer limit, the
   * customer's home bucket (so the customer's units are counted in one slot, exactly), and a request with an
   * Idempotency-Key, the key's (so a retry finds the first decision). Any other hold starts at the next bucket
   * in turn and falls over to the others, one after the other, while they refuse for want of units: the cost
   * only shows near the sell-out. A refusal for units the product has elsewhere asks the rebalancer for them.
   * `soldOut`: the refusal speaks for the whole product (every bucket had no unit).
   */
  async function reserveInBucket(
    request: HoldRequest,
    idempotency: Reservation['idempotency'],
  ): Promise<{ outcome: ReserveOutcome; soldOut: boolean }> {
    const { productId, qty } = request;
    const customerId = request.customerId ?? '';
    const routing = await commands.bucketRouting(productId);
    const labels = bucketLabels(productId, routing.buckets);
    const reserveIn = (label: number) =>
      commands.reserve({ productId, label, holdId: newHoldId(productId, label), qty, customerId, idempotency });
    if (labels.length === 1) {
      const outcome = await reserveIn(0);
      return { outcome, soldOut: outcome.kind === 'insufficientStock' && outcome.available <= 0 };
    }
    const home = routing.limited ? customerId : idempotency?.key;
    if (home !== undefined) {
      const label = labels[homeBucket(home, labels.length)]!;
      const outcome = await reserveIn(label);
      if (outcome.kind === 'insufficientStock' && !outcome.replayed) rebalancer.want(productId, label, qty);
      return { outcome, soldOut: false };
    }
    const start = nextBucket.get(productId) ?? 0;
    nextBucket.set(productId, (start + 1) % labels.length);
    let most = 0;
    let refusal: ReserveOutcome | undefined;
    for (let i = 0; i < labels.length; i++) {
      const outcome = await reserveIn(labels[(start + i) % labels.length]!);
      if (outcome.kind !== 'insufficientStock') return { outcome, soldOut: false };
      most = Math.max(most, outcome.available);
      refusal = outcome;
    }
    // Units enough in all buckets together, none alone: gathered into the first one asked for the next try.
    if (most > 0) rebalancer.want(productId, labels[start]!, qty);
    // The most units one hold could get now, from any one bucket.
    return {
      outcome: { ...(refusal as ReserveOutcome & { kind: 'insufficientStock' }), available: most },
      soldOut: most <= 0,
    };
  }

  /** Redis has no copy of the hold's product: 503 while it is rebuilt; once rebuilt, the caller looks again. */
  async function recoverCopy(productId: number, holdId: string): Promise<void> {
    if (rebuilder.isRebuilding(productId)) throw errors.rebuilding(productId);
    if (!(await catalogue.ensureLoaded(productId))) throw errors.holdNotFound(holdId);
  }
  const refusalLog = createRefusalLog();

  // Refusals of a sold-out product differ only by the quantity asked: made once each.
  const soldOutRefusals = Array.from({ length: settings.maxQtyPerHold + 1 }, (_, qty) =>
    refusals.insufficientStock(0, qty),
  );

  /**
   * The refusal of a request for a product this instance saw sold out a moment ago, decided without a round
   * trip (see SoldOutCache); undefined when the request must go to Redis (`place`).
   */
  function refusalWithoutRedis(request: HoldRequest, requestLog: Logger = log): HoldRefusal | undefined {
    const { productId, qty } = request;
    // A request with an Idempotency-Key always reaches Redis: its answer must be the one stored there.
    if (request.idempotencyKey !== undefined || !soldOut.refuses(productId)) return undefined;
    refusalLog.insufficientStock(requestLog, productId, 0, qty);
    return soldOutRefusals[qty] ?? refusals.insufficientStock(0, qty);
  }

  /**
   * Decides a hold in Redis, in the next batch of its product; callers ask `refusalWithoutRedis` first.
   * `requestLog`: the request's logger, so the lines about it carry its id (the desk's own otherwise).
   */
  async function place(request: HoldRequest, requestLog: Logger = log): Promise<PlacedHold> {
    const { productId, qty, idempotencyKey } = request;
    let idempotency: Reservation['idempotency'];
    if (idempotencyKey !== undefined) {
      const fingerprint = requestFingerprint(request);
      if (!(await commands.claimIdempotencyKey(idempotencyKey, fingerprint))) throw errors.idempotencyKeyReused();
      idempotency = { key: idempotencyKey, fingerprint };
    }
    // A request refused before Redis decided anything for it gives its key back: the refusal leaves nothing.
    const giveKeyBack = async () => {
      if (idempotency) await commands.releaseIdempotencyKey(idempotency.key, idempotency.fingerprint);
    };
    let decided;
    try {
      decided = await reserveInBucket(request, idempotency);
      if (decided.outcome.kind === 'productNotFound') {
        // Lost in Redis (or never loaded): refused with 503 while it is rebuilt, decided afresh once it is.
        if (rebuilder.isRebuilding(productId)) {
          await giveKeyBack();
          throw errors.rebuilding(productId);
        }
        if (await catalogue.ensureLoaded(productId)) decided = await reserveInBucket(request, idempotency);
      }
    } catch (err) {
      soldOut.forget(productId);
      throw err;
    }
    const { outcome } = decided;
    if (outcome.kind === 'productNotFound' || outcome.kind === 'customerIdRequired') await giveKeyBack();
    if (outcome.kind === 'customerIdRequired' && trust.tokens) {
      throw errors.customerTokenRequired(`product ${productId} has a per-customer limit`);
    }
    if (decided.soldOut) soldOut.markSoldOut(productId);
    else soldOut.forget(productId);
    switch (outcome.kind) {
      case 'held': {
        const { holdId, expiresAt, replayed } = outcome;
        if (!replayed) requestLog.info({ hold_id: holdId, product_id: productId, qty }, 'hold created');
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
        if (!outcome.replayed) {
          refusalLog.insufficientStock(requestLog, productId, outcome.available, outcome.requested);
        }
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

  async function release(holdId: string, caller: Caller, requestLog: Logger = log): Promise<Hold> {
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
      requestLog.info({ hold_id: holdId, product_id: productId, qty: hold.qty, status: hold.status }, 'hold released');
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
