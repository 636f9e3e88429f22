import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApp } from './app.js';
import { ensureDatabase, ensureLocalServices, type ServiceUrls } from './cli/local-services.js';
import { loadConfig } from './config.js';
import { createDatabase } from './db/connection.js';
import { migrateToLatest } from './db/migrate.js';
import { withEnvFile } from './env-file.js';
import { closeOnSignals } from './shutdown.js';

/**
 * Starts the service: stores (private ones when none are configured or running), migrations, then HTTP; on
 * SIGTERM or SIGINT stops it (src/shutdown.ts): a drain (/readyz 503, answers close their connections), then no
 * new connections, requests in flight answered, background loops stopped after their pass, Redis and Postgres
 * closed, private stores stopped, exit 0.
 */
async function main(): Promise<void> {
  const env = withEnvFile(process.env);
  // Read before anything starts: a bad variable stops the start here, with a message naming it.
  const { LOG_LEVEL, SHUTDOWN_GRACE_MS, SHUTDOWN_DRAIN_MS } = loadConfig(env);
  const bootLog = pino({ level: LOG_LEVEL });
  // What has started so far, for a signal that comes during the start.
  const started: { services?: ServiceUrls; app?: FastifyInstance } = {};
  // From here on, a signal stops whatever has started so far.
  closeOnSignals({
    graceMs: SHUTDOWN_GRACE_MS,
    log: bootLog,
    close: async () => {
      if (started.app) await drain(started.app, SHUTDOWN_DRAIN_MS);
      // close() stops accepting connections, lets requests in flight finish, stops the loops, closes the stores.
      await started.app?.close();
      await started.services?.stop();
    },
  });
  const services = await ensureLocalServices(env, bootLog);
  started.services = services;
  try {
    started.app = await start(env, services, bootLog);
  } catch (err) {
    await services.stop();
    throw err;
  }
}

async function start(env: NodeJS.ProcessEnv, services: ServiceUrls, bootLog: pino.Logger): Promise<FastifyInstance> {
  const config = loadConfig(env, { REDIS_URL: services.redisUrl, DATABASE_URL: services.databaseUrl });

  await ensureDatabase(config.DATABASE_URL);
  const migrationDb = createDatabase({ url: config.DATABASE_URL, timeoutMs: 10_000, poolSize: 1 });
  try {
    for (const result of await migrateToLatest(migrationDb))
      bootLog.info({ migration: result.migrationName }, 'migration applied');
  } finally {
    await migrationDb.destroy();
  }

  const app = await buildApp(config);
  try {
    await app.listen({ port: config.PORT, host: config.HOST });
  } catch (err) {
    await app.close();
    throw err;
  }
  return app;
}

main().catch((err: unknown) => {
  pino().fatal({ err }, (err as Error).message);
  process.exit(1);
});

/**
 * Keeps serving for up to `ms` while draining (answers close their connections, /readyz says 503), so a load
 * balancer moves away and keep-alive clients reconnect elsewhere; ends early once no connection is open.
 */
async function drain(app: FastifyInstance, ms: number): Promise<void> {
  app.startDraining();
  const started = Date.now();
  const open = () =>
    new Promise<number>((resolve, reject) => app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
  // The connections at each end of the drain say how a stop went: those left at its end are closed by close().
  app.log.info({ connections: await open(), drain_ms: ms }, 'draining');
  let connections: number;
  while ((connections = await open()) > 0 && Date.now() - started < ms) await new Promise((r) => setTimeout(r, 20));
  app.log.info({ connections, ms: Date.now() - started }, 'drained: closing');
}
