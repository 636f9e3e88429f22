import type { Kysely } from 'kysely';
import { StoreUnavailableError } from '../errors.js';
import type { Settings } from '../settings.js';
import { insertOrdersForClaims, type NewOrder, type OrderWithItems } from './orders.js';
import type { Database } from './schema.js';

interface Waiting {
  order: NewOrder;
  resolve: (order: OrderWithItems | undefined) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit of conversions: the orders asked for in the same turn of the event loop are written by one
 * insertOrdersForClaims statement, so Postgres commits (and flushes its WAL) once per batch instead of once per
 * order. At most `orderStatementsInFlight` such statements run at once: the orders that come while they do wait
 * for the first to end and go together, so the busier the service, the larger its batches (one order alone
 * waits for nothing). Each order keeps its own decision (its claim's primary key) and its own answer. A statement that fails
 * with an error Postgres or the driver gave about the data (a unique hold id, a check, a deadlock) rolled back
 * as a whole: the batch's orders are then written again one statement each, so only the order at fault sees its
 * error. When Postgres is unavailable, every order of the batch is answered that error at once (each one's
 * outcome is then in doubt, exactly as for an order written alone: the claim's recovery or a retry finds out).
 */
export function createOrderBatches(
  db: Kysely<Database>,
  settings: Pick<Settings, 'maxOrderBatch' | 'orderStatementsInFlight'>,
) {
  // By hold id: the statement keys its answer by hold, so a batch holds each hold once.
  let pending = new Map<string, Waiting[]>();
  let flushScheduled = false;
  let inFlight = 0;

  function scheduleFlush(): void {
    if (flushScheduled) return;
    flushScheduled = true;
    // After the I/O callbacks of this turn: every conversion whose claim came back in it joins the batch.
    setImmediate(flush);
  }

  function flush(): void {
    flushScheduled = false;
    // With every statement slot busy, the batch keeps growing until one is free (see its end in send).
    if (pending.size === 0 || inFlight >= settings.orderStatementsInFlight) return;
    send();
  }

  /** Sends the pending batch in a statement slot; when the slot is free again, the batch gathered meanwhile goes. */
  function send(): void {
    const batch = [...pending.values()];
    pending = new Map();
    inFlight++;
    void write(batch).finally(() => {
      inFlight--;
      if (pending.size > 0) scheduleFlush();
    });
  }

  /** Writes one batch; `copies[i]` are the requests for one hold, the first of them the one written. */
  async function write(copies: Waiting[][]): Promise<void> {
    const orders = copies.map(([first]) => first!.order);
    try {
      const written = await insertOrdersForClaims(db, orders);
      copies.forEach((waiting, i) => answer(waiting, written[i]));
    } catch (err) {
      if (err instanceof StoreUnavailableError || copies.length === 1) {
        for (const waiting of copies) fail(waiting, err);
        return;
      }
      await Promise.all(copies.map((waiting) => write([waiting])));
    }
  }

  /**
   * The first request of a hold gets the order written; its copies (same claim: a client's retry that joined it)
   * get none, as a copy waiting on the first one's commit would, and read the claim's outcome.
   */
  function answer([first, ...copies]: Waiting[], order: OrderWithItems | undefined): void {
    first!.resolve(order);
    for (const copy of copies) copy.resolve(undefined);
  }

  function fail(waiting: Waiting[], err: unknown): void {
    for (const { reject } of waiting) reject(err);
  }

  /**
   * Writes the order through the next batch; undefined when its claim had an outcome already or the hold was
   * fenced (see insertOrdersForClaims).
   */
  function insert(order: NewOrder): Promise<OrderWithItems | undefined> {
    return new Promise((resolve, reject) => {
      const waiting: Waiting = { order, resolve, reject };
      const copies = pending.get(order.holdId);
      if (copies && copies[0]!.order.claimId !== order.claimId) {
        // Another claim of the same hold (the first one's was given up meanwhile): not in the same statement.
        void write([[waiting]]);
        return;
      }
      if (copies) copies.push(waiting);
      else pending.set(order.holdId, [waiting]);
      // A full batch goes at once, even past the statements in flight: no statement grows beyond the bound.
      if (pending.size >= settings.maxOrderBatch) send();
      else scheduleFlush();
    });
  }

  return { insert };
}

export type OrderBatches = ReturnType<typeof createOrderBatches>;
