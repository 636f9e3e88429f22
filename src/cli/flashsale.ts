import { InvalidConfigError } from '../config.js';
import { AppError } from '../errors.js';
import { EXIT, UsageError, type Command } from './command.js';

/**
 * `flashsale <command>`: the service and its operations, one program (bin/flashsale.js, `npm run cli --`). Each
 * command's module is loaded only when it runs, so `--help` and a short command do not load them all.
 */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  serve: { summary: 'run the service', load: async () => (await import('./serve.js')).serve },
  migrate: { summary: 'apply pending database migrations', load: async () => (await import('./migrate.js')).migrate },
  seed: { summary: 'add the demo products', load: async () => (await import('./seed.js')).seed },
  stock: {
    summary: 'stock, held, sold and available units per product',
    load: async () => (await import('./stock.js')).stock,
  },
  'expire-holds': {
    summary: 'release every expired hold now, printing what was released per product',
    load: async () => (await import('./expire-holds.js')).expireHolds,
  },
  reconcile: {
    summary: 'compare Redis with the hold records and Postgres; --repair fixes drift',
    load: async () => (await import('./reconcile.js')).reconcile,
  },
  inspect: {
    summary: 'the Redis keys and Postgres rows of a product, a hold or an order',
    load: async () => (await import('./inspect.js')).inspect,
  },
  restock: {
    summary: "set a product's total stock (the API's rule: never below held + sold)",
    load: async () => (await import('./restock.js')).restock,
  },
};

const USAGE = `usage: flashsale <command> [options]    (flashsale <command> --help for its options)

commands:
${Object.entries(COMMANDS)
  .map(([name, command]) => `  ${name.padEnd(14)}${command.summary}`)
  .join('\n')}

Settings come from the environment over .env, as the service reads them (.env.example lists them all).
exit codes: 0 done and clean; 1 a problem found (drift, a refusal, nothing by that id) or the work failed
(a store unreachable); 2 a usage error.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return name === undefined ? EXIT.USAGE : EXIT.OK;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`flashsale: unknown command ${name}\n${USAGE}\n`);
    return EXIT.USAGE;
  }
  try {
    return await (await entry.load()).run(args);
  } catch (err) {
    // parseArgs's own errors (unknown option, missing value) are usage errors too.
    const code = (err as { code?: unknown }).code;
    if (err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`flashsale ${name}: ${(err as Error).message}\n(flashsale ${name} --help for usage)\n`);
      return EXIT.USAGE;
    }
    if (err instanceof AppError) process.stderr.write(`flashsale ${name}: ${err.code}: ${err.message}\n`);
    else if (err instanceof InvalidConfigError) process.stderr.write(`flashsale ${name}: ${err.message}\n`);
    else process.stderr.write(`flashsale ${name} failed: ${(err as Error).message}\n`);
    return EXIT.PROBLEM;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`flashsale: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = EXIT.PROBLEM;
  },
);
