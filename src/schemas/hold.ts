import { Type, type Static } from '@sinclair/typebox';
import { ProductIdSchema } from './product.js';

export const HoldStatusSchema = Type.Union([
  Type.Literal('held'),
  Type.Literal('released'),
  Type.Literal('expired'),
  Type.Literal('converted'),
]);
export type HoldStatus = Static<typeof HoldStatusSchema>;

export const HoldSchema = Type.Object({
  hold_id: Type.String(),
  product_id: ProductIdSchema,
  qty: Type.Integer({ minimum: 1 }),
  customer_id: Type.Union([Type.String(), Type.Null()]),
  status: HoldStatusSchema,
  expires_at: Type.String({ format: 'date-time' }),
});
export type Hold = Static<typeof HoldSchema>;

export const CustomerIdSchema = Type.String({ minLength: 1, maxLength: 128, pattern: '^[\\x21-\\x7e]+$' });

/** The body of POST /api/holds; the largest qty comes from the configuration. */
export function newHoldSchema(maxQty: number) {
  return Type.Object(
    {
      product_id: ProductIdSchema,
      qty: Type.Integer({ minimum: 1, maximum: maxQty }),
      customer_id: Type.Optional(Type.Union([CustomerIdSchema, Type.Null()])),
    },
    { additionalProperties: false },
  );
}
export type NewHold = Static<ReturnType<typeof newHoldSchema>>;

export const HoldParamsSchema = Type.Object({ id: Type.String({ maxLength: 64 }) });

export const IdempotencyKeySchema = Type.String({ minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' });

/** 409 of POST /api/holds: a fixed shape, so it is serialised as fast as a grant. */
export const HoldRefusalSchema = Type.Object({
  code: Type.Union([Type.Literal('INSUFFICIENT_STOCK'), Type.Literal('CUSTOMER_LIMIT_EXCEEDED')]),
  message: Type.String(),
  available_stock: Type.Optional(Type.Integer()),
  requested: Type.Integer(),
  per_customer_limit: Type.Optional(Type.Integer()),
  customer_units: Type.Optional(Type.Integer()),
});
