import { Type, type Static } from '@sinclair/typebox';
import { ProductIdSchema } from './product.js';

export const OrderStatusSchema = Type.Union(
  ['pending_payment', 'paid', 'cancelled', 'refund_required'].map((s) => Type.Literal(s)),
);
export const PaymentStatusSchema = Type.Union(['pending', 'processing', 'completed', 'failed'].map((s) => Type.Literal(s)));

export const OrderItemSchema = Type.Object({
  product_id: ProductIdSchema,
  qty: Type.Integer({ minimum: 1 }),
  unit_price_cents: Type.Integer({ minimum: 0 }),
  subtotal_cents: Type.Integer({ minimum: 0 }),
});

export const OrderSchema = Type.Object({
  order_id: Type.Integer({ minimum: 1 }),
  hold_id: Type.String(),
  customer_id: Type.Union([Type.String(), Type.Null()]),
  status: OrderStatusSchema,
  payment_status: PaymentStatusSchema,
  total_cents: Type.Integer({ minimum: 0 }),
  payment_due_at: Type.String({ format: 'date-time' }),
  items: Type.Array(OrderItemSchema),
});
export type Order = Static<typeof OrderSchema>;

const PaymentMethodSchema = Type.String({ minLength: 1, maxLength: 64, pattern: '^[\\x20-\\x7e]+$' });

export const NewOrderSchema = Type.Object(
  {
    hold_id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[\\x21-\\x7e]+$' }),
    payment_method: Type.Optional(PaymentMethodSchema),
    /** Accepted as an alias of payment_method: the seed's clients send it under this name. */
    payment_status: Type.Optional(PaymentMethodSchema),
  },
  { additionalProperties: false },
);
export type NewOrder = Static<typeof NewOrderSchema>;

export const OrderParamsSchema = Type.Object({ id: Type.String({ pattern: '^[1-9][0-9]{0,15}$' }) });

/** A payment provider's webhook: these fields are read, every other field is kept as the payment's payload. */
export const PaymentWebhookSchema = Type.Object(
  {
    idempotency_key: Type.String({ minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' }),
    order_id: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    event_type: Type.Union([Type.Literal('success'), Type.Literal('failure')]),
  },
  { additionalProperties: true },
);
export type PaymentWebhook = Static<typeof PaymentWebhookSchema>;

export const PaymentOutcomeSchema = Type.Object({
  order_id: Type.Integer({ minimum: 1 }),
  status: OrderStatusSchema,
  payment_status: PaymentStatusSchema,
});
export type PaymentOutcome = Static<typeof PaymentOutcomeSchema>;
