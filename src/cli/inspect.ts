import type { RedisClient } from '../redis/connection.js';
import { productOfHold } from '../domain/hold-ids.js';
import { productKeys, sweepScheduleKey } from '../redis/keys.js';
import {
  EXIT,
  parseCommand,
  print,
  productIdArg,
  UsageError,
  withStores,
  type Command,
  type Stores,
} from './command.js';

const USAGE = `
usage: flashsale inspect product ID | hold ID | order ID [--json] [--limit N]
The Redis keys and Postgres rows behind one product, hold or order, read as they are (nothing is loaded or
changed): what redis-cli and psql would show.
  product ID   its inventory hash, sweep-schedule entry, index sizes, conversions, customer units, up to
               --limit next-to-expire holds; its row and its orders by status
  hold ID      its hold record, its entries in the expiry, ended and conversion indexes, its customer's units;
               its claims and its order (with items, payments and webhook deliveries)
  order ID     its row, items, payments, webhook deliveries and claims; its hold's record and index entries
  --limit N    most entries listed of a long key or table (default 20)
  --json       the same as JSON
exit: 0 found, 1 nothing by that id in either store, 2 bad arguments`;

/** One Redis key as read: its name, its type and what it holds (a part only, for long ones). */
interface KeyView {
  key: string;
  type: string;
  /** For a field of a hash or a member of a sorted set: which one. */
  field?: string;
  value: unknown;
}

interface Inspection {
  redis: KeyView[];
  postgres: Record<string, unknown[]>;
}

