import { sql, type Kysely } from 'kysely';

// Frozen in time: a migration never imports application code.

// The statuses whose units count as sold (SOLD_ORDER_STATUSES when this was written).
const SOLD = `('pending_payment', 'paid')`;

export async function up(db: Kysely<any>): Promise<void> {
  // Units in live orders per product, kept by Postgres itself: an order is only inserted while it fits in the
  // product's stock by this count, so the ledger refuses to oversell even when Redis's copy is behind it (a
  // promoted replica that missed sales, before the loss watcher rebuilds it). A table of its own, not a column
  // of products: a cancellation changes it, and must not wait for a rebuild holding the product row while the
  // rebuild waits for the cancelled order's row.
  await sql`
    CREATE TABLE product_sales (
      product_id integer PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
      sold_units integer NOT NULL DEFAULT 0 CHECK (sold_units >= 0)
    )`.execute(db);
  await sql`
    INSERT INTO product_sales (product_id, sold_units)
    SELECT p.id, coalesce(sum(i.qty) FILTER (WHERE o.status IN ${sql.raw(SOLD)}), 0)
    FROM products p LEFT JOIN order_items i ON i.product_id = p.id LEFT JOIN orders o ON o.id = i.order_id
    GROUP BY p.id`.execute(db);

  // Every product has its row from the start, so the first orders of a product lock a row that exists.
  await sql`
    CREATE FUNCTION product_sales_open() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO product_sales (product_id) SELECT id FROM opened ON CONFLICT DO NOTHING;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER product_sales_open AFTER INSERT ON products REFERENCING NEW TABLE AS opened
    FOR EACH STATEMENT EXECUTE FUNCTION product_sales_open()`.execute(db);

  // Items inserted for live orders add their units; once per statement (a batch of conversions updates each
  // product's row once), locking the rows in product order so two statements never wait on each other in a cycle.
  await sql`
    CREATE FUNCTION product_sales_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      WITH sold AS (
        SELECT i.product_id, sum(i.qty) AS units
        FROM added i JOIN orders o ON o.id = i.order_id
        WHERE o.status IN ${sql.raw(SOLD)}
        GROUP BY i.product_id
      ), locked AS (
        SELECT s.product_id FROM product_sales s JOIN sold USING (product_id) ORDER BY s.product_id FOR UPDATE OF s
      )
      UPDATE product_sales s SET sold_units = s.sold_units + sold.units
      FROM sold JOIN locked USING (product_id) WHERE s.product_id = sold.product_id;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER product_sales_add AFTER INSERT ON order_items REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION product_sales_add()`.execute(db);

  // An order leaving the sold statuses (a cancellation) takes its units off, one entering them adds them.
  await sql`
    CREATE FUNCTION product_sales_move() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      WITH moved AS (
        SELECT i.product_id,
               sum(CASE WHEN n.status IN ${sql.raw(SOLD)} THEN i.qty ELSE -i.qty END) AS units
        FROM before b JOIN after n ON n.id = b.id JOIN order_items i ON i.order_id = n.id
        WHERE (b.status IN ${sql.raw(SOLD)}) <> (n.status IN ${sql.raw(SOLD)})
        GROUP BY i.product_id
      ), locked AS (
        SELECT s.product_id FROM product_sales s JOIN moved USING (product_id) ORDER BY s.product_id FOR UPDATE OF s
      )
      UPDATE product_sales s SET sold_units = s.sold_units + moved.units
      FROM moved JOIN locked USING (product_id) WHERE s.product_id = moved.product_id;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER product_sales_move AFTER UPDATE ON orders REFERENCING OLD TABLE AS before NEW TABLE AS after
    FOR EACH STATEMENT EXECUTE FUNCTION product_sales_move()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TRIGGER product_sales_move ON orders`.execute(db);
  await sql`DROP TRIGGER product_sales_add ON order_items`.execute(db);
  await sql`DROP TRIGGER product_sales_open ON products`.execute(db);
  await sql`DROP FUNCTION product_sales_move(), product_sales_add(), product_sales_open()`.execute(db);
  await sql`DROP TABLE product_sales`.execute(db);
}
