import { sql, type Kysely } from 'kysely';

// Frozen in time: a migration never imports application code.

export async function up(db: Kysely<any>): Promise<void> {
  // The generation of each product's copy in Redis. Every (re)build of the copy takes a new number from the
  // sequence under the product's row lock, and the copy carries it; an order is only inserted while the
  // product's generation is the one its hold was made in, so a conversion from before a Redis data loss cannot
  // commit after the rebuild counted the sold units. 0: never loaded into Redis. A sequence, so a number taken
  // by a rebuild that rolled back is never handed out again.
  await sql`CREATE SEQUENCE redis_generation_seq`.execute(db);
  await db.schema
    .alterTable('products')
    .addColumn('redis_generation', 'bigint', (c) => c.notNull().defaultTo(0))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('products').dropColumn('redis_generation').execute();
  await sql`DROP SEQUENCE redis_generation_seq`.execute(db);
}
