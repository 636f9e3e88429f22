import { Type, type Static } from '@sinclair/typebox';
import { ProductIdSchema } from './product.js';

/**
 * An order's status; src/db/schema.ts says which count as sold. The orders table's CHECK lists the same. Spelled
 * out, not mapped from a list: a mapped list would type the status as any string.
 */
export const OrderStatusSchema = Type.Union([
  Type.Literal('pending_payment'),
  Type.Literal('paid'),
  Type.Literal('cancelled'),
  Type.Literal('refund_required'),
]);
export type OrderStatus = Static<typeof OrderStatusSchema>;

/** The status of an order's payment (orders.payment_status, payments.status). */
export const PaymentStatusSchema = Type.Union([
  Type.Literal('pending'),
  Type.Literal('processing'),
  Type.Literal('completed'),
  Type.Literal('failed'),
]);
export type PaymentStatus = Static<typeof PaymentStatusSchema>;

/**
 * An order id, in a path's `:id` (read as a number by readUrlIntegers), a webhook's `order_id` and every answer.
 * orders.id is a Postgres bigint counting from 1, read as a JavaScript number (src/db/connection.ts). Up to 10^16
 * (16 digits): an unknown id that long is still 404; a longer one is 400, well before Postgres would refuse it
 * as past bigint (a 500). Ids past 2^53 are read inexactly, but the sequence will never reach them.
 */
export const OrderIdSchema = Type.Integer({ minimum: 1, maximum: 1e16 });

export const OrderItemSchema = Type.Object({
  product_id: ProductIdSchema,
  qty: Type.Integer({ minimum: 1 }),
  unit_price_cents: Type.Integer({ minimum: 0 }),
  subtotal_cents: Type.Integer({ minimum: 0 }),
});

export const OrderSchema = Type.Object(
  {
    order_id: OrderIdSchema,
    hold_id: Type.String({ description: 'the hold the order was made from: its public reference' }),
    customer_id: Type.Union([Type.String(), Type.Null()], {
      description: 'shown to its customer and the admin only; null to anyone else',
    }),
    status: OrderStatusSchema,
    payment_status: PaymentStatusSchema,
    total_cents: Type.Integer({ minimum: 0 }),
    payment_due_at: Type.String({
      format: 'date-time',
      description: 'unpaid by then, the order is cancelled and its units go back on sale',
    }),
    items: Type.Array(OrderItemSchema),
  },
  {
    examples: [
      {
        order_id: 42,
        hold_id: '7-Qm3xv0aZ_k9T',
        customer_id: 'customer-1042',
        status: 'pending_payment',
        payment_status: 'pending',
        total_cents: 25800,
        payment_due_at: '2026-12-02T09:15:00.000Z',
        items: [{ product_id: 7, qty: 2, unit_price_cents: 12900, subtotal_cents: 25800 }],
      },
    ],
  },
);
export type Order = Static<typeof OrderSchema>;

const PaymentMethodSchema = Type.String({ minLength: 1, maxLength: 64, pattern: '^[\\x20-\\x7e]+$' });

export const NewOrderSchema = Type.Object(
  {
    hold_id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[\\x21-\\x7e]+$' }),
    payment_method: Type.Optional(PaymentMethodSchema),
    /** Accepted as an alias of payment_method: the seed's clients send it under this name. */
    payment_status: Type.Optional(PaymentMethodSchema),
  },
  { additionalProperties: false, examples: [{ hold_id: '7-Qm3xv0aZ_k9T', payment_method: 'card' }] },
);
export type NewOrder = Static<typeof NewOrderSchema>;

/**
 * GET /api/orders/:id: an order number (digits; sequential, so only the admin and the order's customer may read
 * by it) or the hold id the order was made from (unguessable: the order's public reference).
 */
export const OrderReferenceParamsSchema = Type.Object({
  id: Type.String({
    minLength: 1,
    maxLength: 64,
    pattern: '^[\\x21-\\x7e]+$',
    description: 'the hold id of the order, or its number (admin and its customer only)',
    examples: ['7-Qm3xv0aZ_k9T', '42'],
  }),
});

/** A payment provider's webhook: these fields are read, every other field is kept as the payment's payload. */
export const PaymentWebhookSchema = Type.Object(
  {
    idempotency_key: Type.String({ minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' }),
    order_id: OrderIdSchema,
    event_type: Type.Union([Type.Literal('success'), Type.Literal('failure')]),
    /** What was paid; a success whose amount or currency differ from the order's does not pay it. */
    amount_cents: Type.Optional(Type.Integer({ minimum: 0, maximum: 1e16 })),
    /** ISO 4217, either case (Stripe writes "usd"). */
    currency: Type.Optional(Type.String({ pattern: '^[A-Za-z]{3}$' })),
  },
  {
    additionalProperties: true,
    examples: [
      {
        idempotency_key: 'evt_3Pq9ZK2eZvKYlo2C',
        order_id: 42,
        event_type: 'success',
        amount_cents: 25800,
        currency: 'EUR',
      },
    ],
  },
);
export type PaymentWebhook = Static<typeof PaymentWebhookSchema>;

export const PaymentOutcomeSchema = Type.Object(
  {
    order_id: OrderIdSchema,
    status: OrderStatusSchema,
    payment_status: PaymentStatusSchema,
    /** Only on a delivery that was recorded but changed nothing (a mismatched payment): false. */
    applied: Type.Optional(Type.Literal(false)),
    /** With applied: why, as a stable code (PAYMENT_MISMATCH), and in words. */
    reason: Type.Optional(Type.Literal('PAYMENT_MISMATCH')),
    message: Type.Optional(Type.String()),
  },
  {
    examples: [
      { order_id: 42, status: 'paid', payment_status: 'completed' },
      {
        order_id: 42,
        status: 'pending_payment',
        payment_status: 'pending',
        applied: false,
        reason: 'PAYMENT_MISMATCH',
        message: 'paid 100 EUR, the order is 25800 EUR: recorded, the order is not paid',
      },
    ],
  },
);
export type PaymentOutcome = Static<typeof PaymentOutcomeSchema>;
