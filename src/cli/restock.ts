import { EXIT, parseCommand, print, productIdArg, UsageError, withStores, type Command } from './command.js';

const USAGE = `
usage: flashsale restock ID STOCK [--json]
Sets product ID's total stock to STOCK through the same rule as PUT /api/products/ID/stock: refused (exit 1,
STOCK_BELOW_COMMITTED) below the units held and sold, PRODUCT_NOT_FOUND when there is no such product.
  --json   the product after the change as JSON`;

const STOCK_MAX = 1_000_000_000;

/** `flashsale restock`: the admin stock change, from a terminal. */
export const restock: Command = {
  async run(args) {
    const parsed = parseCommand(args, USAGE, { json: { type: 'boolean', default: false } });
    if (!parsed) return EXIT.OK;
    const [idText, stockText, ...rest] = parsed.positionals;
    if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`);
    const id = productIdArg(idText);
    if (stockText === undefined) throw new UsageError('missing STOCK');
    // As StockChangeSchema takes it: an integer from 0 to 10^9, in decimal digits.
    if (!/^(0|[1-9]\d{0,9})$/.test(stockText) || Number(stockText) > STOCK_MAX)
      throw new UsageError(`STOCK must be an integer from 0 to ${STOCK_MAX}: ${stockText}`);
    return withStores(async ({ catalogue }) => {
      const product = await catalogue.setStock(id, Number(stockText));
      print(
        parsed.values.json,
        product,
        () =>
          `product ${product.id}: stock ${product.stock}, held ${product.held}, sold ${product.sold}, available ${product.available_stock}`,
      );
      return EXIT.OK;
    });
  },
};
