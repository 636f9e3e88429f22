import pino from 'pino';
import { migrateToLatest } from '../db/migrate.js';
import { withEnvFile } from '../env-file.js';
import { EXIT, openStores, parseCommand, type Command } from './command.js';
import { ensureDatabase, ensureLocalServices } from './local-services.js';
import { loadConfig } from '../config.js';

const USAGE = `
usage: flashsale seed
Adds the demo products (those not already present by name), without needing ADMIN_TOKEN. Starts private
stores first, as npm start does, when none is configured or running.`;

const DEMO_PRODUCTS = [
  { name: 'Limited sneaker drop', price_cents: 18_999, stock: 100, per_customer_limit: 2 },
  { name: 'Console bundle', price_cents: 54_900, stock: 50, per_customer_limit: 1 },
  { name: 'Concert ticket', price_cents: 7_500, stock: 1_000 },
  { name: 'Hot SKU (load tests)', price_cents: 999, stock: 1_000_000 },
];

/** `flashsale seed` (`npm run seed`). */
export const seed: Command = {
  async run(args) {
    if (!parseCommand(args, USAGE, {})) return EXIT.OK;
    const env = withEnvFile(process.env);
    loadConfig(env); // a bad variable stops here, before any store is started
    const log = pino();
    const services = await ensureLocalServices(env, log);
    try {
      const config = loadConfig(env, { REDIS_URL: services.redisUrl, DATABASE_URL: services.databaseUrl });
      await ensureDatabase(config.DATABASE_URL);
      const stores = await openStores(config);
      try {
        await migrateToLatest(stores.db);
        const existing = new Set((await stores.db.selectFrom('products').select('name').execute()).map((p) => p.name));
        for (const product of DEMO_PRODUCTS) {
          if (existing.has(product.name)) {
            log.info({ name: product.name }, 'demo product already present');
            continue;
          }
          const created = await stores.catalogue.create(product);
          log.info({ product_id: created.id, name: created.name, stock: created.stock }, 'demo product added');
        }
      } finally {
        await stores.close();
      }
    } finally {
      await services.stop();
    }
    return EXIT.OK;
  },
};
