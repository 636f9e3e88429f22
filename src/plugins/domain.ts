import fp from 'fastify-plugin';
import { createHoldDesk, type HoldDesk } from '../domain/holds.js';
import { createCatalogue, type Catalogue } from '../domain/products.js';
import { startSweeper, type Sweeper } from '../domain/sweeper.js';

declare module 'fastify' {
  interface FastifyInstance {
    catalogue: Catalogue;
    holds: HoldDesk;
  }
}

/**
 * The rules: the catalogue, the hold desk and the sweeper. At start every product Redis lacks is loaded from
 * Postgres before the app serves; the sweeper runs until the app closes.
 */
export default fp(
  async (app) => {
    const { redis, redisClock, db, config, log } = app;
    const catalogue = createCatalogue({ db, redis, config, log });
    app.decorate('catalogue', catalogue);
    app.decorate('holds', createHoldDesk({ redis, clock: redisClock, config, catalogue, log }));

    await catalogue.loadAll();

    let sweeper: Sweeper | undefined;
    if (config.SWEEP_INTERVAL_MS > 0) {
      app.addHook('onReady', async () => {
        sweeper = startSweeper(redis, config, log);
      });
    }
    // Registered after the stores plugin, so it runs before Redis is closed.
    app.addHook('onClose', async () => {
      await sweeper?.stop();
    });
  },
  { name: 'domain', dependencies: ['stores'] },
);
