import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { createDatabase } from '../db/connection.js';
import { formatReport, reconcile } from '../domain/reconcile.js';
import { connectRedis } from '../redis/connection.js';

/**
 * `npm run reconcile -- --check | --repair [--json] [--product ID]...`: compares every product's Redis counters
 * with its hold records and Postgres (src/domain/reconcile.ts), and with --repair fixes what it can.
 * Exit codes: 0 clean (after the repair, with --repair), 1 drift found (or left after --repair), 2 bad
 * arguments or a store that cannot be reached.
 */
const USAGE = 'usage: npm run reconcile -- [--check | --repair] [--json] [--product ID]...';

const EXIT = { CLEAN: 0, DRIFT: 1, FAILURE: 2 } as const;

function parse(): { repair: boolean; json: boolean; productIds: number[] | undefined } {
  const { values } = parseArgs({
    options: {
      check: { type: 'boolean', default: false },
      repair: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      product: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(EXIT.CLEAN);
  }
  if (values.check && values.repair) throw new Error('--check and --repair exclude each other');
  const productIds = values.product?.map((text) => {
    if (!/^[1-9]\d{0,9}$/.test(text)) throw new Error(`--product: not a product id: ${text}`);
    return Number(text);
  });
  return { repair: values.repair, json: values.json, productIds };
}

let options: ReturnType<typeof parse>;
try {
  options = parse();
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
  process.exit(EXIT.FAILURE);
}

try {
  const config = loadConfig();
  const db = createDatabase({ url: config.DATABASE_URL, timeoutMs: config.DATABASE_TIMEOUT_MS, poolSize: 8 });
  // A repair script reads a product's whole holds hash: give it longer than a request gets.
  const redis = await connectRedis({ url: config.REDIS_URL, commandTimeoutMs: 10_000 });
  try {
    const report = await reconcile({
      db,
      redis,
      prefix: config.REDIS_KEY_PREFIX,
      repair: options.repair,
      ...(options.productIds ? { productIds: options.productIds } : {}),
    });
    process.stdout.write(`${options.json ? JSON.stringify(report, null, 2) : formatReport(report)}\n`);
    process.exitCode = report.clean ? EXIT.CLEAN : EXIT.DRIFT;
  } finally {
    await db.destroy();
    await redis.quit();
  }
} catch (err) {
  process.stderr.write(`reconcile failed: ${(err as Error).message}\n`);
  process.exitCode = EXIT.FAILURE;
}
