import cluster from 'node:cluster';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApp } from './app.js';
import { ensureDatabase, ensureLocalServices, type ServiceUrls } from './cli/local-services.js';
import { loadConfig, type Config } from './config.js';
import { createDatabase } from './db/connection.js';
import { migrateToLatest } from './db/migrate.js';
import { withEnvFile } from './env-file.js';
import { closeOnSignals } from './shutdown.js';
import { startWorkers, type WorkerGroup } from './workers.js';

/**
 * Starts the service: stores (private ones when none are configured or running), migrations, then HTTP; on
 * SIGTERM or SIGINT stops it (src/shutdown.ts): a drain (/readyz 503, answers close their connections), then no
 * new connections, requests in flight answered, background loops stopped after their pass, Redis and Postgres
 * closed, private stores stopped, exit 0.
 *
 * With WEB_CONCURRENCY > 1 this process is the primary of that many workers (src/workers.ts): it readies the
 * stores and runs the migrations once, then forks them; each worker serves the port and stops as one process
 * does, and the primary exits 0 once all of them have.
 */
async function main(): Promise<void> {
  const env = withEnvFile(process.env);
  // Read before anything starts: a bad variable stops the start here, with a message naming it.
  const { LOG_LEVEL, SHUTDOWN_GRACE_MS, SHUTDOWN_DRAIN_MS, WEB_CONCURRENCY } = loadConfig(env);
  const bootLog = pino({ level: LOG_LEVEL });
  const worker = cluster.isWorker;
  const primary = !worker && WEB_CONCURRENCY > 1;
  // What has started so far, for a signal that comes during the start.
  const started: { services?: ServiceUrls; app?: FastifyInstance; workers?: WorkerGroup } = {};
  // From here on, a signal stops whatever has started so far.
  closeOnSignals({
    // The primary outlasts its workers' own grace a little, so a worker that runs out of it says so itself.
    graceMs: primary ? SHUTDOWN_GRACE_MS + 1000 : SHUTDOWN_GRACE_MS,
    log: bootLog,
    close: async (signal) => {
      if (started.app) await drain(started.app, SHUTDOWN_DRAIN_MS);
      // close() stops accepting connections, lets requests in flight finish, stops the loops, closes the stores.
      await started.app?.close();
      // Private stores stop last, once every worker has closed its connections.
      try {
        await started.workers?.stop(signal);
      } finally {
        await started.services?.stop();
      }
    },
    onSecondSignal: (signal) => started.workers?.interrupt(signal),
  });
  // A worker's stores are the primary's, ready and migrated.
  const services: ServiceUrls = worker
    ? { redisUrl: env.REDIS_URL!, databaseUrl: env.DATABASE_URL!, stop: async () => {} }
    : await ensureLocalServices(env, bootLog);
  started.services = services;
  try {
    const config = loadConfig(env, { REDIS_URL: services.redisUrl, DATABASE_URL: services.databaseUrl });
    if (!worker) await migrate(config.DATABASE_URL, bootLog);
    if (primary) {
      started.workers = startWorkers({
        count: WEB_CONCURRENCY,
        env: { REDIS_URL: config.REDIS_URL, DATABASE_URL: config.DATABASE_URL },
        log: bootLog,
      });
      await started.workers.ready;
      bootLog.info({ workers: WEB_CONCURRENCY, port: config.PORT }, 'workers listening');
    } else started.app = await listen(config);
  } catch (err) {
    started.workers?.interrupt('SIGKILL');
    await services.stop();
    throw err;
  }
}

/** Creates the database when missing and applies the pending migrations. */
async function migrate(databaseUrl: string, bootLog: pino.Logger): Promise<void> {
  await ensureDatabase(databaseUrl);
  const migrationDb = createDatabase({ url: databaseUrl, timeoutMs: 10_000, poolSize: 1 });
  try {
    for (const result of await migrateToLatest(migrationDb))
      bootLog.info({ migration: result.migrationName }, 'migration applied');
  } finally {
    await migrationDb.destroy();
  }
}

async function listen(config: Config): Promise<FastifyInstance> {
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
