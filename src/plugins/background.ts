import fp from 'fastify-plugin';
import { runPeriodically, type Loop } from '../domain/loop.js';
import { startSweeper } from '../domain/sweeper.js';

/**
 * The service's own work besides answering requests, all in one place. At start, every product Redis lacks is
 * loaded from Postgres before the app serves. Then two loops run until the app closes: the sweeper (expired
 * holds, stale conversion claims) and order settlement (overdue payments, units of cancelled orders), so
 * recovery after a crash begins with the process.
 */
export default fp(
  async (app) => {
    const { redisCommands, config, log, catalogue, orders } = app;
    await catalogue.loadAll();

    const loops: Loop[] = [];
    app.addHook('onReady', async () => {
      if (config.SWEEP_INTERVAL_MS > 0) loops.push(startSweeper(redisCommands, config, log, orders.recoverClaim));
      if (config.RECOVERY_INTERVAL_MS > 0) {
        loops.push(runPeriodically('order settlement', config.RECOVERY_INTERVAL_MS, orders.settleOverdue, log));
      }
    });
    // Registered after the stores plugin, so it runs before Redis and Postgres are closed.
    app.addHook('onClose', async () => {
      await Promise.all(loops.map((loop) => loop.stop()));
    });
  },
  { name: 'background', dependencies: ['stores', 'domain'] },
);
