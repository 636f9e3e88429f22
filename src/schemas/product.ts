import { Type, type Static } from '@sinclair/typebox';

/** Most stock buckets one product may be split into (src/redis/keys.ts bucketLabels). */
export const MAX_STOCK_BUCKETS = 16;

/** The largest Postgres `integer` (int4): products.id is one, generated from 1. */
export const PG_INTEGER_MAX = 2_147_483_647;

/**
 * A product id, wherever one arrives: a JSON body's `product_id`, a path's `:id`, the list's `after_id` (the
 * path and query string ones are read as numbers by readUrlIntegers). A larger number is refused here with 400,
 * rather than by Postgres with an error.
 */
export const ProductIdSchema = Type.Integer({ minimum: 1, maximum: PG_INTEGER_MAX });

const PRODUCT_EXAMPLE = {
  id: 7,
  name: 'Limited sneaker',
  price_cents: 12900,
  stock: 100,
  available_stock: 88,
  held: 4,
  sold: 8,
  per_customer_limit: 2,
  buckets: 1,
};

export const ProductSchema = Type.Object(
  {
    id: ProductIdSchema,
    name: Type.String(),
    price_cents: Type.Integer({ minimum: 0 }),
    stock: Type.Integer({ minimum: 0, description: 'total units for sale, including those held and sold' }),
    available_stock: Type.Integer({ minimum: 0, description: 'stock - held - sold' }),
    held: Type.Integer({ minimum: 0, description: 'units in active holds' }),
    sold: Type.Integer({ minimum: 0, description: 'units in orders that are not cancelled' }),
    per_customer_limit: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], {
      description: 'most units one customer may hold and buy; null: no limit',
    }),
    buckets: Type.Integer({
      minimum: 1,
      description: 'stock buckets the product is split into in Redis, each on its own slot (1: not split)',
    }),
  },
  { examples: [PRODUCT_EXAMPLE] },
);
export type Product = Static<typeof ProductSchema>;

export const ProductListSchema = Type.Array(ProductSchema, {
  examples: [
    [PRODUCT_EXAMPLE, { ...PRODUCT_EXAMPLE, id: 8, name: 'Tote bag', price_cents: 2500, per_customer_limit: null }],
  ],
});

export const NewProductSchema = Type.Object(
  {
    // No control characters (Postgres refuses NUL in text, and nobody wants a tab in a product name).
    name: Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\x00-\\x1f\\x7f]+$' }),
    price_cents: Type.Integer({ minimum: 0, maximum: 100_000_000_00 }),
    stock: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }),
    per_customer_limit: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()])),
    buckets: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_STOCK_BUCKETS,
        description:
          'split the stock into this many buckets on as many Redis Cluster slots, so one hot product is decided ' +
          'by several shards (default 1: not split); fixed once the product exists',
      }),
    ),
  },
  {
    additionalProperties: false,
    examples: [{ name: 'Limited sneaker', price_cents: 12900, stock: 100, per_customer_limit: 2 }],
  },
);
export type NewProduct = Static<typeof NewProductSchema>;

export const StockChangeSchema = Type.Object(
  { stock: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }) },
  { additionalProperties: false, examples: [{ stock: 150 }] },
);
export type StockChange = Static<typeof StockChangeSchema>;

/** Routes with these params read them with the readUrlIntegers hook. */
export const ProductParamsSchema = Type.Object({ id: ProductIdSchema });

export const PRODUCT_PAGE_DEFAULT = 100;
export const PRODUCT_PAGE_MAX = 1000;

/** The query of GET /api/products (read with the readUrlIntegers hook): products after `after_id`, or from the first. */
export const ProductListQuerySchema = Type.Object(
  {
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: PRODUCT_PAGE_MAX,
        description: `products per page, default ${PRODUCT_PAGE_DEFAULT}`,
      }),
    ),
    after_id: Type.Optional(ProductIdSchema),
  },
  { additionalProperties: false },
);
