import type { SalesLedger } from '../db/products.js';
import type { Settings } from '../settings.js';
import { ReplyMismatchError, rethrowRedisFailure, ScriptReplyError } from './errors.js';
import { createExchange, pipelinePerNode, type RedisClient } from './connection.js';
import { parseHoldRecord, type HoldRecord } from './hold-record.js';
import { bucketOfHold } from '../domain/hold-ids.js';
import {
  adminFailuresKey,
  bucketLabels,
  conversionScriptKeys,
  copyMarkerKey,
  idempotencyClaimKey,
  movesInKey,
  movesOutKey,
  productKeys,
  productScriptKeys,
  sweepScheduleKey,
  type ProductKeys,
} from './keys.js';
import { createRequestCounts } from './request-counts.js';
import { createReserveBatches, type Reservation, type ReserveOutcome } from './reserve-batches.js';

export { ScriptReplyError };
export type { Reservation, ReserveOutcome };
import { ScriptCode } from './script-codes.js';
import type { ProductFigures } from '../observability/metrics.js';

/**
 * The service's one door to Redis: every script and command it sends, with keys built by src/redis/keys.ts,
 * replies checked for shape and decoded into outcomes (`{ kind: ... }`), and client errors classified
 * (src/redis/errors.ts). Nothing above this module reads a script code or a positional reply.
 */

/** A refusal a script answers with, turned into an API error by src/redis/finished-errors.ts. */
export type ScriptRefusal =
  | { kind: 'productNotFound' }
  | { kind: 'customerIdRequired' }
  | { kind: 'idempotencyKeyReused' }
  | { kind: 'deadlinePassed' }
  | { kind: 'holdNotFound' }
  | { kind: 'holdConverted' }
  | { kind: 'holdConverting' }
  | { kind: 'holdExpired' }
  | { kind: 'holdReleased' }
  /** `stock`: the stock asked for. */
  | { kind: 'stockBelowCommitted'; stock: number; held: number; sold: number };

type Refusal<K extends ScriptRefusal['kind']> = Extract<ScriptRefusal, { kind: K }>;

export type HoldLookup = { kind: 'found'; record: HoldRecord } | Refusal<'holdNotFound' | 'productNotFound'>;

export type HoldRelease =
  | { kind: 'ended'; record: HoldRecord }
  | { kind: 'alreadyEnded'; record: HoldRecord }
  | Refusal<'holdNotFound' | 'holdConverted' | 'holdConverting' | 'productNotFound'>;

/** `generation`: of the product's copy in Redis the hold lives in; its order may only commit in the same one. */
export type HoldClaim =
  | { kind: 'claimed'; claimId: string; record: HoldRecord; generation: number }
  | { kind: 'joined'; claimId: string; record: HoldRecord; generation: number }
  | { kind: 'converted'; claimId: string }
  | Refusal<'holdNotFound' | 'holdExpired' | 'holdReleased' | 'productNotFound'>;

/** A step of a conversion that Postgres has decided (finishConversion, returnSoldUnits, abandonClaim). */
export type HoldStep =
  | { kind: 'done'; status: string }
  | { kind: 'unchanged'; status: string }
  | { kind: 'wrongHoldState'; status: string }
  | Refusal<'holdNotFound'>;

export type StockChange =
  | { kind: 'stockSet'; stock: number; held: number; sold: number }
  | { kind: 'unchanged'; stock: number; held: number; sold: number }
  | Refusal<'productNotFound' | 'stockBelowCommitted'>;

/** What a repair writes: Postgres's figures, and the holds whose order's units are between the stores. */
export interface ProductRepair {
  stock: number;
  stockVersion: number;
  /** Units of the product's live orders (SOLD_ORDER_STATUSES). */
  liveUnits: number;
  /** Those units per customer (products with a per-customer limit). */
  liveUnitsByCustomer: ReadonlyMap<string, number>;
  /** `converting`: order committed, units still held; `unreturned`: order cancelled, units not returned yet. */
  inFlight: readonly { holdId: string; kind: 'converting' | 'unreturned' }[];
}

export interface Counters {
  stock: number;
  held: number;
  sold: number;
}

export type RepairOutcome =
  | {
      kind: 'repaired';
      before: Counters;
      after: Counters;
      customersCorrected: number;
      holdsReindexed: number;
      indexEntriesDropped: number;
    }
  | { kind: 'holdsChanged'; holdId: string }
  | Refusal<'productNotFound'>;

/**
 * A product's live counters as Redis holds them; of a product split into stock buckets, the sums over its
 * buckets (`stock` is its total: the shares plus the units of moves between buckets not finished yet).
 */
