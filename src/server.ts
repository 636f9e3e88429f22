import pino from 'pino';
import { buildApp } from './app.js';
import { ensureDatabase, ensureLocalServices, type ServiceUrls } from './cli/local-services.js';
import { loadConfig } from './config.js';
import { createDatabase } from './db/connection.js';
import { migrateToLatest } from './db/migrate.js';

/** Starts the service: stores (private ones when none are configured or running), migrations, then HTTP. */
async function main(): Promise<void> {
  // Read before anything starts: a bad variable stops the start here, with a message naming it.
  const bootLog = pino({ level: loadConfig(process.env).LOG_LEVEL });
  const services = await ensureLocalServices(process.env, bootLog);
  try {
    await serve(services, bootLog);
  } catch (err) {
    await services.stop();
    throw err;
  }
}

async function serve(services: ServiceUrls, bootLog: pino.Logger): Promise<void> {
  const config = loadConfig(process.env, { REDIS_URL: services.redisUrl, DATABASE_URL: services.databaseUrl });

  await ensureDatabase(config.DATABASE_URL);
  const migrationDb = createDatabase({ url: config.DATABASE_URL, timeoutMs: 10_000, poolSize: 1 });
  try {
    for (const result of await migrateToLatest(migrationDb))
      bootLog.info({ migration: result.migrationName }, 'migration applied');
  } finally {
    await migrationDb.destroy();
  }

  const app = await buildApp(config);
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    app.log.info({ signal }, 'shutting down');
    // close() stops accepting connections, lets requests in flight finish, then closes Redis and Postgres.
    const force = setTimeout(() => process.exit(1), 10_000).unref();
    await app.close();
    await services.stop();
    clearTimeout(force);
    process.exit(0);
  };
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));

  await app.listen({ port: config.PORT, host: config.HOST });
}

main().catch((err: unknown) => {
  pino().fatal({ err }, (err as Error).message);
  process.exit(1);
});
