import { Type, type Static } from '@sinclair/typebox';
import { ERROR_EXAMPLES } from './error.js';
import { ProductIdSchema } from './product.js';

export const HoldStatusSchema = Type.Union([
  Type.Literal('held'),
  Type.Literal('released'),
  Type.Literal('expired'),
  Type.Literal('converted'),
]);
export type HoldStatus = Static<typeof HoldStatusSchema>;

export const HoldSchema = Type.Object(
  {
    hold_id: Type.String({ description: "`<product id>-<12 random characters>`: unguessable, the hold's reference" }),
    product_id: ProductIdSchema,
    qty: Type.Integer({ minimum: 1 }),
    customer_id: Type.Union([Type.String(), Type.Null()], {
      description: 'shown to its customer and the admin only; null to anyone else',
    }),
    status: HoldStatusSchema,
    expires_at: Type.String({ format: 'date-time' }),
  },
  {
    examples: [
      {
        hold_id: '7-Qm3xv0aZ_k9T',
        product_id: 7,
        qty: 2,
        customer_id: 'customer-1042',
        status: 'held',
        expires_at: '2026-12-02T09:02:00.000Z',
      },
    ],
  },
);
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
    {
      additionalProperties: false,
      examples: [
        { product_id: 7, qty: 2, customer_id: 'customer-1042' },
        { product_id: 7, qty: 1 },
      ],
    },
  );
}
export type NewHold = Static<ReturnType<typeof newHoldSchema>>;

export const HoldParamsSchema = Type.Object({ id: Type.String({ maxLength: 64, examples: ['7-Qm3xv0aZ_k9T'] }) });

export const IdempotencyKeySchema = Type.String({
  minLength: 1,
  maxLength: 255,
  pattern: '^[\\x21-\\x7e]+$',
  description: 'a repeat of the request with the same key is answered the first answer; scoped to the caller',
  examples: ['checkout-5f0c2a'],
});

/** 409 of POST /api/holds: a fixed shape, so it is serialised as fast as a grant. */
export const HoldRefusalSchema = Type.Object(
  {
    code: Type.Union([Type.Literal('INSUFFICIENT_STOCK'), Type.Literal('CUSTOMER_LIMIT_EXCEEDED')]),
    message: Type.String(),
    available_stock: Type.Optional(Type.Integer({ description: 'INSUFFICIENT_STOCK: units left' })),
    requested: Type.Integer(),
    per_customer_limit: Type.Optional(Type.Integer({ description: 'CUSTOMER_LIMIT_EXCEEDED: the limit' })),
    customer_units: Type.Optional(
      Type.Integer({ description: 'CUSTOMER_LIMIT_EXCEEDED: units the customer holds or bought' }),
    ),
  },
  {
    description: 'Refused for want of units: INSUFFICIENT_STOCK, CUSTOMER_LIMIT_EXCEEDED',
    examples: [ERROR_EXAMPLES.INSUFFICIENT_STOCK, ERROR_EXAMPLES.CUSTOMER_LIMIT_EXCEEDED],
  },
);
