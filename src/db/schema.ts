import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { OrderStatus, PaymentStatus } from '../schemas/order.js';

export type { OrderStatus, PaymentStatus };

/** The Postgres model, as the migrations in migrations/ create it. */
export interface Database {
  products: ProductTable;
  product_sales: ProductSalesTable;
  orders: OrderTable;
  order_items: OrderItemTable;
  payments: PaymentTable;
  processed_webhooks: ProcessedWebhookTable;
  hold_claims: HoldClaimTable;
  webhook_deliveries: WebhookDeliveryTable;
}

type CreatedAt = ColumnType<Date, never, never>;
type UpdatedAt = ColumnType<Date, Date | undefined, Date>;

export interface ProductTable {
  id: Generated<number>;
  name: string;
  price_cents: number;
  stock: number;
  per_customer_limit: number | null;
  stock_version: Generated<number>;
  /** The generation of the product's copy in Redis (0: never loaded); see src/domain/redis-rebuild.ts. */
  redis_generation: Generated<number>;
  /** Stock buckets in Redis, each on its own slot (1: not split); fixed at creation (src/redis/keys.ts). */
  buckets: Generated<number>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}
export type ProductRow = Selectable<ProductTable>;

/**
 * Units in live orders (SOLD_ORDER_STATUSES) per product, kept by triggers on order_items and orders (migration
 * product_sales): the ledger's own count, which an order insert must fit in the stock by (insertOrdersForClaims).
 */
export interface ProductSalesTable {
  product_id: number;
  sold_units: Generated<number>;
}
export type NewProductRow = Insertable<ProductTable>;

/**
 * The statuses of orders whose units count as sold: Redis's `sold` counter of a product is the sum of their
 * items' qty (once work in flight settles). Read by the repositories and by the bench's invariant check.
 */
export const SOLD_ORDER_STATUSES = ['pending_payment', 'paid'] as const satisfies readonly OrderStatus[];

/**
 * The other statuses: the units of such an order go back on sale (once: `units_released_at`). `refund_required`
 * is reached only from `cancelled` (a payment that came after the deadline), so its units went back on sale too.
 * The partial index orders_units_to_release_idx lists the same two.
 */
export const RETURNED_ORDER_STATUSES = ['cancelled', 'refund_required'] as const satisfies readonly OrderStatus[];

/** Compiles only when T is never. */
type None<T extends never> = T;
// Every status is in one of the two lists: a new status does not compile until it is placed in one.
export type UnplacedOrderStatus = None<
  Exclude<OrderStatus, (typeof SOLD_ORDER_STATUSES)[number] | (typeof RETURNED_ORDER_STATUSES)[number]>
>;

export interface OrderTable {
  id: Generated<number>;
  hold_id: string;
  customer_id: string | null;
  status: OrderStatus;
  payment_status: PaymentStatus;
  total_cents: number;
  payment_due_at: Date;
  units_released_at: ColumnType<Date | null, never, Date | null>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}
export type OrderRow = Selectable<OrderTable>;

export interface OrderItemTable {
  id: Generated<number>;
  order_id: number;
  product_id: number;
  qty: number;
  unit_price_cents: number;
  subtotal_cents: number;
}

export interface PaymentTable {
  id: Generated<number>;
  order_id: number;
  status: PaymentStatus;
  amount_cents: number;
  method: string | null;
  payload: unknown;
  /** The last success delivery whose amount or currency differed from the order's (src/domain/payments.ts). */
  mismatch: ColumnType<unknown, never, never>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}

export interface ProcessedWebhookTable {
  idempotency_key: string;
  request_hash: string;
  order_id: number | null;
  event_type: string;
  payload: unknown;
  response_status: number;
  response_body: unknown;
  processed_at: CreatedAt;
}

export interface HoldClaimTable {
  claim_id: string;
  hold_id: string;
  outcome: 'ordered' | 'abandoned';
  created_at: CreatedAt;
}

export interface WebhookDeliveryTable {
  id: Generated<number>;
  idempotency_key: string | null;
  order_id: number | null;
  event_type: string | null;
  payload: unknown;
  signature: 'valid' | 'unsigned';
  response_status: number;
  response_body: unknown;
  replayed: boolean;
  received_at: CreatedAt;
}
