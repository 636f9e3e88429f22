import { Type, type Static } from '@sinclair/typebox';

export const ProductIdSchema = Type.Integer({ minimum: 1, maximum: 2_147_483_647 });

export const ProductSchema = Type.Object({
  id: ProductIdSchema,
  name: Type.String(),
  price_cents: Type.Integer({ minimum: 0 }),
  stock: Type.Integer({ minimum: 0, description: 'total units for sale, including those held and sold' }),
  available_stock: Type.Integer({ minimum: 0, description: 'stock - held - sold' }),
  held: Type.Integer({ minimum: 0, description: 'units in active holds' }),
  sold: Type.Integer({ minimum: 0, description: 'units in orders that are not cancelled' }),
  per_customer_limit: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
});
export type Product = Static<typeof ProductSchema>;

export const NewProductSchema = Type.Object(
  {
    // No control characters (Postgres refuses NUL in text, and nobody wants a tab in a product name).
    name: Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\x00-\\x1f\\x7f]+$' }),
    price_cents: Type.Integer({ minimum: 0, maximum: 100_000_000_00 }),
    stock: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }),
    per_customer_limit: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()])),
  },
  { additionalProperties: false },
);
export type NewProduct = Static<typeof NewProductSchema>;

export const StockChangeSchema = Type.Object(
  { stock: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }) },
  { additionalProperties: false },
);
export type StockChange = Static<typeof StockChangeSchema>;

// Path parameters arrive as text and are not coerced (coercion would also coerce bodies), hence the pattern.
export const ProductParamsSchema = Type.Object({ id: Type.String({ pattern: '^[1-9][0-9]{0,9}$' }) });

export const ProductListQuerySchema = Type.Object(
  {
    limit: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,3}$', description: '1 to 1000, default 100' })),
    after_id: Type.Optional(Type.String({ pattern: '^[0-9]{1,10}$', description: 'list products after this id' })),
  },
  { additionalProperties: false },
);