export interface Inventory {
  name: string;
  price_cents: number;
  stock: number;
  held: number;
  sold: number;
  /** Stock buckets (1: the product is not split). */
  buckets: number;
  /** 0: none. */
  per_customer_limit: number;
  /**
   * Of the copy (src/domain/redis-rebuild.ts); 0 for a copy made before generations existed; -1 when the buckets
   * of a bucketed product disagree (one was lost and another kept: the product must be rebuilt).
   */
  generation: number;
  stock_version: number;
}

/** One stock bucket of a product as Redis holds it (src/domain/rebalancer.ts, reconcile). */
export interface BucketState {
  label: number;
  /** null: Redis lost this bucket's copy. */
  counters: (Counters & { generation: number }) | null;
  /** Moves out of this bucket whose other half may not have run yet (lua/moveStockOut-2.lua). */
  movesOut: JournaledMove[];
}

/** A move of stock out of a bucket, as its journal keeps it. */
export interface JournaledMove {
  moveId: string;
  /** The target bucket's label. */
  to: number;
  units: number;
  generation: number;
  /** When the units left the source (ms, its Redis clock). */
  at: number;
}

/** What routes a product's holds to its stock buckets (src/domain/holds.ts). */
export interface BucketRouting {
  buckets: number;
  limited: boolean;
}

/** One bucket's place on the sweep schedule: what the sweeper claims and sweeps. */
export interface SweepTarget {
  productId: number;
  /** The stock bucket's label (0: the product's first bucket, or a product not split). */
  label: number;
}

/** A product's stock bucket as a rebuild writes it (see lua/rebuildProduct-8.lua). */
export interface BucketRebuild {
  label: number;
  buckets: number;
  /** The bucket's share of the product's stock (units). */
  share: number;
}

export interface SweepStep {
  expired: number;
  purged: number;
  /** ms, Redis's clock. */
  nextSweepAt: number;
  /** Conversion claims whose lease ran out, for recovery to decide. */
  staleClaims: { holdId: string; claimId: string }[];
}

/** What the admin throttle knows of one client address. */
export interface AdminFailures {
  failures: number;
  /** Until the window ends; 0 when the address has no failures. */
  msLeft: number;
}

// Products one ZADD of bringSweepsForward moves: bounds the time Redis spends on one command.
const SCHEDULE_CHUNK = 1000;

const INVENTORY_FIELDS = [
  'name',
  'price_cents',
  'stock',
  'held',
  'sold',
  'per_customer_limit',
  'generation',
  'stock_version',
  'buckets',
  'total_stock',
] as const;

// How long a bucket remembers the moves of stock it took in (lua/moveStockIn-2.lua): a day, far beyond the
// seconds recovery takes to finish a move its mover left half-done.
const MOVE_MEMORY_MS = 24 * 3600_000;

/** The sweep schedule's member for one bucket: the product id, and `.<label>` for a bucket other than the first. */
function sweepMember(productId: number, label: number): string {
  return label === 0 ? String(productId) : `${productId}.${label}`;
}

function sweepTarget(member: unknown): SweepTarget {
  const [id, label] = String(member).split('.');
  return {
    productId: int('claimDueProducts', Number(id)),
    label: label === undefined ? 0 : int('claimDueProducts', Number(label)),
  };
}

export type RedisCommands = ReturnType<typeof createRedisCommands>;

