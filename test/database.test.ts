import { sql } from 'kysely';
import t from 'tap';
import { createDatabase } from '../src/db/connection.js';
import { createTestDatabase } from './support/app.js';

t.test(
  'statements with parameters run prepared, once per connection; statements without stay unprepared',
  async (t) => {
    const db = createDatabase({ url: await createTestDatabase(t), timeoutMs: 5_000, poolSize: 1 });
    t.teardown(() => db.destroy());
    const productNamed = (name: string) => db.selectFrom('products').select('id').where('name', '=', name).execute();
    const preparedOnConnection = async () =>
      (await sql<{ statement: string }>`SELECT statement FROM pg_prepared_statements`.execute(db)).rows.map(
        (r) => r.statement,
      );

    t.same(await productNamed('a'), [], 'the query answers');
    await productNamed('b');
    await productNamed('c');
    const prepared = await preparedOnConnection();
    t.equal(prepared.filter((s) => s.includes('from "products"')).length, 1, 'one prepared statement for three calls');
    t.notOk(
      prepared.some((s) => s.includes('pg_prepared_statements')),
      'a statement without parameters is not prepared',
    );

    // A transaction's BEGIN and COMMIT have no parameters either; its statements use the same prepared ones.
    await db.transaction().execute(async (trx) => {
      await trx.selectFrom('products').select('id').where('name', '=', 'd').execute();
    });
    t.equal((await preparedOnConnection()).filter((s) => s.includes('from "products"')).length, 1, 'still one');
  },
);