/** `flashsale inspect`: what is stored about one thing, in both stores. */
export const inspect: Command = {
  async run(args) {
    const parsed = parseCommand(args, USAGE, {
      json: { type: 'boolean', default: false },
      limit: { type: 'string', default: '20' },
    });
    if (!parsed) return EXIT.OK;
    const [kind, id, ...rest] = parsed.positionals;
    if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`);
    if (!/^[1-9]\d{0,5}$/.test(parsed.values.limit))
      throw new UsageError(`--limit: not a count: ${parsed.values.limit}`);
    const limit = Number(parsed.values.limit);
    let read: (stores: Stores) => Promise<Inspection>;
    if (kind === 'product') {
      const productId = productIdArg(id);
      read = (stores) => inspectProduct(stores, productId, limit);
    } else if (kind === 'hold') {
      if (id === undefined) throw new UsageError('missing hold id');
      const productId = productOfHold(id);
      if (productId === null) throw new UsageError(`not a hold id (<product id>-<12 characters>): ${id}`);
      read = (stores) => inspectHold(stores, productId, id, limit);
    } else if (kind === 'order') {
      const orderId = productIdArg(id, 'order id');
      read = (stores) => inspectOrder(stores, orderId, limit);
    } else {
      throw new UsageError(kind === undefined ? 'missing what to inspect' : `cannot inspect a ${kind}`);
    }
    return withStores(async (stores) => {
      const found = await read(stores);
      const empty =
        found.redis.every((k) => k.value === null || k.value === 0) &&
        Object.values(found.postgres).every((rows) => rows.length === 0);
      if (empty) {
        process.stderr.write(`no ${kind} ${id} in Redis or Postgres\n`);
        return EXIT.PROBLEM;
      }
      print(parsed.values.json, found, () => formatInspection(found));
      return EXIT.OK;
    });
  },
};

async function inspectProduct({ db, redis, config }: Stores, productId: number, limit: number): Promise<Inspection> {
  const keys = productKeys(config.REDIS_KEY_PREFIX, productId);
  const schedule = sweepScheduleKey(config.REDIS_KEY_PREFIX);
  const views: KeyView[] = [
    { key: keys.inventory, type: 'hash', value: await hashOrNull(redis, keys.inventory) },
    {
      key: schedule,
      type: 'zset',
      field: String(productId),
      value: await scoreView(redis, schedule, String(productId)),
    },
    {
      key: keys.holdExpiries,
      type: 'zset',
      field: `next ${limit}`,
      value: await zsetView(redis, keys.holdExpiries, limit),
    },
    { key: keys.holds, type: 'hash', field: 'count', value: await redis.hlen(keys.holds) },
    { key: keys.endedHolds, type: 'zset', field: 'count', value: await redis.zcard(keys.endedHolds) },
    { key: keys.conversions, type: 'zset', value: await zsetView(redis, keys.conversions, limit) },
    { key: keys.customerUnits, type: 'hash', value: await hashOrNull(redis, keys.customerUnits, limit) },
  ];
  const product = await db.selectFrom('products').selectAll().where('id', '=', productId).execute();
  // The count an order must fit in the stock by (src/db/orders.ts); the orders by status below should agree.
  const sales = await db.selectFrom('product_sales').selectAll().where('product_id', '=', productId).execute();
  const ordersByStatus = await db
    .selectFrom('orders')
    .innerJoin('order_items', 'order_items.order_id', 'orders.id')
    .select([
      'orders.status',
      (eb) => eb.fn.countAll<number>().as('orders'),
      (eb) => eb.fn.sum<number>('order_items.qty').as('units'),
    ])
    .where('order_items.product_id', '=', productId)
    .groupBy('orders.status')
    .orderBy('orders.status')
    .execute();
  const latestOrders = await db
    .selectFrom('orders')
    .innerJoin('order_items', 'order_items.order_id', 'orders.id')
    .select([
      'orders.id',
      'orders.hold_id',
      'orders.status',
      'orders.payment_status',
      'order_items.qty',
      'orders.created_at',
    ])
    .where('order_items.product_id', '=', productId)
    .orderBy('orders.id', 'desc')
    .limit(limit)
    .execute();
  return {
    redis: views,
    postgres: {
      products: product,
      product_sales: sales,
      'orders by status': product.length ? ordersByStatus : [],
      'latest orders': latestOrders,
    },
  };
}

async function inspectHold(stores: Stores, productId: number, holdId: string, limit: number): Promise<Inspection> {
  const { db, redis, config } = stores;
  const keys = productKeys(config.REDIS_KEY_PREFIX, productId);
  const json = await redis.hget(keys.holds, holdId);
  const record = json === null ? null : (parseJson(json) as { customer_id?: string } | string);
  const views: KeyView[] = [
    { key: keys.holds, type: 'hash', field: holdId, value: record },
    { key: keys.holdExpiries, type: 'zset', field: holdId, value: await scoreView(redis, keys.holdExpiries, holdId) },
    { key: keys.endedHolds, type: 'zset', field: holdId, value: await scoreView(redis, keys.endedHolds, holdId) },
    { key: keys.conversions, type: 'zset', field: holdId, value: await scoreView(redis, keys.conversions, holdId) },
  ];
  const customer = typeof record === 'object' && record !== null ? record.customer_id : undefined;
  if (customer !== undefined)
    views.push({
      key: keys.customerUnits,
      type: 'hash',
      field: customer,
      value: await redis.hget(keys.customerUnits, customer),
    });
  const claims = await db
    .selectFrom('hold_claims')
    .selectAll()
    .where('hold_id', '=', holdId)
    .orderBy('created_at')
    .execute();
  const orders = await db.selectFrom('orders').selectAll().where('hold_id', '=', holdId).execute();
  return {
    redis: views,
    postgres: {
      hold_claims: claims,
      orders,
      ...(await orderRows(
        stores,
        orders.map((o) => o.id),
        limit,
      )),
    },
  };
}

async function inspectOrder(stores: Stores, orderId: number, limit: number): Promise<Inspection> {
  const { db } = stores;
  const orders = await db.selectFrom('orders').selectAll().where('id', '=', orderId).execute();
  const rows = await orderRows(stores, [orderId], limit);
  const order = orders[0];
  if (!order) return { redis: [], postgres: { orders, ...rows } };
  const productId = productOfHold(order.hold_id);
  const hold =
    productId === null ? { redis: [], postgres: {} } : await inspectHold(stores, productId, order.hold_id, limit);
  const inventories: KeyView[] = [];
  for (const item of rows.order_items as { product_id: number }[]) {
    const key = productKeys(stores.config.REDIS_KEY_PREFIX, item.product_id).inventory;
    inventories.push({ key, type: 'hash', value: await hashOrNull(stores.redis, key) });
  }
  const claims = (hold.postgres.hold_claims as unknown[] | undefined) ?? [];
  return { redis: [...hold.redis, ...inventories], postgres: { orders, ...rows, hold_claims: claims } };
}

/** The items, payments and webhook deliveries of some orders. */
async function orderRows({ db }: Stores, orderIds: number[], limit: number): Promise<Record<string, unknown[]>> {
  if (orderIds.length === 0) return { order_items: [], payments: [], webhook_deliveries: [] };
  return {
    order_items: await db
      .selectFrom('order_items')
      .selectAll()
      .where('order_id', 'in', orderIds)
      .orderBy('id')
      .execute(),
    payments: await db.selectFrom('payments').selectAll().where('order_id', 'in', orderIds).orderBy('id').execute(),
    webhook_deliveries: await db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('order_id', 'in', orderIds)
      .orderBy('id', 'desc')
      .limit(limit)
      .execute(),
  };
}

async function hashOrNull(redis: RedisClient, key: string, limit?: number): Promise<Record<string, string> | null> {
  const all = await redis.hgetall(key);
  const entries = Object.entries(all);
  if (entries.length === 0) return null;
  return Object.fromEntries(limit === undefined ? entries : entries.slice(0, limit));
}

/** A sorted-set member's score, shown with its time when it is one (every score of these keys is ms). */
async function scoreView(redis: RedisClient, key: string, member: string): Promise<string | null> {
  const score = await redis.zscore(key, member);
  return score === null ? null : withTime(score);
}

async function zsetView(redis: RedisClient, key: string, limit: number): Promise<Record<string, string> | null> {
  const flat = await redis.zrange(key, '0', String(limit - 1), 'WITHSCORES');
  if (flat.length === 0) return null;
  const view: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) view[flat[i]!] = withTime(flat[i + 1]!);
  const total = await redis.zcard(key);
  if (total > limit) view['…'] = `${total - limit} more`;
  return view;
}

function withTime(score: string): string {
  const ms = Number(score);
  return ms > 1e12 && ms < 1e14 ? `${score} (${new Date(ms).toISOString()})` : score;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The inspection for people: each key with what it holds, then each table with its rows. */
function formatInspection({ redis, postgres }: Inspection): string {
  const lines = ['redis:'];
  for (const view of redis) {
    const name = `  ${view.key} (${view.type})${view.field === undefined ? '' : ` [${view.field}]`}`;
    if (view.value === null) lines.push(`${name}: (none)`);
    else if (typeof view.value === 'object') {
      lines.push(`${name}:`);
      for (const [field, value] of Object.entries(view.value as Record<string, unknown>))
        lines.push(`      ${field}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
    } else lines.push(`${name}: ${String(view.value)}`);
  }
  lines.push('postgres:');
  for (const [table, rows] of Object.entries(postgres)) {
    lines.push(`  ${table}: ${rows.length === 0 ? '(none)' : ''}`.trimEnd());
    for (const row of rows) lines.push(`    ${formatRow(row as Record<string, unknown>)}`);
  }
  return lines.join('\n');
}

function formatRow(row: Record<string, unknown>): string {
  return Object.entries(row)
    .map(
      ([column, value]) =>
        `${column}=${value instanceof Date ? value.toISOString() : typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value)}`,
    )
    .join(' ');
}
