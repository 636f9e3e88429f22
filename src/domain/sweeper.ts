import type { Settings } from '../settings.js';
import type { Logger } from '../log.js';
import { noMetrics, type MetricsRecorder } from '../observability/metrics.js';
import type { RedisCommands } from '../redis/commands.js';
import { crashPoint } from './faults.js';
import { runPeriodically, type Loop } from './loop.js';

/** Decides a conversion claim whose lease ran out (see OrderDesk.recoverClaim). */
export type StaleClaimHandler = (productId: number, holdId: string, claimId: string) => Promise<void>;

export interface SweepResult {
  products: number;
  expired: number;
  purged: number;
  /** Conversion claims whose lease ran out, handed to recovery. */
  staleClaims: number;
  /** The pass stopped at its time budget with products still due. */
  more: boolean;
  /** The products where the pass had work, with what it did to each. */
  byProduct: ProductSweep[];
}

/** What a pass did to one product. */
export interface ProductSweep {
  product_id: number;
  expired: number;
  purged: number;
  stale_claims: number;
}

/**
 * One pass of the sweeper: releases the expired holds of every product whose sweep is due, in batches, and
 * purges records of holds ended longer ago than the retention period. Any number of instances may run passes
 * at once: products are leased to one of them, and each hold is released in the same script step that takes it
 * off the expiry index, so it is released exactly once. A pass claims a few products at a time (sweepClaimSize:
 * what it sweeps well within their lease) and reschedules each as soon as its step is done, which ends its lease;
 * so an instance that dies leaves at most one claim leased to it, taken over by another once the lease runs out.
 */
export async function releaseExpiredHolds(
  commands: RedisCommands,
  settings: Settings,
  log: Logger,
  onStaleClaim?: StaleClaimHandler,
  events: MetricsRecorder = noMetrics,
): Promise<SweepResult> {
  const result: SweepResult = { products: 0, expired: 0, purged: 0, staleClaims: 0, more: false, byProduct: [] };
  const started = Date.now();
  // A sweep plans the next one at most a hold time ahead (or a lease, while claimed): no hold made after it can
  // expire sooner. An instance with a longer HOLD_TTL_SECONDS, before a restart or beside this one in a rolling
  // deploy, plans further: bring such products within this instance's horizon. Without them, a cheap no-op.
  const horizonMs = Math.max(settings.holdTtlMs, settings.sweepLeaseMs);
  await commands.bringSweepsForward(Math.ceil(commands.now()) + horizonMs);
  for (;;) {
    if (Date.now() - started >= settings.sweepPassBudgetMs) {
      result.more = true;
      break;
    }
    // A bucketed product is on the schedule once per stock bucket: each bucket is swept on its own.
    const targets = await commands.claimDueProducts(settings.sweepClaimSize, settings.sweepLeaseMs);
    if (targets.length === 0) break;
    const steps = await Promise.all(
      targets.map(async ({ productId, label }) => {
        const step = await commands.releaseExpiredHolds(productId, settings.sweepBatchSize, label);
        if (step.expired > 0) crashPoint('after-sweep-step');
        await commands.scheduleSweep(productId, step.nextSweepAt, 'always', label);
        if (step.expired > 0) {
          events.holdsExpired(productId, step.expired);
          log.info({ product_id: productId, count: step.expired }, 'holds expired');
        }
        for (const { holdId, claimId } of step.staleClaims) {
          log.warn(
            { product_id: productId, hold_id: holdId, claim_id: claimId },
            'recovery: conversion claim outlived its lease',
          );
          // A failure (Postgres away) leaves the claim for the next lease: the script re-leased it.
          await onStaleClaim?.(productId, holdId, claimId).catch((err: unknown) =>
            log.error({ hold_id: holdId, err }, 'recovery of a conversion claim failed; retrying after its lease'),
          );
        }
        return {
          product_id: productId,
          expired: step.expired,
          purged: step.purged,
          stale_claims: step.staleClaims.length,
        };
      }),
    );
    result.products += targets.length;
    for (const step of steps) {
      result.expired += step.expired;
      result.purged += step.purged;
      result.staleClaims += step.stale_claims;
      if (step.expired + step.purged + step.stale_claims > 0) result.byProduct.push(step);
    }
  }
  return result;
}

/** Runs sweeper passes every `sweepIntervalMs`, at once again while expired holds are waiting. */
export function startSweeper(
  commands: RedisCommands,
  settings: Settings,
  log: Logger,
  onStaleClaim?: StaleClaimHandler,
  events: MetricsRecorder = noMetrics,
): Loop {
  return runPeriodically(
    'sweeper',
    settings.sweepIntervalMs,
    () => releaseExpiredHolds(commands, settings, log, onStaleClaim, events),
    log,
  );
}
