import { sql, type Kysely } from 'kysely';

// Frozen in time: a migration never imports application code.

export async function up(db: Kysely<any>): Promise<void> {
  // Each attempt to turn a hold into an order, by its claim id. A conversion writes 'ordered' in the transaction
  // that creates the order; recovery writes 'abandoned' for a claim whose process died. The primary key lets
  // exactly one of the two happen, so an abandoned claim can never commit an order later.
  await db.schema
    .createTable('hold_claims')
    .addColumn('claim_id', 'text', (c) => c.primaryKey())
    .addColumn('hold_id', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull().check(sql`outcome IN ('ordered', 'abandoned')`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('hold_claims_hold_idx').on('hold_claims').column('hold_id').execute();

  // Set once a cancelled order's units are back on sale in Redis; recovery finishes the ones left unset.
  await db.schema.alterTable('orders').addColumn('units_released_at', 'timestamptz').execute();
  await sql`CREATE INDEX orders_units_to_release_idx ON orders (id) WHERE status IN ('cancelled', 'refund_required') AND units_released_at IS NULL`.execute(
    db,
  );

  // Every webhook delivery that passed the signature check, with its answer: what ops look at.
  await db.schema
    .createTable('webhook_deliveries')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedByDefaultAsIdentity())
    .addColumn('idempotency_key', 'text')
    .addColumn('order_id', 'bigint')
    .addColumn('event_type', 'text')
    .addColumn('payload', 'jsonb', (c) => c.notNull())
    .addColumn('signature', 'text', (c) => c.notNull().check(sql`signature IN ('valid', 'unsigned')`))
    .addColumn('response_status', 'integer', (c) => c.notNull())
    .addColumn('response_body', 'jsonb', (c) => c.notNull())
    .addColumn('replayed', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('received_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createIndex('webhook_deliveries_key_idx')
    .on('webhook_deliveries')
    .column('idempotency_key')
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('webhook_deliveries').execute();
  await sql`DROP INDEX orders_units_to_release_idx`.execute(db);
  await db.schema.alterTable('orders').dropColumn('units_released_at').execute();
  await db.schema.dropTable('hold_claims').execute();
}
