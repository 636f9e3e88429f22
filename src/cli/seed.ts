import pino from 'pino';
import { loadConfig } from '../config.js';
import { createDatabase } from '../db/connection.js';
import { migrateToLatest } from '../db/migrate.js';
import { createCatalogue } from '../domain/products.js';
import { createRedisRebuilder } from '../domain/redis-rebuild.js';
import { createRedisCommands } from '../redis/commands.js';
import { connectRedis } from '../redis/connection.js';
import { settingsFrom } from '../settings.js';
import { ensureDatabase, ensureLocalServices } from './local-services.js';

/** `npm run seed`: adds demo products (those not already present by name), without needing ADMIN_TOKEN. */
const DEMO_PRODUCTS = [
  { name: 'Limited sneaker drop', price_cents: 18_999, stock: 100, per_customer_limit: 2 },
  { name: 'Console bundle', price_cents: 54_900, stock: 50, per_customer_limit: 1 },
  { name: 'Concert ticket', price_cents: 7_500, stock: 1_000 },
  { name: 'Hot SKU (load tests)', price_cents: 999, stock: 1_000_000 },
];

const log = pino();
const services = await ensureLocalServices(process.env, log);
try {
  const config = loadConfig(process.env, { REDIS_URL: services.redisUrl, DATABASE_URL: services.databaseUrl });
  await ensureDatabase(config.DATABASE_URL);
  const db = createDatabase({ url: config.DATABASE_URL, timeoutMs: 10_000, poolSize: 2 });
  const redis = await connectRedis({ url: config.REDIS_URL, commandTimeoutMs: 2000 });
  try {
    await migrateToLatest(db);
    const commands = createRedisCommands(redis, settingsFrom(config));
    const rebuilder = createRedisRebuilder({ db, commands, log });
    const catalogue = createCatalogue({ db, commands, rebuilder, log });
    const existing = new Set((await db.selectFrom('products').select('name').execute()).map((p) => p.name));
    for (const product of DEMO_PRODUCTS) {
      if (existing.has(product.name)) {
        log.info({ name: product.name }, 'demo product already present');
        continue;
      }
      const created = await catalogue.create(product);
      log.info({ product_id: created.id, name: created.name, stock: created.stock }, 'demo product added');
    }
  } finally {
    await db.destroy();
    await redis.quit();
  }
} finally {
  await services.stop();
}
