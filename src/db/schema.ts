import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';

/** The Postgres model, as the migrations in migrations/ create it. */
export interface Database {
  products: ProductTable;
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
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}
export type ProductRow = Selectable<ProductTable>;
export type NewProductRow = Insertable<ProductTable>;

export type OrderStatus = 'pending_payment' | 'paid' | 'cancelled' | 'refund_required';
export type PaymentStatus = 'pending' | 'processing' | 'completed' | 'failed';

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
