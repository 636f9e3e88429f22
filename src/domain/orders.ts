import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { createOrderBatches } from '../db/order-batches.js';
import * as ordersRepo from '../db/orders.js';
import type { Database } from '../db/schema.js';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import { noMetrics, type MetricsRecorder } from '../observability/metrics.js';
import type { RedisClock } from '../redis/clock.js';
import type { RedisCommands } from '../redis/commands.js';
import { refusalError } from '../redis/finished-errors.js';
import type { Order } from '../schemas/order.js';
import type { Settings } from '../settings.js';
import { ownerCheck, shownCustomerId, type Caller, type CustomerTrust } from './callers.js';
import { crashPoint } from './faults.js';
import { bucketOfHold, productOfHold } from './hold-ids.js';
import type { RedisRebuilder } from './redis-rebuild.js';
import type { SoldOutCache } from './sold-out-cache.js';

export interface PlacedOrder {
  order: Order;
  /** False when the hold had already become this order (a retry, or a concurrent copy of the request). */
  created: boolean;
}

export type OrderDesk = ReturnType<typeof createOrderDesk>;

/**
 * Orders: turning a hold into an order, and putting a cancelled order's units back on sale.
 *
 * A conversion spans two stores, so it goes in steps that each survive a crash (docs/conversion.md):
 * 1. Redis: the hold is claimed (status converting, under a claim id, with a lease); its units stay held.
 * 2. Postgres, one statement for the conversions of a turn of the event loop: each claim is recorded as
 *    'ordered', with its order, its item and its payment.
 * 3. Redis: the hold is converted; its units move from held to sold.
 * A claim whose lease ran out is decided by recovery from Postgres: 'ordered' finishes step 3; otherwise it is
 * recorded as 'abandoned' (which no late transaction can then overturn) and the hold goes back to being a hold.
 */
