import { sql, type Kysely } from 'kysely';
import type { Database, OrderRow } from './schema.js';

interface Waiting {
  resolve: (row: OrderRow | undefined) => void;
  reject: (err: unknown) => void;
}

/**
 * Grouped reads of order rows: the orders asked for in the same turn of the event loop are read by one statement
 * (`id = ANY($1)`, one text however many), as the writes that follow them are grouped (src/db/payment-batches.ts).
 * A payment webhook reads its order before judging it; alone, that read was the most frequent statement of a
 * checkout, and its round trip (a socket write each) the largest share of the service's CPU in the checkout
 * bench. Each caller gets the row as that statement saw it, exactly as from a read of its own.
 */
export function createOrderReads(db: Kysely<Database>, settings: { maxBatch: number }) {
  let pending = new Map<number, Waiting[]>();
  let flushScheduled = false;

  function flush(): void {
    flushScheduled = false;
    if (pending.size > 0) read(take());
  }

  function take(): Map<number, Waiting[]> {
    const batch = pending;
    pending = new Map();
    return batch;
  }

  function read(batch: Map<number, Waiting[]>): void {
    sql<OrderRow>`SELECT * FROM orders WHERE id = ANY(${[...batch.keys()]}::bigint[])`.execute(db).then(
      ({ rows }) => {
        const byId = new Map(rows.map((row) => [row.id, row]));
        for (const [id, waiting] of batch) for (const { resolve } of waiting) resolve(byId.get(id));
      },
      (err: unknown) => {
        for (const waiting of batch.values()) for (const { reject } of waiting) reject(err);
      },
    );
  }

  /** The order row (without its items), read with the other orders asked for in this turn. */
  function find(id: number): Promise<OrderRow | undefined> {
    return new Promise((resolve, reject) => {
      const waiting = pending.get(id);
      if (waiting) return waiting.push({ resolve, reject });
      pending.set(id, [{ resolve, reject }]);
      if (pending.size >= settings.maxBatch) read(take());
      else if (!flushScheduled) {
        flushScheduled = true;
        // After the I/O callbacks of this turn: every webhook whose body was read in it joins the statement.
        setImmediate(flush);
      }
    });
  }

  return { find };
}
