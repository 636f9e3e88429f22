import fp from 'fastify-plugin';
import { runPeriodically, type Loop } from '../domain/loop.js';
import { startSweeper } from '../domain/sweeper.js';
import { createDriftCheck } from '../observability/drift-check.js';

// Products due on the sweep schedule whose oldest hold the sweeper lag gauge looks at, at each scrape.
const SWEEP_LAG_PRODUCTS = 10;

/**
 * The service's own work besides answering requests, all in one place. At start, every product Redis lacks is
 * loaded from Postgres before the app serves. Then loops run until the app closes: the sweeper (expired
 * holds, stale conversion claims), the stock rebalancer of bucketed products (moves between buckets, and those a
 * crash left half-done) and order settlement (overdue payments, units of cancelled orders), so
 * recovery after a crash begins with the process. Order settlement also runs the retention of webhook deliveries
 * for orders that do not exist. With MEMORY_LOG_INTERVAL_MS set, another loop logs the process's memory
 * (bench/scenarios/soak.ts reads it to see whether the heap grows over a long run). With metrics on, the
 * sampled drift check (src/observability/drift-check.ts) runs every METRICS_DRIFT_CHECK_MS, and the scrape-time
 * gauges are given the stores.
 */
export default fp(
  async (app) => {
    const { redisCommands, settings, log, catalogue, orders, payments, rebuilder, rebalancer } = app;
    await catalogue.loadAll();

    const loops: Loop[] = [];
    app.addHook('onReady', async () => {
      if (settings.sweepIntervalMs > 0)
        loops.push(startSweeper(redisCommands, settings, log, orders.recoverClaim, app.metricEvents));
      if (settings.redisLossCheckMs > 0) {
        loops.push(runPeriodically('redis loss watcher', settings.redisLossCheckMs, rebuilder.watch, log));
      }
      if (settings.stockRebalanceMs > 0) {
        loops.push(runPeriodically('stock rebalancer', settings.stockRebalanceMs, rebalancer.pass, log));
      }
      if (settings.recoveryIntervalMs > 0) {
        loops.push(runPeriodically('order settlement', settings.recoveryIntervalMs, orders.settleOverdue, log));
        // At the same pace: a pass that finds nothing to delete is one indexed query.
        loops.push(
          runPeriodically('webhook retention', settings.recoveryIntervalMs, payments.purgeOrphanDeliveries, log),
        );
      }
      const { metrics } = app;
      if (metrics) {
        metrics.readFrom({
          productFigures: redisCommands.productFigures,
          oldestDueExpiry: () => redisCommands.oldestDueExpiry(app.redisClock.now(), SWEEP_LAG_PRODUCTS),
          now: app.redisClock.now,
        });
        if (app.config.METRICS_DRIFT_CHECK_MS > 0) {
          const checkSample = createDriftCheck({
            db: app.db,
            redis: app.redis,
            prefix: settings.redisKeyPrefix,
            sample: app.config.METRICS_DRIFT_SAMPLE,
            holdRecordCounts: redisCommands.holdRecordCounts,
            report: metrics.setDrift,
          });
          // Not at start: the start's own work (loading the catalogue) comes first.
          const every = app.config.METRICS_DRIFT_CHECK_MS;
          loops.push(runPeriodically('drift check', every, checkSample, log, every));
        }
      }
      if (settings.memoryLogIntervalMs > 0) {
        // Setting the interval is the request for these lines: they are written at info whatever LOG_LEVEL.
        const memoryLog = app.log.child({}, { level: 'info' });
        const report = async () => {
          memoryLog.info({ memory: process.memoryUsage() }, 'memory usage');
          return {};
        };
        loops.push(runPeriodically('memory report', settings.memoryLogIntervalMs, report, log));
      }
    });
    // Registered after the stores plugin, so it runs before Redis and Postgres are closed.
    app.addHook('onClose', async () => {
      await Promise.all(loops.map((loop) => loop.stop()));
    });
  },
  { name: 'background', dependencies: ['stores', 'domain'] },
);