export function createOrderDesk(deps: {
  db: Kysely<Database>;
  commands: RedisCommands;
  rebuilder: RedisRebuilder;
  clock: RedisClock;
  settings: Settings;
  soldOut: SoldOutCache;
  trust: CustomerTrust;
  log: Logger;
  events?: MetricsRecorder;
}) {
  const { db, commands, rebuilder, clock, settings, soldOut, trust, log, events = noMetrics } = deps;
  const orderBatches = createOrderBatches(db, settings);

  /** Redis has no copy of the product: 503 while it is rebuilt; once rebuilt, the caller looks again. */
  async function recoverCopy(productId: number, holdId: string): Promise<void> {
    if (rebuilder.isRebuilding(productId)) throw errors.rebuilding(productId);
    if ((await rebuilder.ensure(productId, 'missing in redis')) === 'absent') throw errors.holdNotFound(holdId);
  }

  /** Turns a hold into an order. `requestLog`: the request's logger, so its lines carry the request's id. */
  async function place(holdId: string, paymentMethod: string | null, requestLog: Logger = log): Promise<PlacedOrder> {
    const productId = productOfHold(holdId);
    if (productId === null) throw errors.holdNotFound(holdId);
    // One more round if recovery abandoned our claim in between (the hold is then an ordinary hold again).
    for (let attempt = 0; attempt < 2; attempt++) {
      // The sweeper hands a stale claim to recovery when it next looks at the product: make that no later than
      // the lease (the schedule lives outside the product's slot, so the script cannot do it).
      const [, claim] = await Promise.all([
        commands.scheduleSweep(
          productId,
          Math.ceil(clock.now()) + settings.conversionLeaseMs,
          'sooner',
          bucketOfHold(holdId),
        ),
        commands.claimHold(productId, holdId, randomUUID()),
      ]);
      if (claim.kind === 'converted') return { order: toOrder(await orderOfConvertedHold(holdId)), created: false };
      if (claim.kind === 'productNotFound') {
        await recoverCopy(productId, holdId);
        continue;
      }
      if (claim.kind !== 'claimed' && claim.kind !== 'joined') throw refusalError(claim, { holdId });
      const { claimId, record: hold } = claim;
      crashPoint('after-claim');

      // Written with the other conversions of this turn, in one statement (one commit).
      const write = await orderBatches.insert({
        claimId,
        holdId,
        customerId: hold.customer_id ?? null,
        productId,
        qty: hold.qty,
        unitPriceCents: hold.price_cents,
        paymentMethod,
        paymentTtlSeconds: settings.orderPaymentTtlMs / 1000,
        redisGeneration: claim.generation,
      });
      if (write.kind === 'beyondStock') {
        // Redis granted a hold the ledger has no units for: its copy is behind Postgres (a promoted replica that
        // missed sales), which the watcher may not see while holds like this one fill the gap. Rebuilt now; the
        // claim, left unrecorded, goes with the old copy.
        requestLog.error(
          { hold_id: holdId, claim_id: claimId, product_id: productId, qty: hold.qty },
          'hold beyond the stock postgres has unsold: no order made',
        );
        rebuilder.distrust(productId, 'order beyond the stock in postgres').catch((err: unknown) => {
          log.warn({ product_id: productId, err }, 'rebuild after a refused order failed');
        });
        throw errors.holdBeyondStock(holdId);
      }
      if (write.kind === 'notWritten') {
        // The claim has an outcome already: a copy of this request committed the order (perhaps before a crash
        // that left the units held), or recovery gave the claim up.
        const outcome = await ordersRepo.claimOutcome(db, claimId);
        if (outcome === 'abandoned') continue;
        if (outcome === undefined) {
          // Fenced: Redis lost the product after this hold was claimed, and its rebuild counted what Postgres
          // had sold without this order. Committing it now would sell the units twice.
          requestLog.error(
            { hold_id: holdId, claim_id: claimId, product_id: productId },
            'hold lost in a redis data loss: no order made',
          );
          throw errors.holdLost(holdId);
        }
        const existing = await orderOfConvertedHold(holdId);
        await finishConversion(productId, holdId, existing.id, requestLog);
        return { order: toOrder(existing), created: false };
      }
      const { order } = write;
      crashPoint('after-order-commit');
      events.orderCreated(productId, order.status, hold.qty);
      requestLog.info(
        { hold_id: holdId, order_id: order.id, product_id: productId, qty: hold.qty },
        'order created from hold',
      );
      try {
        await finishConversion(productId, holdId, order.id, requestLog);
      } catch (err) {
        // The order is committed; recovery moves the units to sold when the claim's lease runs out.
        requestLog.warn({ hold_id: holdId, order_id: order.id, err }, 'order committed, conversion left to recovery');
      }
      return { order: toOrder(order), created: true };
    }
    throw errors.unavailable('the conversion');
  }

  /** The order of a hold that has one (its conversion committed). */
  async function orderOfConvertedHold(holdId: string): Promise<ordersRepo.OrderWithItems> {
    const order = await ordersRepo.findOrderByHold(db, holdId);
    if (!order) throw new Error(`hold ${holdId} is converted but has no order`);
    return order;
  }

  async function finishConversion(
    productId: number,
    holdId: string,
    orderId: number,
    stepLog: Logger = log,
  ): Promise<void> {
    const step = await commands.finishConversion(productId, holdId, orderId);
    if (step.kind === 'holdNotFound' || step.kind === 'wrongHoldState') {
      // Redis lost the hold (data loss) or it is in a state no committed order allows: say so loudly.
      stepLog.error(
        { hold_id: holdId, order_id: orderId, outcome: step },
        'committed order whose hold cannot be converted',
      );
    }
  }

  /** Decides a conversion claim whose lease ran out (its process may have died), from what Postgres recorded. */
  async function recoverClaim(productId: number, holdId: string, claimId: string): Promise<void> {
    if (claimId === '') return;
    if ((await ordersRepo.abandonClaim(db, { claimId, holdId })) === 'ordered') {
      const order = await orderOfConvertedHold(holdId);
      await finishConversion(productId, holdId, order.id);
      events.recoveryAction('conversion_finished');
      log.warn(
        { hold_id: holdId, order_id: order.id, claim_id: claimId },
        'recovery: order was committed; conversion finished',
      );
      return;
    }
    const step = await commands.abandonClaim(productId, holdId, claimId);
    const status = step.kind === 'holdNotFound' ? undefined : step.status;
    events.recoveryAction('claim_abandoned');
    log.warn({ hold_id: holdId, claim_id: claimId, status }, 'recovery: conversion never committed; claim abandoned');
  }

  /**
   * An order as `caller` may see it. By its number (sequential, so guessable): the admin's and its proven
   * customer's only; anyone else is told it does not exist. By its hold id (unguessable): whoever has the hold id,
   * except that with customer tokens a customer's order is that customer's (src/domain/callers.ts ownerCheck).
   */
  async function find(reference: number | string, caller: Caller): Promise<Order> {
    const order =
      typeof reference === 'number'
        ? await ordersRepo.findOrder(db, reference)
        : productOfHold(reference) === null
          ? undefined
          : await ordersRepo.findOrderByHold(db, reference);
    if (!order) throw errors.orderNotFound(reference);
    if (typeof reference === 'number') {
      const mayRead =
        caller.kind === 'admin' || (caller.kind === 'customer' && caller.customerId === order.customer_id);
      if (!mayRead) throw errors.orderNotFound(reference);
    } else {
      ownerCheck(trust, caller, order.customer_id, () => errors.orderNotFound(reference));
    }
    return shownTo(caller, toOrder(order));
  }

  /**
   * Puts a cancelled order's units back on sale, then notes it in Postgres (both steps are idempotent).
   * `stepLog`: the logger of the request that cancelled it (a payment failure), when one did.
   */
  async function releaseUnits(order: { id: number; hold_id: string }, stepLog: Logger = log): Promise<void> {
    const productId = productOfHold(order.hold_id);
    if (productId !== null) {
      let step = await commands.returnSoldUnits(productId, order.hold_id);
      if (step.kind === 'wrongHoldState' && step.status === 'converting') {
        // A crash left the conversion half done (its units still held): finish it, then return the units.
        await finishConversion(productId, order.hold_id, order.id, stepLog);
        step = await commands.returnSoldUnits(productId, order.hold_id);
      }
      if (step.kind === 'done') {
        soldOut.forget(productId);
        stepLog.info({ order_id: order.id, hold_id: order.hold_id }, 'order cancelled: units back on sale');
      } else if (step.kind !== 'unchanged') {
        stepLog.error(
          { order_id: order.id, hold_id: order.hold_id, outcome: step },
          'cancelled order whose units cannot be returned',
        );
      }
    }
    await ordersRepo.markUnitsReleased(db, order.id);
  }

  /**
   * One pass of order housekeeping: cancels orders unpaid by their deadline and returns their units, and
   * finishes returning units of cancelled orders that a crash or an outage interrupted.
   */
  async function settleOverdue(): Promise<{ cancelled: number; released: number; more: boolean }> {
    const cancelled = await db
      .transaction()
      .execute((trx) => ordersRepo.cancelOverdueOrders(trx, settings.settleBatch));
    for (const order of cancelled) {
      log.info({ order_id: order.id, hold_id: order.hold_id }, 'order payment deadline passed: cancelled');
    }
    if (cancelled.length > 0) {
      events.orderStatusChanged('cancelled', cancelled.length);
      events.recoveryAction('overdue_order_cancelled', cancelled.length);
      crashPoint('after-cancel-commit');
    }
    let released = 0;
    for (const order of await ordersRepo.ordersWithUnitsToRelease(db, settings.settleBatch)) {
      await releaseUnits(order);
      released++;
    }
    if (released > 0) events.recoveryAction('units_returned', released);
    return {
      cancelled: cancelled.length,
      released,
      more: cancelled.length === settings.settleBatch || released === settings.settleBatch,
    };
  }

  return { place, find, recoverClaim, releaseUnits, settleOverdue };
}

/** An order with its customer shown only to that customer and the admin (src/domain/callers.ts). */
export function shownTo(caller: Caller, order: Order): Order {
  return { ...order, customer_id: shownCustomerId(caller, order.customer_id) };
}

export function toOrder(order: ordersRepo.OrderWithItems): Order {
  return {
    order_id: order.id,
    hold_id: order.hold_id,
    customer_id: order.customer_id,
    status: order.status,
    payment_status: order.payment_status,
    total_cents: order.total_cents,
    payment_due_at: order.payment_due_at.toISOString(),
    items: order.items,
  };
}
