/**
 * How long the service takes to notice a Redis data loss and rebuild a catalogue from Postgres:
 * `node --import tsx bench/redis-rebuild.ts [products]` (default 10,000). It creates the products in a database of
 * its own, loads them into Redis under a key prefix of its own, deletes every key of that prefix (what a FLUSHALL
 * or an empty restart does to this deployment) and times one pass of the loss watcher; then cleans up.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import pino from 'pino';
import { loadConfig } from '../src/config.js';
import { createDatabase } from '../src/db/connection.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createRedisRebuilder } from '../src/domain/redis-rebuild.js';
import { createRedisCommands } from '../src/redis/commands.js';
import { connectRedis } from '../src/redis/connection.js';
import { settingsFrom } from '../src/settings.js';

const count = Number(process.argv[2] ?? 10_000);
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const adminUrl = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const name = `flashsale_rebuild_${randomBytes(4).toString('hex')}`;
const prefix = `bench:${randomBytes(4).toString('hex')}:`;

const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${name}`);
const url = new URL(adminUrl);
url.pathname = `/${name}`;
const config = loadConfig(
  {},
  { DATABASE_URL: url.toString(), REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix, LOG_LEVEL: 'silent' },
);
const db = createDatabase({ url: config.DATABASE_URL, timeoutMs: 30_000, poolSize: 4 });
const redis = await connectRedis({ url: redisUrl, commandTimeoutMs: 5000 });
const plain = new Redis(redisUrl);

/** Deletes every key of this run's prefix (SCAN + UNLINK, never FLUSHALL: the Redis may be shared). */
async function deleteDeploymentKeys(): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await plain.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await plain.unlink(...keys);
  } while (cursor !== '0');
}
try {
  await migrateToLatest(db);
  const direct = new pg.Client({ connectionString: config.DATABASE_URL });
  await direct.connect();
  await direct.query(
    `INSERT INTO products (name, price_cents, stock, per_customer_limit)
     SELECT 'product ' || g, 1000, 100, CASE WHEN g % 2 = 0 THEN 2 ELSE NULL END FROM generate_series(1, $1) g`,
    [count],
  );
  await direct.end();
  const commands = createRedisCommands(redis, settingsFrom(config));
  const rebuilder = createRedisRebuilder({ db, commands, log: pino({ level: 'silent' }) });

  let started = performance.now();
  const first = await rebuilder.checkAll();
  const loadMs = performance.now() - started;

  // The loss: every key of this deployment gone at once.
  await deleteDeploymentKeys();

  started = performance.now();
  const second = await rebuilder.checkAll();
  const rebuildMs = performance.now() - started;
  started = performance.now();
  const third = await rebuilder.checkAll();
  const checkMs = performance.now() - started;
  console.log(
    JSON.stringify({
      products: count,
      first_load: { ...first, ms: Math.round(loadMs) },
      rebuild_after_loss: { ...second, ms: Math.round(rebuildMs), per_product_ms: +(rebuildMs / count).toFixed(2) },
      watcher_pass_when_healthy: { ...third, ms: Math.round(checkMs) },
    }),
  );
} finally {
  await deleteDeploymentKeys();
  plain.disconnect();
  redis.disconnect();
  await db.destroy();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
}
