import type { SalesLedger } from '../db/products.js';
import type { Settings } from '../settings.js';
import { ReplyMismatchError, rethrowRedisFailure, ScriptReplyError } from './errors.js';
import { createExchange, pipelinePerNode, type RedisClient } from './connection.js';
import { parseHoldRecord, type HoldRecord } from './hold-record.js';
import {
  adminFailuresKey,
  conversionScriptKeys,
  copyMarkerKey,
  idempotencyClaimKey,
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

/** A product's live counters as Redis holds them. */
export interface Inventory {
  name: string;
  price_cents: number;
  stock: number;
  held: number;
  sold: number;
  /** 0: none. */
  per_customer_limit: number;
  /** Of the copy (src/domain/redis-rebuild.ts); 0 for a copy made before generations existed. */
  generation: number;
  stock_version: number;
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
] as const;

export type RedisCommands = ReturnType<typeof createRedisCommands>;

/** `now`: Redis's clock as this process sees it (src/redis/clock.ts); hold batches get their deadlines on it. */
export function createRedisCommands(redis: RedisClient, settings: Settings, now: () => number = Date.now) {
  const prefix = settings.redisKeyPrefix;
  const keysOf = (productId: number): ProductKeys => productKeys(prefix, productId);
  const conversionKeys = (productId: number) => conversionScriptKeys(keysOf(productId));
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
        pipeline.hmget(keys.inventory, 'stock', 'held', 'sold');
        pipeline.zcard(keys.holdExpiries);
        pipeline.zrange(keys.holdExpiries, '0', '0', 'WITHSCORES');
      },
    );
    const reply = (i: number, k: number): unknown => {
      const [err, value] = replies[i]?.[k] ?? [new ScriptReplyError('productFigures', 'no reply in the pipeline')];
      if (err) rethrowRedisFailure(err);
      return value;
    };
    return productIds.map((_id, i) => {
      const [stock, held, sold] = reply(i, 0) as (string | null)[];
      if (stock === null || stock === undefined) return null;
      const [, oldest] = reply(i, 2) as string[];
      return {
        stock: Number(stock),
        held: Number(held ?? 0),
        sold: Number(sold ?? 0),
        activeHolds: Number(reply(i, 1)),
        oldestExpiry: oldest === undefined ? null : Number(oldest),
      };
    });
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
        () => redis.getHold(keysOf(productId).holds, keysOf(productId).inventory, holdId),
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
        () => redis.releaseHold(...productScriptKeys(keysOf(productId)), holdId, settings.holdRetainMs),
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
            ...conversionKeys(productId),
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
          redis.finishConversion(...conversionKeys(productId), holdId, String(orderId), settings.convertedHoldRetainMs),
        (reply) => {
          return holdStep('finishConversion', reply, ScriptCode.CONVERTED);
        },
      );
    },

    /** Gives up a claim Postgres recorded as abandoned; the hold is a hold again (lua/abandonClaim-6.lua). */
    async abandonClaim(productId: number, holdId: string, claimId: string): Promise<HoldStep> {
      return exchange(
        () => redis.abandonClaim(...conversionKeys(productId), holdId, claimId, settings.holdRetainMs),
        (reply) => {
          return holdStep('abandonClaim', reply, ScriptCode.CLAIM_ABANDONED);
        },
      );
    },

    /** Puts a cancelled order's units back on sale, once (lua/returnSoldUnits-3.lua). */
    async returnSoldUnits(productId: number, holdId: string): Promise<HoldStep> {
      const keys = keysOf(productId);
      return exchange(
        () => redis.returnSoldUnits(keys.inventory, keys.holds, keys.customerUnits, holdId),
        (reply) => {
          return holdStep('returnSoldUnits', reply, ScriptCode.UNITS_RETURNED);
        },
      );
    },

    /** Leases the products whose sweep is due to this instance (lua/claimDueProducts-1.lua). */
    async claimDueProducts(limit: number, leaseMs: number): Promise<number[]> {
      return exchange(
        () => redis.claimDueProducts(sweepScheduleKey(prefix), limit, leaseMs),
        (reply) => {
          if (!Array.isArray(reply)) throw new ScriptReplyError('claimDueProducts', reply);
          return reply.map((id) => int('claimDueProducts', Number(id)));
        },
      );
    },

    /** One sweep step of one product (lua/releaseExpiredHolds-6.lua). */
    async releaseExpiredHolds(productId: number, batch: number): Promise<SweepStep> {
      return exchange(
        () =>
          redis.releaseExpiredHolds(
            ...conversionKeys(productId),
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
    async scheduleSweep(productId: number, at: number, when: 'new' | 'sooner' | 'always'): Promise<void> {
      const key = sweepScheduleKey(prefix);
      const member = String(productId);
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
     * under another one (lua/rebuildProduct-6.lua). The caller holds the product's row lock in Postgres.
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
    ): Promise<{ rebuilt: boolean; droppedHeldUnits: number; droppedRecords: number }> {
      const reply = await exchange(() =>
        redis.rebuildProduct(
          ...conversionKeys(product.id),
          generation,
          product.stock,
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
          ...conversionKeys(productId),
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
      const figures = await productFigures(due.map(Number));
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
      if (productIds.length === 1) {
        return exchange(
          () => redis.hmget(keysOf(productIds[0]!).inventory, ...INVENTORY_FIELDS),
          (fields) => [toInventory(fields)],
        );
      }
      const replies = await pipelinePerNode(
        redis,
        exchange,
        productIds,
        (id) => keysOf(id).inventory,
        (pipeline, id) => pipeline.hmget(keysOf(id).inventory, ...INVENTORY_FIELDS),
      );
      return productIds.map((_id, i) => {
        const [err, fields] = replies[i]?.[0] ?? [new ScriptReplyError('hmget', 'no reply in the pipeline')];
        if (err) rethrowRedisFailure(err);
        return toInventory(fields as (string | null)[]);
      });
    },
  };
}

function toInventory(fields: (string | null)[]): Inventory | null {
  const [name, price, stock, held, sold, limit, generation, stockVersion] = fields;
  if (stock === null || stock === undefined) return null;
  return {
    name: name ?? '',
    price_cents: Number(price),
    stock: Number(stock),
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
