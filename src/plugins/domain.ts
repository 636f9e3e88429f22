import fp from 'fastify-plugin';
import { createHoldDesk, type HoldDesk } from '../domain/holds.js';
import { createCatalogue, type Catalogue } from '../domain/products.js';
import { runPeriodically, type Loop } from '../domain/loop.js';
import { createOrderDesk, type OrderDesk } from '../domain/orders.js';
import { createPaymentDesk, type PaymentDesk } from '../domain/payments.js';
import { createSoldOutCache } from '../domain/sold-out-cache.js';
import { startSweeper } from '../domain/sweeper.js';

declare module 'fastify' {
  interface FastifyInstance {
    catalogue: Catalogue;
    holds: HoldDesk;
    orders: OrderDesk;
    payments: PaymentDesk;
  }
}

/**
 * The rules: the catalogue, the hold, order and payment desks, and two loops: the sweeper (expired holds,
 * stale conversion claims) and order settlement (overdue payments, units of cancelled orders). At start every
 * product Redis lacks is loaded from Postgres before the app serves; both loops start at once and run until the
 * app closes, so recovery after a crash begins with the process.
 */
export default fp(
  async (app) => {
    const { redis, redisClock, db, config, log } = app;
    const soldOut = createSoldOutCache(config.SOLD_OUT_CACHE_MS);
    const catalogue = createCatalogue({ db, redis, config, log, soldOut });
    app.decorate('catalogue', catalogue);
    app.decorate('holds', createHoldDesk({ redis, clock: redisClock, config, catalogue, soldOut, log }));
    const orders = createOrderDesk({ db, redis, clock: redisClock, config, soldOut, log });
    app.decorate('orders', orders);
    app.decorate('payments', createPaymentDesk({ db, orders, log }));

    await catalogue.loadAll();

    const loops: Loop[] = [];
    app.addHook('onReady', async () => {
      if (config.SWEEP_INTERVAL_MS > 0) loops.push(startSweeper(redis, config, log, orders.recoverClaim));
      if (config.RECOVERY_INTERVAL_MS > 0) {
        loops.push(runPeriodically('order settlement', config.RECOVERY_INTERVAL_MS, orders.settleOverdue, log));
      }
    });
    // Registered after the stores plugin, so it runs before Redis and Postgres are closed.
    app.addHook('onClose', async () => {
      await Promise.all(loops.map((loop) => loop.stop()));
    });
  },
  { name: 'domain', dependencies: ['stores'] },
);
