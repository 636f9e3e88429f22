import { sql, type Kysely } from 'kysely';

// Frozen in time: a migration never imports application code.

export async function up(db: Kysely<any>): Promise<void> {
  // How many stock buckets the product's stock is split into in Redis, each on its own Cluster slot, so that one
  // hot product's holds are decided by as many shards. 1: not split (the product's keys are as they always were).
  // Fixed at creation: a bucket's keys are found from its label, and the labels from this number.
  await db.schema
    .alterTable('products')
    .addColumn('buckets', 'integer', (c) => c.notNull().defaultTo(1))
    .execute();
  await sql`ALTER TABLE products ADD CONSTRAINT products_buckets_range CHECK (buckets BETWEEN 1 AND 64)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('products').dropColumn('buckets').execute();
}
