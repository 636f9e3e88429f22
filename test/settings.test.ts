import { readFileSync } from 'node:fs';
import t from 'tap';
import { loadConfig } from '../src/config.js';
import { MAX_HOLD_BATCH, settingsFrom, SWEEP_LEASE_MS, SWEEP_PASS_BUDGET_MS } from '../src/settings.js';

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
    redisCommandTimeoutMs: 500,
    soldOutCacheMs: 20,
    orderPaymentTtlMs: 900_000,
    conversionLeaseMs: 10_000,
    settleBatch: 100,
    recoveryIntervalMs: 1000,
    redisLossCheckMs: 1000,
    sweepIntervalMs: 250,
    sweepBatchSize: 1000,
    sweepClaimSize: 50,
    sweepLeaseMs: 10_000,
    sweepPassBudgetMs: 200,
    productLoadBatch: 500,
    webhookSecrets: [],
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
  t.ok(SWEEP_LEASE_MS > 10 * SWEEP_PASS_BUDGET_MS, "a sweeper's lease outlasts its pass many times over");
});