/** `now`: Redis's clock as this process sees it (src/redis/clock.ts); hold batches get their deadlines on it. */
export function createRedisCommands(redis: RedisClient, settings: Settings, now: () => number = Date.now) {
  const prefix = settings.redisKeyPrefix;
  const keysOf = (productId: number, label = 0): ProductKeys => productKeys(prefix, productId, label);
  // A hold id names its stock bucket (src/domain/hold-ids.ts), so its keys need no lookup.
  const keysOfHold = (productId: number, holdId: string): ProductKeys => keysOf(productId, bucketOfHold(holdId));
  const conversionKeys = (productId: number, holdId: string) => conversionScriptKeys(keysOfHold(productId, holdId));
  // Per product: fixed when the product is created, so each instance reads them once.
  const routings = new Map<number, BucketRouting>();
  const exchange = createExchange(redis, settings.redisCommandTimeoutMs);
  const batches = createReserveBatches(redis, exchange, {
    ...settings,
    // Past this moment the callers have been answered 503, so the script must not hold anything.
    reserveDeadline: () => Math.floor(now()) + settings.redisCommandTimeoutMs,
  });

  async function productFigures(productIds: number[]): Promise<(ProductFigures | null)[]> {
    if (productIds.length === 0) return [];
    const replies = await pipelinePerNode(
      redis,
      exchange,
      productIds,
      (id) => keysOf(id).inventory,
      (pipeline, id) => {
        const keys = keysOf(id);
        pipeline.hmget(keys.inventory, 'stock', 'held', 'sold', 'buckets', 'total_stock');
        pipeline.zcard(keys.holdExpiries);
        pipeline.zrange(keys.holdExpiries, '0', '0', 'WITHSCORES');
      },
    );
    const reply = (i: number, k: number): unknown => {
      const [err, value] = replies[i]?.[k] ?? [new ScriptReplyError('productFigures', 'no reply in the pipeline')];
      if (err) rethrowRedisFailure(err);
      return value;
    };
    const figures = productIds.map((_id, i): ProductFigures | null => {
      const [stock, held, sold, , total] = reply(i, 0) as (string | null)[];
      if (stock === null || stock === undefined) return null;
      const [, oldest] = reply(i, 2) as string[];
      return {
        stock: Number(total ?? stock),
        held: Number(held ?? 0),
        sold: Number(sold ?? 0),
        activeHolds: Number(reply(i, 1)),
        oldestExpiry: oldest === undefined ? null : Number(oldest),
      };
    });
    // A bucketed product's figures are the sums over its buckets (the first bucket read above keeps the total).
    await Promise.all(
      productIds.map(async (id, i) => {
        const buckets = Number((reply(i, 0) as (string | null)[])[3] ?? 1);
        const first = figures[i];
        if (buckets <= 1 || !first) return;
        for (const label of bucketLabels(id, buckets).slice(1)) {
          const keys = keysOf(id, label);
          const at = keys.inventory;
          const [counters, active, oldest] = await Promise.all([
            exchange(() => redis.hmget(keys.inventory, 'held', 'sold'), undefined, undefined, at),
            exchange(() => redis.zcard(keys.holdExpiries), undefined, undefined, at),
            exchange(() => redis.zrange(keys.holdExpiries, '0', '0', 'WITHSCORES'), undefined, undefined, at),
          ]);
          first.held += Number(counters[0] ?? 0);
          first.sold += Number(counters[1] ?? 0);
          first.activeHolds += active;
          if (oldest[1] !== undefined) first.oldestExpiry = Math.min(first.oldestExpiry ?? Infinity, Number(oldest[1]));
        }
      }),
    );
    return figures;
  }

  /** Each stock bucket of a bucketed product as Redis holds it, first bucket first. */
  async function bucketStates(productId: number, buckets: number): Promise<BucketState[]> {
    return Promise.all(
      bucketLabels(productId, buckets).map(async (label): Promise<BucketState> => {
        const keys = keysOf(productId, label);
        const [fields, journal] = await Promise.all([
          exchange(
            () => redis.hmget(keys.inventory, 'stock', 'held', 'sold', 'generation'),
            undefined,
            undefined,
            keys.inventory,
          ),
          exchange(() => redis.hgetall(movesOutKey(prefix, productId, label)), undefined, undefined, keys.inventory),
        ]);
        const [stock, held, sold, generation] = fields;
        const movesOut = Object.entries(journal).map(([moveId, json]): JournaledMove => {
          const move = JSON.parse(json) as { to: number; units: number; generation: number; at: number };
          return { moveId, to: move.to, units: move.units, generation: move.generation, at: move.at };
        });
        const counters =
          stock === null || stock === undefined
            ? null
            : { stock: Number(stock), held: Number(held), sold: Number(sold), generation: Number(generation ?? 0) };
        return { label, counters, movesOut };
      }),
    );
  }

  /**
   * A bucketed product's inventory: its first bucket's (with the total stock) and the others' counters added.
   * null when a bucket is missing: the product must be rebuilt, and is, as a product missing in Redis.
   */
  async function bucketedInventory(productId: number, first: Inventory): Promise<Inventory | null> {
    const states = await bucketStates(productId, first.buckets);
    const inventory = { ...first, held: 0, sold: 0 };
    for (const { counters } of states) {
      if (!counters) return null;
      inventory.held += counters.held;
      inventory.sold += counters.sold;
      if (counters.generation !== first.generation) inventory.generation = -1;
    }
    return inventory;
  }

  return {
    /** Redis's clock as this process sees it (ms). */
    now,

    /** PING, for the readiness probe. */
    ping: (): Promise<string> => exchange(() => redis.ping()),

    /** Redis's clock: TIME's seconds and microseconds (src/redis/clock.ts). */
    time: (): Promise<[number, number]> =>
      exchange(
        () => redis.time(),
        ([seconds, micros]) => [Number(seconds), Number(micros)],
      ),

    /**
     * The wrong admin tokens an address presented in the current window, and the ms until the window ends;
     * `add` counts one more first (lua/adminFailures-1.lua).
     */
    async adminFailures(address: string, windowMs: number, add: boolean): Promise<AdminFailures> {
      const key = adminFailuresKey(prefix, address);
      return exchange(
        () => redis.adminFailures(key, windowMs, add ? 1 : 0),
        (reply) => {
          const [replyKey, failures, msLeft] = tuple('adminFailures', reply, 3);
          if (replyKey !== key) throw new ReplyMismatchError('adminFailures', reply);
          return { failures: int('adminFailures', failures), msLeft: int('adminFailures', msLeft) };
        },
      );
    },

    /** Decides one hold request in its product's next batch (lua/reserveStock.lua). */
    reserve: (reservation: Reservation): Promise<ReserveOutcome> => batches.reserve(reservation),

    /**
     * Claims an Idempotency-Key for a request's fingerprint across all products; false when another request
     * has it. Copies of one request pass (the product's script then answers them all alike).
     */
    async claimIdempotencyKey(key: string, fingerprint: string): Promise<boolean> {
      const claimKey = idempotencyClaimKey(prefix, key);
      return exchange(
        () => redis.claimIdempotencyKey(claimKey, fingerprint, settings.idempotencyTtlMs),
        (reply) => {
          // Any reply but {this key, a fingerprint} is another command's.
          if (!Array.isArray(reply) || reply[0] !== claimKey || typeof reply[1] !== 'string')
            throw new ReplyMismatchError('claimIdempotencyKey', reply);
          const first: string = reply[1];
          return first === '' || first === fingerprint;
        },
      );
    },

    /** Gives an Idempotency-Key back when the request that claimed it was refused before any decision. */
    async releaseIdempotencyKey(key: string, fingerprint: string): Promise<void> {
      await exchange(() => redis.releaseIdempotencyKey(idempotencyClaimKey(prefix, key), fingerprint));
    },

    /** Rate-limit counters with this window, counted in batches (lua/countRequests.lua). */
    requestCounts: (windowMs: number) => createRequestCounts(redis, exchange, windowMs),

    async getHold(productId: number, holdId: string): Promise<HoldLookup> {
      return exchange(
        () => redis.getHold(keysOfHold(productId, holdId).holds, keysOfHold(productId, holdId).inventory, holdId),
        (reply) => {
          const [code, record] = tuple('getHold', reply, 2);
          if (code === ScriptCode.HOLD_FOUND)
            return { kind: 'found', record: parseHoldRecord(holdId, text('getHold', record)) };
          if (code === ScriptCode.HOLD_NOT_FOUND) return { kind: 'holdNotFound' };
          if (code === ScriptCode.PRODUCT_NOT_FOUND) return { kind: 'productNotFound' };
          throw new ScriptReplyError('getHold', reply);
        },
      );
    },

    async releaseHold(productId: number, holdId: string): Promise<HoldRelease> {
      return exchange(
        () => redis.releaseHold(...productScriptKeys(keysOfHold(productId, holdId)), holdId, settings.holdRetainMs),
        (reply) => {
          const [code, record] = tuple('releaseHold', reply, 2);
          switch (code) {
            case ScriptCode.HOLD_ENDED:
              return { kind: 'ended', record: parseHoldRecord(holdId, text('releaseHold', record)) };
            case ScriptCode.HOLD_FOUND:
              return { kind: 'alreadyEnded', record: parseHoldRecord(holdId, text('releaseHold', record)) };
            case ScriptCode.HOLD_NOT_FOUND:
              return { kind: 'holdNotFound' };
            case ScriptCode.HOLD_CONVERTED:
              return { kind: 'holdConverted' };
            case ScriptCode.HOLD_CONVERTING:
              return { kind: 'holdConverting' };
            case ScriptCode.PRODUCT_NOT_FOUND:
              return { kind: 'productNotFound' };
            default:
              throw new ScriptReplyError('releaseHold', reply);
          }
        },
      );
    },

    async claimHold(productId: number, holdId: string, claimId: string): Promise<HoldClaim> {
      return exchange(
        () =>
          redis.claimHold(
            ...conversionKeys(productId, holdId),
            holdId,
            claimId,
            settings.conversionLeaseMs,
            settings.holdRetainMs,
          ),
        (reply) => {
          const [code, claim, record, generation] = tuple('claimHold', reply, 4);
          switch (code) {
            case ScriptCode.CLAIMED:
              return {
                kind: 'claimed',
                claimId: text('claimHold', claim),
                record: parseHoldRecord(holdId, text('claimHold', record)),
                generation: int('claimHold', generation),
              };
            case ScriptCode.CLAIM_JOINED:
              return {
                kind: 'joined',
                claimId: text('claimHold', claim),
                record: parseHoldRecord(holdId, text('claimHold', record)),
                generation: int('claimHold', generation),
              };
            case ScriptCode.HOLD_CONVERTED:
              return { kind: 'converted', claimId: text('claimHold', claim) };
            case ScriptCode.HOLD_NOT_FOUND:
              return { kind: 'holdNotFound' };
            case ScriptCode.HOLD_EXPIRED:
              return { kind: 'holdExpired' };
            case ScriptCode.HOLD_RELEASED:
              return { kind: 'holdReleased' };
            case ScriptCode.PRODUCT_NOT_FOUND:
              return { kind: 'productNotFound' };
            default:
              throw new ScriptReplyError('claimHold', reply);
          }
        },
      );
    },

    /** Moves a converting hold's units from held to sold, once its order is committed (lua/finishConversion-6.lua). */
    async finishConversion(productId: number, holdId: string, orderId: number): Promise<HoldStep> {
      return exchange(
        () =>
          redis.finishConversion(
            ...conversionKeys(productId, holdId),
            holdId,
            String(orderId),
            settings.convertedHoldRetainMs,
          ),
        (reply) => {
          return holdStep('finishConversion', reply, ScriptCode.CONVERTED);
        },
      );
    },

    /** Gives up a claim Postgres recorded as abandoned; the hold is a hold again (lua/abandonClaim-6.lua). */
    async abandonClaim(productId: number, holdId: string, claimId: string): Promise<HoldStep> {
      return exchange(
        () => redis.abandonClaim(...conversionKeys(productId, holdId), holdId, claimId, settings.holdRetainMs),
        (reply) => {
          return holdStep('abandonClaim', reply, ScriptCode.CLAIM_ABANDONED);
        },
      );
    },

    /** Puts a cancelled order's units back on sale, once (lua/returnSoldUnits-3.lua). */
    async returnSoldUnits(productId: number, holdId: string): Promise<HoldStep> {
      const keys = keysOfHold(productId, holdId);
      return exchange(
        () => redis.returnSoldUnits(keys.inventory, keys.holds, keys.customerUnits, holdId),
        (reply) => {
          return holdStep('returnSoldUnits', reply, ScriptCode.UNITS_RETURNED);
        },
      );
    },

    /** Leases the products (their buckets) whose sweep is due to this instance (lua/claimDueProducts-1.lua). */
    async claimDueProducts(limit: number, leaseMs: number): Promise<SweepTarget[]> {
      return exchange(
        () => redis.claimDueProducts(sweepScheduleKey(prefix), limit, leaseMs),
        (reply) => {
          if (!Array.isArray(reply)) throw new ScriptReplyError('claimDueProducts', reply);
          return reply.map(sweepTarget);
        },
      );
    },

    /** One sweep step of one product's bucket (lua/releaseExpiredHolds-6.lua). */
    async releaseExpiredHolds(productId: number, batch: number, label = 0): Promise<SweepStep> {
      return exchange(
        () =>
          redis.releaseExpiredHolds(
            ...conversionScriptKeys(keysOf(productId, label)),
            batch,
            settings.holdRetainMs,
            settings.holdTtlMs,
            settings.conversionLeaseMs,
          ),
        (reply) => {
          const [expired, purged, nextSweepAt, ...claims] = tuple('releaseExpiredHolds', reply, 3);
          if (claims.length % 2 !== 0) throw new ScriptReplyError('releaseExpiredHolds', reply);
          const staleClaims: SweepStep['staleClaims'] = [];
          for (let i = 0; i < claims.length; i += 2) {
            staleClaims.push({
              holdId: text('releaseExpiredHolds', claims[i]),
              claimId: text('releaseExpiredHolds', claims[i + 1]),
            });
          }
          return {
            expired: int('releaseExpiredHolds', expired),
            purged: int('releaseExpiredHolds', purged),
            nextSweepAt: int('releaseExpiredHolds', nextSweepAt),
            staleClaims,
          };
        },
      );
    },

    /**
     * Puts a product on the sweep schedule at `at` (ms, Redis's clock): `new` only if it is not on it yet (a
     * product loaded), `sooner` only if it is on it and `at` is sooner than planned (never adds a member, so a
     * request naming a product that does not exist cannot grow the schedule), `always` in any case.
     */
    async scheduleSweep(productId: number, at: number, when: 'new' | 'sooner' | 'always', label = 0): Promise<void> {
      const key = sweepScheduleKey(prefix);
      const member = sweepMember(productId, label);
      await exchange(() =>
        when === 'new'
          ? redis.zadd(key, 'NX', at, member)
          : when === 'sooner'
            ? redis.zadd(key, 'XX', 'LT', at, member)
            : redis.zadd(key, at, member),
      );
    },

    /**
     * Brings every product whose next sweep is planned after `at` (ms, Redis's clock) forward to `at`, a chunk
     * at a time, and returns how many it moved. A run with a longer HOLD_TTL_SECONDS plans sweeps further ahead
     * than this one's holds expire: the sweeper bounds the schedule by this run's hold time before each pass,
     * and `flashsale expire-holds` makes every product due (`at` 0).
     */
    async bringSweepsForward(at: number): Promise<number> {
      const key = sweepScheduleKey(prefix);
      let moved = 0;
      for (;;) {
        // Products moved leave the range, so each read starts from the front.
        const members = await exchange(() => redis.zrangebyscore(key, `(${at}`, '+inf', 'LIMIT', 0, SCHEDULE_CHUNK));
        if (members.length === 0) return moved;
        // XX: a product removed meanwhile is not put back; LT: one rescheduled sooner meanwhile keeps its place.
        await exchange(() => redis.zadd(key, 'XX', 'LT', ...members.flatMap((member) => [String(at), member])));
        moved += members.length;
        if (members.length < SCHEDULE_CHUNK) return moved;
      }
    },

    /** Sets the copy marker; true when it was missing (Redis lost its data, or this is its first use). */
    async markCopies(): Promise<boolean> {
      const set = await exchange(() => redis.set(copyMarkerKey(prefix), '1', 'NX'));
      return set === 'OK';
    },

    /**
     * (Re)builds a product's copy in Redis from the ledger under `generation`, dropping whatever Redis held for it
     * under another one (lua/rebuildProduct-8.lua); of a bucketed product, one bucket, from its part of the ledger. The caller holds the product's row lock in Postgres.
     */
    async rebuildProduct(
      product: {
        id: number;
        stock: number;
        per_customer_limit: number | null;
        price_cents: number;
        name: string;
        stock_version: number;
      },
      generation: number,
      ledger: SalesLedger,
      bucket: BucketRebuild = { label: 0, buckets: 1, share: product.stock },
    ): Promise<{ rebuilt: boolean; droppedHeldUnits: number; droppedRecords: number }> {
      const { label } = bucket;
      const reply = await exchange(() =>
        redis.rebuildProduct(
          ...conversionScriptKeys(keysOf(product.id, label)),
          movesOutKey(prefix, product.id, label),
          movesInKey(prefix, product.id, label),
          generation,
          bucket.share,
          product.per_customer_limit ?? 0,
          product.price_cents,
          product.name,
          product.stock_version,
          ledger.sold,
          JSON.stringify(ledger.customerUnits.map((c) => [c.customer_id, c.units])),
          JSON.stringify(
            ledger.convertedHolds.map((h) => [h.hold_id, h.order_id, h.customer_id ?? '', h.qty, h.unit_price_cents]),
          ),
          settings.convertedHoldRetainMs,
          label === 0 ? bucket.buckets : 0,
          product.stock,
        ),
      );
      const [code, droppedHeldUnits, droppedRecords] = tuple('rebuildProduct', reply, 3);
      if (code !== ScriptCode.PRODUCT_LOADED && code !== ScriptCode.UNCHANGED) {
        throw new ScriptReplyError('rebuildProduct', reply);
      }
      return {
        rebuilt: code === ScriptCode.PRODUCT_LOADED,
        droppedHeldUnits: int('rebuildProduct', droppedHeldUnits),
        droppedRecords: int('rebuildProduct', droppedRecords),
      };
    },

    /** Sets a product's stock under a version from Postgres (lua/setStock-5.lua). */
    async setStock(productId: number, stock: number, version: number): Promise<StockChange> {
      return exchange(
        () =>
          redis.setStock(
            ...productScriptKeys(keysOf(productId)),
            stock,
            version,
            settings.inlineExpiryLimit,
            settings.holdRetainMs,
          ),
        (reply) => {
          const [code, ...figures] = tuple('setStock', reply, 4);
          const [current, held, sold] = figures.map((n) => int('setStock', n)) as [number, number, number];
          switch (code) {
            case ScriptCode.STOCK_SET:
              return { kind: 'stockSet', stock: current, held, sold };
            case ScriptCode.UNCHANGED:
              return { kind: 'unchanged', stock: current, held, sold };
            case ScriptCode.STOCK_BELOW_COMMITTED:
              return { kind: 'stockBelowCommitted', stock, held, sold };
            case ScriptCode.PRODUCT_NOT_FOUND:
              return { kind: 'productNotFound' };
            default:
              throw new ScriptReplyError('setStock', reply);
          }
        },
      );
    },

    /** Rewrites a product's counters and indexes from its hold records and Postgres (lua/repairProduct-6.lua). */
    async repairProduct(productId: number, repair: ProductRepair): Promise<RepairOutcome> {
      const lines = (rows: string[][]) => rows.map((fields) => fields.join('\t')).join('\n');
      const reply = await exchange(() =>
        redis.repairProduct(
          ...conversionScriptKeys(keysOf(productId)),
          repair.stock,
          repair.stockVersion,
          repair.liveUnits,
          lines([...repair.liveUnitsByCustomer].map(([customer, units]) => [customer, String(units)])),
          lines(repair.inFlight.map((hold) => [hold.holdId, hold.kind])),
        ),
      );
      const [code, ...figures] = tuple('repairProduct', reply, 1);
      if (code === ScriptCode.PRODUCT_NOT_FOUND) return { kind: 'productNotFound' };
      if (code === ScriptCode.HOLDS_CHANGED) return { kind: 'holdsChanged', holdId: text('repairProduct', figures[0]) };
      if (code !== ScriptCode.PRODUCT_REPAIRED || figures.length !== 9)
        throw new ScriptReplyError('repairProduct', reply);
      const [stock0, held0, sold0, stock, held, sold, customers, reindexed, dropped] = figures.map((n) =>
        int('repairProduct', n),
      ) as [number, number, number, number, number, number, number, number, number];
      return {
        kind: 'repaired',
        before: { stock: stock0, held: held0, sold: sold0 },
        after: { stock, held, sold },
        customersCorrected: customers,
        holdsReindexed: reindexed,
        indexEntriesDropped: dropped,
      };
    },

    /**
     * What the metrics show of each product (src/observability/metrics.ts), in order, in one pipeline: its
     * counters, active holds and earliest hold expiry; null for a product Redis does not have.
     */
    productFigures,

    /**
     * The earliest hold expiry (ms) among the first `limit` products that are due on the sweep schedule (the
     * sweeper lag's source: a product past due there is one the sweeper has not come to); null when none is.
     */
    async oldestDueExpiry(now: number, limit: number): Promise<number | null> {
      const due = await exchange(() =>
        redis.zrangebyscore(sweepScheduleKey(prefix), '-inf', Math.floor(now), 'LIMIT', 0, limit),
      );
      if (due.length === 0) return null;
      // A bucketed product's figures cover all its buckets: each product is asked about once.
      const figures = await productFigures([...new Set(due.map((member) => sweepTarget(member).productId))]);
      const expiries = figures.flatMap((f) => (f?.oldestExpiry == null ? [] : [f.oldestExpiry]));
      return expiries.length === 0 ? null : Math.min(...expiries);
    },

    /** How many hold records each product keeps (live and ended, until purged), in order. */
    async holdRecordCounts(productIds: number[]): Promise<number[]> {
      const replies = await pipelinePerNode(
        redis,
        exchange,
        productIds,
        (id) => keysOf(id).holds,
        (pipeline, id) => pipeline.hlen(keysOf(id).holds),
      );
      return productIds.map((_id, i) => {
        const [err, count] = replies[i]?.[0] ?? [new ScriptReplyError('hlen', 'no reply in the pipeline')];
        if (err) rethrowRedisFailure(err);
        return Number(count);
      });
    },

    /** The live counters of each product, in order; null for a product Redis does not have. */
    async inventories(productIds: number[]): Promise<(Inventory | null)[]> {
      let firsts: (Inventory | null)[];
      if (productIds.length === 1) {
        firsts = await exchange(
          () => redis.hmget(keysOf(productIds[0]!).inventory, ...INVENTORY_FIELDS),
          (fields) => [toInventory(fields)],
        );
      } else {
        const replies = await pipelinePerNode(
          redis,
          exchange,
          productIds,
          (id) => keysOf(id).inventory,
          (pipeline, id) => pipeline.hmget(keysOf(id).inventory, ...INVENTORY_FIELDS),
        );
        firsts = productIds.map((_id, i) => {
          const [err, fields] = replies[i]?.[0] ?? [new ScriptReplyError('hmget', 'no reply in the pipeline')];
          if (err) rethrowRedisFailure(err);
          return toInventory(fields as (string | null)[]);
        });
      }
      if (firsts.every((first) => !first || first.buckets <= 1)) return firsts;
      return Promise.all(
        firsts.map((first, i) => (first && first.buckets > 1 ? bucketedInventory(productIds[i]!, first) : first)),
      );
    },

    /**
     * How a product's holds are routed: its stock buckets (1: not split, or not in Redis yet) and whether it has a
     * per-customer limit, read from its first bucket once per instance: both are fixed when it is created.
     */
    async bucketRouting(productId: number): Promise<BucketRouting> {
      const known = routings.get(productId);
      if (known) return known;
      const key = keysOf(productId).inventory;
      const [stock, buckets, limit] = await exchange(
        () => redis.hmget(key, 'stock', 'buckets', 'per_customer_limit'),
        undefined,
        undefined,
        key,
      );
      if (stock === null || stock === undefined) return { buckets: 1, limited: false };
      const routing = { buckets: Number(buckets ?? 1), limited: Number(limit ?? 0) > 0 };
      routings.set(productId, routing);
      return routing;
    },

    bucketStates,

    /**
     * The first half of a move of stock between two buckets: takes up to `units` of the source's available
     * units out of its share and journals the move in its slot (lua/moveStockOut-2.lua).
     */
    async moveStockOut(
      productId: number,
      from: number,
      to: number,
      moveId: string,
      units: number,
    ): Promise<JournaledMove | null> {
      return exchange(
        () =>
          redis.moveStockOut(
            keysOf(productId, from).inventory,
            movesOutKey(prefix, productId, from),
            moveId,
            to,
            units,
          ),
        (reply) => {
          const [code, moved, generation, at] = tuple('moveStockOut', reply, 4);
          if (code === ScriptCode.PRODUCT_NOT_FOUND) return null;
          if (code !== ScriptCode.MOVED_OUT && code !== ScriptCode.UNCHANGED)
            throw new ScriptReplyError('moveStockOut', reply);
          const units = int('moveStockOut', moved);
          if (units === 0) return null;
          return { moveId, to, units, generation: int('moveStockOut', generation), at: int('moveStockOut', at) };
        },
        undefined,
        keysOf(productId, from).inventory,
      );
    },

    /**
     * The second half: adds a journaled move's units to its target's share, once per move id
     * (lua/moveStockIn-2.lua). `moved`/`applied`: the units are there; `stale`: never to be applied (the product
     * was rebuilt since, or the move is too old); `missing`: the target's copy is lost (the rebuild counts them).
     */
    async moveStockIn(productId: number, move: JournaledMove): Promise<'moved' | 'applied' | 'stale' | 'missing'> {
      return exchange(
        () =>
          redis.moveStockIn(
            keysOf(productId, move.to).inventory,
            movesInKey(prefix, productId, move.to),
            move.moveId,
            move.units,
            move.generation,
            move.at,
            MOVE_MEMORY_MS,
          ),
        (reply) => {
          const [code] = tuple('moveStockIn', reply, 1);
          switch (code) {
            case ScriptCode.MOVED_IN:
              return 'moved';
            case ScriptCode.UNCHANGED:
              return 'applied';
            case ScriptCode.STALE_MOVE:
              return 'stale';
            case ScriptCode.PRODUCT_NOT_FOUND:
              return 'missing';
            default:
              throw new ScriptReplyError('moveStockIn', reply);
          }
        },
        undefined,
        keysOf(productId, move.to).inventory,
      );
    },

    /** Drops a move from its source's journal once its target has the units (or never will). */
    async finishMove(productId: number, from: number, moveId: string): Promise<void> {
      const key = movesOutKey(prefix, productId, from);
      await exchange(() => redis.hdel(key, moveId), undefined, undefined, key);
    },
  };
}

