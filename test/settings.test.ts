import { readFileSync } from 'node:fs';
import t from 'tap';
import { loadConfig } from '../src/config.js';
import {
  MAX_HOLD_BATCH,
  settingsFrom,
  SWEEP_CLAIM_MAX,
  SWEEP_CLAIM_SHARE_OF_LEASE,
  SWEEP_STEP_MS_PER_HOLD,
  sweepClaimSize,
} from '../src/settings.js';

t.test('the default configuration gives these settings, in milliseconds', async (t) => {
  t.same(settingsFrom(loadConfig({})), {
    redisKeyPrefix: 'fs:',
    holdTtlMs: 120_000,
    holdRetainMs: 86_400_000,
    convertedHoldRetainMs: 86_400_000,
    idempotencyTtlMs: 86_400_000,
    maxQtyPerHold: 10,
    inlineExpiryLimit: 100,
    maxHoldBatch: 256,
    maxOrderBatch: 100,
    maxPaymentBatch: 100,
    redisCommandTimeoutMs: 500,
    soldOutCacheMs: 20,
    orderPaymentTtlMs: 900_000,
    conversionLeaseMs: 10_000,
    settleBatch: 100,
    recoveryIntervalMs: 1000,
    redisLossCheckMs: 1000,
    stockRebalanceMs: 200,
    sweepIntervalMs: 250,
    sweepBatchSize: 1000,
    sweepLeaseMs: 1000,
    sweepClaimSize: 10,
    sweepPassBudgetMs: 200,
    productLoadBatch: 500,
    webhookSecrets: [],
    memoryLogIntervalMs: 0,
    webhookAllowUnsigned: false,
    webhookRetainMs: 259_200_000,
    currency: 'USD',
  });
});

t.test('a converted hold is kept until its order can no longer be cancelled: twice the payment period', async (t) => {
  const longPayment = settingsFrom(loadConfig({ HOLD_RETAIN_SECONDS: '60', ORDER_PAYMENT_TTL_SECONDS: '3600' }));
  t.equal(longPayment.holdRetainMs, 60_000);
  t.equal(longPayment.convertedHoldRetainMs, 7_200_000, 'two payment periods, past the retention of other holds');
  const longRetention = settingsFrom(loadConfig({ HOLD_RETAIN_SECONDS: '86400', ORDER_PAYMENT_TTL_SECONDS: '60' }));
  t.equal(longRetention.convertedHoldRetainMs, 86_400_000, 'never shorter than the retention of other holds');
});

t.test('webhook secrets are split at commas, blanks dropped', async (t) => {
  t.same(settingsFrom(loadConfig({ WEBHOOK_SECRET: ' old , new,, ' })).webhookSecrets, ['old', 'new']);
});

t.test('settings are derived once and cannot be changed afterwards', async (t) => {
  const settings = settingsFrom(loadConfig({}));
  t.ok(Object.isFrozen(settings));
  t.ok(Object.isFrozen(settings.webhookSecrets));
});

t.test('limits the Lua scripts and the loops rely on', async (t) => {
  const script = readFileSync(new URL('../lua/reserveStock.lua', import.meta.url), 'utf8');
  const scriptBound = Number(/^local MAX_BATCH = (\d+)$/m.exec(script)?.[1]);
  t.equal(
    scriptBound,
    MAX_HOLD_BATCH,
    `reserveStock.lua takes batches of up to ${scriptBound}, the service sends up to ${MAX_HOLD_BATCH}`,
  );
  const defaults = settingsFrom(loadConfig({}));
  t.ok(
    defaults.sweepLeaseMs >= 2 * defaults.redisCommandTimeoutMs,
    'a live sweeper reschedules a product (one step, one ZADD, each within the command timeout) within its lease',
  );
});

t.test('a sweeper claims no more products than it sweeps in a quarter of their lease', async (t) => {
  const claimWork = (leaseMs: number, batch: number) => sweepClaimSize(leaseMs, batch) * batch * SWEEP_STEP_MS_PER_HOLD;
  for (const [leaseMs, batch] of [
    [1000, 1000],
    [1000, 100],
    [500, 2000],
    [3000, 1000],
  ] as const) {
    const size = sweepClaimSize(leaseMs, batch);
    t.ok(size >= 1 && size <= SWEEP_CLAIM_MAX, `lease ${leaseMs} ms, batch ${batch}: claims ${size}`);
    if (size > 1) t.ok(claimWork(leaseMs, batch) <= leaseMs * SWEEP_CLAIM_SHARE_OF_LEASE, 'its steps fit');
    if (size < SWEEP_CLAIM_MAX)
      t.ok((size + 1) * batch * SWEEP_STEP_MS_PER_HOLD > leaseMs * SWEEP_CLAIM_SHARE_OF_LEASE, 'one more would not');
  }
  t.equal(sweepClaimSize(100, 2000), 1, 'a lease shorter than a step still lets a sweeper claim one product');
  t.equal(sweepClaimSize(60_000, 1000), SWEEP_CLAIM_MAX, 'a long lease claims at most SWEEP_CLAIM_MAX');
  t.equal(
    settingsFrom(loadConfig({ SWEEP_LEASE_MS: '2000', SWEEP_BATCH_SIZE: '500' })).sweepClaimSize,
    sweepClaimSize(2000, 500),
    'the settings derive it from SWEEP_LEASE_MS and SWEEP_BATCH_SIZE',
  );
});
