import { formatReport, reconcile as check } from '../domain/reconcile.js';
import { EXIT, parseCommand, print, productIdArg, UsageError, withStores, type Command } from './command.js';

const USAGE = `
usage: flashsale reconcile [--check | --repair] [--json] [--product ID]...
Compares every product's Redis counters with its hold records and Postgres (src/domain/reconcile.ts); with
--repair fixes what it can, then checks again.
  --check        only report (the default)
  --repair       fix what Postgres and the hold records can fix
  --product ID   only this product (repeatable)
  --json         the report as JSON
exit: 0 clean (after the repair, with --repair), 1 drift found or left, or a store unreachable, 2 bad arguments`;

/** `flashsale reconcile` (`npm run reconcile`). */
export const reconcile: Command = {
  async run(args) {
    const parsed = parseCommand(args, USAGE, {
      check: { type: 'boolean', default: false },
      repair: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      product: { type: 'string', multiple: true },
    });
    if (!parsed) return EXIT.OK;
    const { values, positionals } = parsed;
    if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
    if (values.check && values.repair) throw new UsageError('--check and --repair exclude each other');
    const productIds = values.product?.map((text) => productIdArg(text, '--product id'));
    return withStores(async ({ db, redis, config }) => {
      const report = await check({
        db,
        redis,
        prefix: config.REDIS_KEY_PREFIX,
        repair: values.repair,
        ...(productIds ? { productIds } : {}),
      });
      print(values.json, report, () => formatReport(report));
      return report.clean ? EXIT.OK : EXIT.PROBLEM;
    });
  },
};
