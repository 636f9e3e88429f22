import type { Product } from '../schemas/product.js';
import { PRODUCT_PAGE_MAX } from '../schemas/product.js';
import { EXIT, parseCommand, print, productIdArg, table, UsageError, withStores, type Command } from './command.js';

const USAGE = `
usage: flashsale stock [--product ID] [--json]
Every product's stock, held, sold and available units, read as GET /api/products reads them (a product Redis
lacks is loaded from Postgres first).
  --product ID   only this product (exit 1 when there is none)
  --json         the products as JSON, as the API answers them`;

/** `flashsale stock`: the live figures of every product, or of one. */
export const stock: Command = {
  async run(args) {
    const parsed = parseCommand(args, USAGE, {
      product: { type: 'string' },
      json: { type: 'boolean', default: false },
    });
    if (!parsed) return EXIT.OK;
    const { values, positionals } = parsed;
    if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
    const productId = values.product === undefined ? undefined : productIdArg(values.product, '--product id');
    return withStores(async ({ catalogue }) => {
      const products: Product[] = [];
      if (productId !== undefined) products.push(await catalogue.get(productId));
      else {
        for (let afterId = 0; ;) {
          const page = await catalogue.list({ limit: PRODUCT_PAGE_MAX, afterId });
          products.push(...page);
          if (page.length < PRODUCT_PAGE_MAX) break;
          afterId = page[page.length - 1]!.id;
        }
      }
      print(values.json, products, () =>
        products.length === 0
          ? 'no products'
          : table(
              ['id', 'name', 'stock', 'held', 'sold', 'available', 'limit'],
              products.map((p) => [
                p.id,
                p.name,
                p.stock,
                p.held,
                p.sold,
                p.available_stock,
                p.per_customer_limit ?? '-',
              ]),
            ),
      );
      return EXIT.OK;
    });
  },
};
