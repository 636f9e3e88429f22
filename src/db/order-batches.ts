import type { Kysely } from 'kysely';
import { StoreUnavailableError } from '../errors.js';
import type { Settings } from '../settings.js';
import { insertOrdersForClaims, type NewOrder, type OrderWrite } from './orders.js';
import type { Database } from './schema.js';

interface Waiting {
  order: NewOrder;
  resolve: (write: OrderWrite) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit of conversions: the orders asked for in the same turn of the event loop are written by one
 * insertOrdersForClaims statement, so Postgres commits (and flushes its WAL) once per batch instead of once per
 * order. Each order keeps its own decision (its claim's primary key) and its own answer. A statement that fails
 * with an error Postgres or the driver gave about the data (a unique hold id, a check, a deadlock) rolled back
 * as a whole: the batch's orders are then written again one statement each, so only the order at fault sees its
 * error. When Postgres is unavailable, every order of the batch is answered that error at once (each one's
 * outcome is then in doubt, exactly as for an order written alone: the claim's recovery or a retry finds out).
 */
export function createOrderBatches(db: Kysely<Database>, settings: Pick<Settings, 'maxOrderBatch'>) {
  // By hold id: the statement keys its answer by hold, so a batch holds each hold once.
  let pending = new Map<string, Waiting[]>();
  let flushScheduled = false;

  function flush(): void {
    flushScheduled = false;
    if (pending.size === 0) return; // its batch was full and went already
    write([...pending.values()]);
    pending = new Map();
  }

  /** Writes one batch; `copies[i]` are the requests for one hold, the first of them the one written. */
  function write(copies: Waiting[][]): void {
    const orders = copies.map(([first]) => first!.order);
    insertOrdersForClaims(db, orders).then(
      (written) => copies.forEach((waiting, i) => answer(waiting, written[i]!)),
      (err: unknown) => {
        if (err instanceof StoreUnavailableError || copies.length === 1) {
          for (const waiting of copies) fail(waiting, err);
          return;
        }
        for (const waiting of copies) write([waiting]);
      },
    );
  }

  /**
   * The first request of a hold gets what was written for it; its copies (same claim: a client's retry that
   * joined it) get nothing written, as a copy waiting on the first one's commit would, and read the claim's outcome.
   */
  function answer([first, ...copies]: Waiting[], write: OrderWrite): void {
    first!.resolve(write);
    for (const copy of copies) copy.resolve({ kind: 'notWritten' });
  }

  function fail(waiting: Waiting[], err: unknown): void {
    for (const { reject } of waiting) reject(err);
  }

  /** Writes the order through the next batch (what became of it: see OrderWrite). */
  function insert(order: NewOrder): Promise<OrderWrite> {
    return new Promise((resolve, reject) => {
      const waiting: Waiting = { order, resolve, reject };
      const copies = pending.get(order.holdId);
      if (copies && copies[0]!.order.claimId !== order.claimId) {
        // Another claim of the same hold (the first one's was given up meanwhile): not in the same statement.
        write([[waiting]]);
        return;
      }
      if (copies) copies.push(waiting);
      else pending.set(order.holdId, [waiting]);
      if (pending.size >= settings.maxOrderBatch) {
        const full = [...pending.values()];
        pending = new Map();
        write(full);
      } else if (!flushScheduled) {
        flushScheduled = true;
        // After the I/O callbacks of this turn: every conversion whose claim came back in it joins the batch.
        setImmediate(flush);
      }
    });
  }

  return { insert };
}

export type OrderBatches = ReturnType<typeof createOrderBatches>;
