import pino from 'pino';
import { loadConfig } from '../config.js';
import { createDatabase } from '../db/connection.js';
import { migrateToLatest } from '../db/migrate.js';
import { ensureDatabase } from './local-services.js';

/** `npm run migrate`: applies pending migrations to DATABASE_URL (created when missing). */
const log = pino();
const config = loadConfig();
await ensureDatabase(config.DATABASE_URL);
const db = createDatabase({ url: config.DATABASE_URL, timeoutMs: 10_000, poolSize: 1 });
try {
  const results = await migrateToLatest(db);
  for (const r of results) log.info({ migration: r.migrationName, status: r.status }, 'migration');
  log.info({ applied: results.length }, 'database is up to date');
} finally {
  await db.destroy();
}
