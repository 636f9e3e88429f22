import type { Kysely } from 'kysely';
import { StoreUnavailableError } from '../errors.js';
import type { Settings } from '../settings.js';
import { recordPaymentEvents, type PaymentEvent, type RecordedPaymentEvent } from './payments.js';
import type { Database } from './schema.js';

interface Waiting {
  event: PaymentEvent;
  resolve: (recorded: RecordedPaymentEvent) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit of payment webhooks, as src/db/order-batches.ts does for conversions: the events judged in the
 * same turn of the event loop are applied by one recordPaymentEvents statement, so Postgres commits once per
 * batch instead of once per delivery. Each event keeps its own decision (its order's state and its idempotency
 * key) and learns its own outcome. A statement that fails with an error Postgres or the driver gave about the
 * data rolled back as a whole: its events are then applied again one statement each, so only the event at fault
 * sees its error. When Postgres is unavailable, every event of the batch is answered that error at once (each
 * one's outcome is then in doubt, exactly as for an event applied alone: the provider's retry finds out).
 */
export function createPaymentBatches(db: Kysely<Database>, settings: Pick<Settings, 'maxPaymentBatch'>) {
  // By idempotency key, and each order once: one statement cannot change a row twice.
  let pending = new Map<string, Waiting[]>();
  let orderIds = new Set<number>();
  let flushScheduled = false;

  function take(): Waiting[][] {
    const batch = [...pending.values()];
    pending = new Map();
    orderIds = new Set();
    return batch;
  }

  function flush(): void {
    flushScheduled = false;
    if (pending.size === 0) return; // its batch was full and went already
    write(take());
  }

  /** Applies one batch; `copies[i]` are the deliveries of one key, the first of them the one applied. */
  function write(copies: Waiting[][]): void {
    const events = copies.map(([first]) => first!.event);
    recordPaymentEvents(db, events).then(
      (recorded) => copies.forEach((waiting, i) => answer(waiting, recorded[i]!)),
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
   * The first delivery of a key gets what its statement did; its copies (the provider sending the same event
   * twice at once) find the key used, as a copy waiting on the first one's row lock would, and read its stored
   * answer. When the first found its order changed, so do they: they are judged again.
   */
  function answer([first, ...copies]: Waiting[], recorded: RecordedPaymentEvent): void {
    first!.resolve(recorded);
    for (const copy of copies) copy.resolve({ matched: recorded.matched, fresh: false });
  }

  function fail(waiting: Waiting[], err: unknown): void {
    for (const { reject } of waiting) reject(err);
  }

  /** Applies the event through the next batch (see recordPaymentEvents). */
  function record(event: PaymentEvent): Promise<RecordedPaymentEvent> {
    return new Promise((resolve, reject) => {
      const waiting: Waiting = { event, resolve, reject };
      const copies = pending.get(event.idempotencyKey);
      if (!copies && orderIds.has(event.orderId)) {
        // Another event for an order of this batch: not in the same statement. Alone, it waits on the batch's
        // row lock (or the batch on its) and finds out whether the order changed, as any two concurrent events.
        write([[waiting]]);
        return;
      }
      if (copies) copies.push(waiting);
      else {
        pending.set(event.idempotencyKey, [waiting]);
        orderIds.add(event.orderId);
      }
      if (pending.size >= settings.maxPaymentBatch) {
        write(take());
      } else if (!flushScheduled) {
        flushScheduled = true;
        // After the I/O callbacks of this turn: every delivery whose order read came back in it joins the batch.
        setImmediate(flush);
      }
    });
  }

  return { record };
}

export type PaymentBatches = ReturnType<typeof createPaymentBatches>;
