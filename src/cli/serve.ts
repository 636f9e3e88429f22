import { EXIT, parseCommand, UsageError, type Command } from './command.js';

const USAGE = `
usage: flashsale serve
Runs the service (as npm start): stores (private ones when none is configured or answering), migrations, HTTP.
Settings from the environment over .env (see .env.example). Logs JSON lines on stdout. SIGTERM or SIGINT stops
it with grace (SHUTDOWN_GRACE_MS): exit 0, or 1 when the grace period ran out.`;

/** `flashsale serve` (`npm start`). */
export const serve: Command = {
  async run(args) {
    const parsed = parseCommand(args, USAGE, {});
    if (!parsed) return EXIT.OK;
    if (parsed.positionals.length > 0) throw new UsageError(`unexpected argument: ${parsed.positionals[0]}`);
    // The server module starts the service when loaded, and exits the process itself when it stops.
    await import('../server.js');
    return new Promise<number>(() => {});
  },
};
