import fp from 'fastify-plugin';
import { createHoldDesk, type HoldDesk } from '../domain/holds.js';
import { createOrderDesk, type OrderDesk } from '../domain/orders.js';
import { createPaymentDesk, type PaymentDesk } from '../domain/payments.js';
import { createCatalogue, type Catalogue } from '../domain/products.js';
import { createRedisRebuilder, type RedisRebuilder } from '../domain/redis-rebuild.js';
import { createSoldOutCache } from '../domain/sold-out-cache.js';

declare module 'fastify' {
  interface FastifyInstance {
    catalogue: Catalogue;
    rebuilder: RedisRebuilder;
    holds: HoldDesk;
    orders: OrderDesk;
    payments: PaymentDesk;
  }
}

/** The rules: the catalogue and the hold, order and payment desks, wired to the stores. */
export default fp<{ now?: () => number }>(
  async (app, { now }) => {
    const { redisCommands: commands, redisClock: clock, db, settings, log, metricEvents: events } = app;
    const soldOut = createSoldOutCache(settings.soldOutCacheMs, { now });
    const rebuilder = createRedisRebuilder({ db, commands, log, events });
    const catalogue = createCatalogue({ db, commands, rebuilder, log, soldOut });
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
    app.decorate(
      'holds',
      createHoldDesk({ commands, settings, catalogue, rebuilder, soldOut, trust: app.customerTrust, log, events }),
    );
    app.decorate('orders', orders);
    app.decorate('payments', createPaymentDesk({ db, orders, log, settings, events }));
  },
  { name: 'domain', dependencies: ['metrics', 'stores', 'callers'] },
);
