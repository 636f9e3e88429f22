import pino from 'pino';
import { createDatabase } from '../db/connection.js';
import { migrateToLatest } from '../db/migrate.js';
import { commandConfig, EXIT, parseCommand, type Command } from './command.js';
import { ensureDatabase } from './local-services.js';

const USAGE = `
usage: flashsale migrate
Applies pending migrations to DATABASE_URL (the database is created when missing). Logs JSON lines on stdout.`;

/** `flashsale migrate` (`npm run migrate`). */
export const migrate: Command = {
  async run(args) {
    const parsed = parseCommand(args, USAGE, {});
    if (!parsed) return EXIT.OK;
    const log = pino();
    const config = commandConfig();
    await ensureDatabase(config.DATABASE_URL);
    const db = createDatabase({ url: config.DATABASE_URL, timeoutMs: 10_000, poolSize: 1 });
    try {
      const results = await migrateToLatest(db);
      for (const r of results) log.info({ migration: r.migrationName, status: r.status }, 'migration');
      log.info({ applied: results.length }, 'database is up to date');
    } finally {
      await db.destroy();
    }
    return EXIT.OK;
  },
};
