import { type Kysely } from 'kysely';

// Frozen in time: a migration never imports application code.

export async function up(db: Kysely<any>): Promise<void> {
  // The last success delivery that did not pay the order because its amount or currency differed from the
  // order's: what it carried and what was expected, for ops (null: none).
  await db.schema.alterTable('payments').addColumn('mismatch', 'jsonb').execute();
  // Deliveries for orders that do not exist are purged by age: found through this index.
  await db.schema
    .createIndex('webhook_deliveries_received_idx')
    .on('webhook_deliveries')
    .column('received_at')
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('webhook_deliveries_received_idx').execute();
  await db.schema.alterTable('payments').dropColumn('mismatch').execute();
}
