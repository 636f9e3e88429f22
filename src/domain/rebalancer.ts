import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import type { Logger } from '../log.js';
import type { BucketState, JournaledMove, RedisCommands } from '../redis/commands.js';
import { crashPoint } from './faults.js';

/**
 * The stock of a bucketed product lives in K buckets on K Redis slots (src/redis/keys.ts bucketLabels), each
 * keeping the invariant for its own share: share - held - sold >= 0. A hold goes to one bucket and falls over to
 * the others when it runs dry (src/domain/holds.ts); this module moves stock between the buckets, so that no
 * bucket refuses while another has units for long, and the product sells out exactly.
 *
 * A move crosses two slots, so it is two steps: lua/moveStockOut-2.lua takes the units out of the source's share
 * and journals the move in the source's slot, in one step; lua/moveStockIn-2.lua adds them to the target's share
 * once per move id. Between the two the units are in no share: a crash there leaves them unsellable until
 * recovery (the next pass of any instance) finishes the move from the journal, never sellable twice. A move from
 * a copy of the product that was rebuilt since is not applied: the rebuild counted every unit from Postgres.
 */
export type Rebalancer = ReturnType<typeof createRebalancer>;

// A journaled move older than this (ms) is taken to be one its mover left half-done, and is finished here.
const MOVE_RECOVERY_AFTER_MS = 1000;
// Bucketed products are listed from Postgres at most this often.
const PRODUCT_LIST_MS = 2000;
// How long a bucket fed for a refused request keeps its units from the evening-out (ms).
const FED_KEEP_MS = 2000;

export function createRebalancer(deps: { db: Kysely<Database>; commands: RedisCommands; log: Logger }) {
  const { db, commands, log } = deps;
  // Buckets that refused a request for want of units the product had elsewhere (a customer's or an
  // Idempotency-Key's home bucket, or more units than any one bucket had): product -> label -> units asked. They
  // are fed first, and kept from the evening-out for a moment, so the units are there when the buyer asks again.
  const wanted = new Map<number, Map<number, number>>();
  const fedUntil = new Map<number, Map<number, { until: number; units: number }>>();
  let products: { id: number; buckets: number }[] = [];
  let listedAt = -Infinity;

  const newMoveId = () => randomBytes(9).toString('base64url');

  /** Both halves of one move; the units moved (0: the source had none available). */
  async function move(productId: number, from: number, to: number, units: number): Promise<number> {
    const out = await commands.moveStockOut(productId, from, to, newMoveId(), units);
    if (!out) return 0;
    crashPoint('after-move-out');
    await finish(productId, from, out);
    return out.units;
  }

  /** The second half of a journaled move, then its journal entry dropped; idempotent. */
  async function finish(productId: number, from: number, journaled: JournaledMove): Promise<void> {
    const landed = await commands.moveStockIn(productId, journaled);
    // A target whose copy is lost keeps the move journaled: the product's rebuild drops both.
    if (landed === 'missing') return;
    if (landed === 'stale')
      log.warn({ product_id: productId, from, ...journaled }, 'stock move not applied: from an older copy, or too old');
    await commands.finishMove(productId, from, journaled.moveId);
  }

  /** Finishes the moves out of these buckets that have waited longer than a mover takes. */
  async function recover(productId: number, states: BucketState[]): Promise<number> {
    const now = commands.now();
    let finished = 0;
    for (const state of states) {
      for (const journaled of state.movesOut) {
        if (now - journaled.at < MOVE_RECOVERY_AFTER_MS) continue;
        await finish(productId, state.label, journaled);
        log.info({ product_id: productId, from: state.label, ...journaled }, 'recovery: stock move finished');
        finished++;
      }
    }
    return finished;
  }

  /**
   * One look at one product: finishes interrupted moves; feeds the buckets that refused a request only they
   * could take with the units it asked for; then moves units from the fullest bucket to the emptiest while the
   * emptiest has less than half the fullest's available units (keeping the buckets just fed as they are).
   */
  async function balance(productId: number, buckets: number): Promise<{ moved: number; recovered: number }> {
    const states = await commands.bucketStates(productId, buckets);
    // A bucket lost: the loss watcher rebuilds the whole product; nothing to move until then.
    if (states.some((state) => !state.counters)) return { moved: 0, recovered: 0 };
    const recovered = await recover(productId, states);
    const available = new Map(
      states.map(({ label, counters }) => [label, counters!.stock - counters!.held - counters!.sold]),
    );
    const fullest = (except: number) =>
      [...available].filter(([label]) => label !== except).sort((a, b) => b[1] - a[1])[0]!;
    const transfer = async (from: number, to: number, units: number) => {
      const done = await move(productId, from, to, units);
      available.set(from, available.get(from)! - done);
      available.set(to, available.get(to)! + done);
      return done;
    };
    let moved = 0;
    const now = Date.now();
    const fed = fedUntil.get(productId) ?? new Map<number, { until: number; units: number }>();
    for (const [label, units] of wanted.get(productId) ?? []) {
      for (let donors = 0; donors < buckets - 1 && available.get(label)! < units; donors++) {
        const [donor, spare] = fullest(label);
        if (spare <= 0) break;
        moved += await transfer(donor, label, Math.min(spare, units - available.get(label)!));
      }
      fed.set(label, { until: now + FED_KEEP_MS, units });
    }
    wanted.delete(productId);
    for (const [label, { until }] of fed) if (until <= now) fed.delete(label);
    if (fed.size > 0) fedUntil.set(productId, fed);
    else fedUntil.delete(productId);
    for (let step = 0; step < buckets - 1; step++) {
      // A bucket fed for a request keeps the units it was fed for; what it has beyond them is spread.
      const byUnits = [...available]
        .map(([label, units]): [number, number] => [label, units - (fed.get(label)?.units ?? 0)])
        .sort((a, b) => a[1] - b[1]);
      const [emptiest, least] = byUnits[0]!;
      const [donor, most] = byUnits[byUnits.length - 1]!;
      if (most - least < 2 || least >= most / 2) break;
      const done = await transfer(donor, emptiest, Math.floor((most - least) / 2));
      if (done === 0) break;
      moved += done;
    }
    return { moved, recovered };
  }

  /** One pass over every bucketed product. */
  async function pass(): Promise<{ products: number; moved: number; recovered: number; more: boolean }> {
    if (Date.now() - listedAt >= PRODUCT_LIST_MS) {
      products = await db
        .selectFrom('products')
        .select(['id', 'buckets'])
        .where('buckets', '>', 1)
        .orderBy('id')
        .execute();
      listedAt = Date.now();
    }
    let moved = 0;
    let recovered = 0;
    for (const { id, buckets } of products) {
      const result = await balance(id, buckets);
      moved += result.moved;
      recovered += result.recovered;
    }
    return { products: products.length, moved, recovered, more: false };
  }

  return {
    pass,
    balance,
    /** A bucket refused `units` the product has elsewhere: the next pass gathers them there first. */
    want(productId: number, label: number, units: number): void {
      const labels = wanted.get(productId) ?? new Map<number, number>();
      labels.set(label, Math.max(units, labels.get(label) ?? 0));
      wanted.set(productId, labels);
    },
    /**
     * Moves up to `units` available units from the other buckets into the first one (a stock cut lands there);
     * the units moved.
     */
    async gather(productId: number, buckets: number, units: number): Promise<number> {
      const states = await commands.bucketStates(productId, buckets);
      let moved = 0;
      for (const { label } of states.slice(1)) {
        if (moved >= units) break;
        moved += await move(productId, label, 0, units - moved);
      }
      return moved;
    },
  };
}