function toInventory(fields: (string | null)[]): Inventory | null {
  const [name, price, stock, held, sold, limit, generation, stockVersion, buckets, total] = fields;
  if (stock === null || stock === undefined) return null;
  return {
    name: name ?? '',
    price_cents: Number(price),
    stock: Number(total ?? stock),
    buckets: Number(buckets ?? 1),
    held: Number(held),
    sold: Number(sold),
    per_customer_limit: Number(limit ?? 0),
    generation: Number(generation ?? 0),
    stock_version: Number(stockVersion ?? 0),
  };
}

/** The common reply of the hold-step scripts: {code, hold status}. */
function holdStep(command: string, reply: unknown, done: ScriptCode): HoldStep {
  const [code, status] = tuple(command, reply, 2);
  const holdStatus = text(command, status);
  switch (code) {
    case done:
      return { kind: 'done', status: holdStatus };
    case ScriptCode.UNCHANGED:
      return { kind: 'unchanged', status: holdStatus };
    case ScriptCode.WRONG_HOLD_STATE:
      return { kind: 'wrongHoldState', status: holdStatus };
    case ScriptCode.HOLD_NOT_FOUND:
      return { kind: 'holdNotFound' };
    default:
      throw new ScriptReplyError(command, reply);
  }
}

/** A reply that must be an array of at least `length` elements. */
function tuple(command: string, reply: unknown, length: number): unknown[] {
  if (!Array.isArray(reply) || reply.length < length) throw new ScriptReplyError(command, reply);
  return reply;
}

function int(command: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new ScriptReplyError(command, value);
  return value;
}

function text(command: string, value: unknown): string {
  if (typeof value !== 'string') throw new ScriptReplyError(command, value);
  return value;
}
