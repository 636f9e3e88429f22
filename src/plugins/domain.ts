import fp from 'fastify-plugin';
import { createHoldDesk, type HoldDesk } from '../domain/holds.js';
import { createOrderDesk, type OrderDesk } from '../domain/orders.js';
import { createPaymentDesk, type PaymentDesk } from '../domain/payments.js';
import { createCatalogue, type Catalogue } from '../domain/products.js';
import { createRebalancer, type Rebalancer } from '../domain/rebalancer.js';
import { createRedisRebuilder, type RedisRebuilder } from '../domain/redis-rebuild.js';
import { createSoldOutCache } from '../domain/sold-out-cache.js';

declare module 'fastify' {
  interface FastifyInstance {
    catalogue: Catalogue;
    rebuilder: RedisRebuilder;
    rebalancer: Rebalancer;
    holds: HoldDesk;
    orders: OrderDesk;
    payments: PaymentDesk;
  }
}

/** The rules: the catalogue, the stock rebalancer and the hold, order and payment desks, wired to the stores. */
export default fp<{ now?: () => number }>(
  async (app, { now }) => {
    const { redisCommands: commands, redisClock: clock, db, settings, log, metricEvents: events } = app;
    const soldOut = createSoldOutCache(settings.soldOutCacheMs, { now });
    const rebuilder = createRedisRebuilder({ db, commands, log, events });
    const rebalancer = createRebalancer({ db, commands, log });
    const catalogue = createCatalogue({ db, commands, rebuilder, rebalancer, log, soldOut });
    const orders = createOrderDesk({
      db,
      commands,
      rebuilder,
      clock,
      settings,
      soldOut,
      trust: app.customerTrust,
      log,
      events,
    });
    app.decorate('catalogue', catalogue);
    app.decorate('rebuilder', rebuilder);
    app.decorate('rebalancer', rebalancer);
    app.decorate(
      'holds',
      createHoldDesk({
        commands,
        settings,
        catalogue,
        rebuilder,
        rebalancer,
        soldOut,
        trust: app.customerTrust,
        log,
        events,
      }),
    );
    app.decorate('orders', orders);
    app.decorate('payments', createPaymentDesk({ db, orders, log, settings, events }));
  },
  { name: 'domain', dependencies: ['metrics', 'stores', 'callers'] },
);
