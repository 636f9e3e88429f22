import { InvalidConfigError } from '../config.js';
import { AppError } from '../errors.js';
import { EXIT, UsageError, type Command } from './command.js';
import { expireHolds } from './expire-holds.js';
import { inspect } from './inspect.js';
import { migrate } from './migrate.js';
import { reconcile } from './reconcile.js';
import { restock } from './restock.js';
import { seed } from './seed.js';
import { serve } from './serve.js';
import { stock } from './stock.js';

/** `flashsale <command>`: the service and its operations, one program (bin/flashsale.js, `npm run cli --`). */
const COMMANDS: Record<string, Command> = {
  serve,
  migrate,
  seed,
  stock,
  'expire-holds': expireHolds,
  reconcile,
  inspect,
  restock,
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
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`flashsale: unknown command ${name}\n${USAGE}\n`);
    return EXIT.USAGE;
  }
  try {
    return await command.run(args);
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
