import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { signPayload } from '../src/domain/signatures.js';
import type { Config } from '../src/config.js';
import { admin, buildTestApp, createProduct, type TestApp } from './support/app.js';
import { privateRedis } from './support/private-redis.js';

/**
 * Property-based fuzzing of every route with fast-check: random bodies, paths, query strings and headers. The
 * properties: no answer is a 5xx, and a 4xx writes nothing (Postgres row counts and last updates, and Redis's own
 * count of changes, are the same after it). The service runs on a Redis of the test's own, so that count is this
 * test's alone. A failure prints fast-check's seed and the shrunk request (FUZZ_SEED replays it); FUZZ_RUNS raises
 * the number of cases.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);
/** FUZZ_SEED replays a failed run with the seed fast-check printed. */
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const SECRET = 'whsec_fuzz_0123456789';
const TABLES = ['products', 'orders', 'order_items', 'payments', 'hold_claims'] as const;

// --- Values --------------------------------------------------------------------------------------------------

/** A character: any code point, or one of those Postgres or UTF-8 cannot keep (lone surrogates, NUL). */
const character = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom('\ud800', '\udbff', '\udc00', '\udfff', '\u0000', '\u001f', '\u007f') },
  { weight: 6, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
);
const text = fc.oneof(
  fc.string({ unit: character, maxLength: 40 }),
  fc.constantFrom('', ' ', '-1', '0', '0x10', '1e3', '1.0', 'null', 'true', '9'.repeat(40), 'x'.repeat(300), '%00'),
);
const number = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -0, -1, 1, 1.5, 2 ** 31 - 1, 2 ** 31, 2 ** 53, 2 ** 53 + 2, 1e16, 1e16 + 2, 1e300, -1e300),
);
/** Any JSON value, nested a little, with the leaves above. */
const jsonValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    text,
    number,
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(text, tie('value'), { maxKeys: 4 }),
  ),
})).value;
/** Nesting past any limit: the recursion a naive walk of the body would overflow on. */
const deepNest = fc
  .tuple(fc.integer({ min: 30, max: 6000 }), fc.boolean())
  .map(([depth, arrays]) =>
    arrays ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth),
  );

/** The value of one named field: a right-looking one, or anything. */
const field = (...plausible: unknown[]) =>
  fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...plausible) }, { weight: 3, arbitrary: jsonValue });

/** A body as sent: a record of the route's fields (some left out, some extra), or raw text, or deep nesting. */
function bodyOf(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<string> {
  const record = fc
    .tuple(fc.record(fields, { requiredKeys: [] }), fc.dictionary(text, jsonValue, { maxKeys: 2 }))
    .map(([known, extra]) => JSON.stringify(Math.random() < 0.7 ? known : { ...extra, ...known }));
  return fc.oneof(
    { weight: 6, arbitrary: record },
    { weight: 1, arbitrary: jsonValue.map((value) => JSON.stringify(value) ?? 'null') },
    { weight: 1, arbitrary: text },
    { weight: 1, arbitrary: deepNest },
    {
      weight: 1,
      arbitrary: deepNest.map((nest) => `{"idempotency_key":"k","order_id":1,"event_type":"success","x":${nest}}`),
    },
  );
}

/** A header value as an HTTP client could send it: printable Latin-1 (a newline would be refused by the client). */
const headerValue = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)), maxLength: 80 }),
  fc.constantFrom('', 'x'.repeat(300), 'Bearer ', 'application/json'),
);
const contentType = fc.oneof(
  { weight: 8, arbitrary: fc.constant('application/json') },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      'application/json; charset=utf-8',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/jsonx',
    ),
  },
  { weight: 1, arbitrary: headerValue },
);
const headers = fc.record(
  {
    'content-type': contentType,
    'idempotency-key': headerValue,
    'x-request-id': headerValue,
    'x-signature': headerValue,
    authorization: headerValue,
    origin: headerValue,
  },
  { requiredKeys: ['content-type'] },
);
/** A path segment: an id, a number at or past a limit, or any text, percent-encoded or raw. */
const segment = fc.oneof(
  fc.constantFrom('1', '0', '-1', '2147483647', '2147483648', '9007199254740993', '10000000000000000', '1e3', '0x1f'),
  fc.constantFrom('1-AAAAAAAAAAAA', '2147483647-AAAAAAAAAAAA', '..', '%', '%zz', '%ED%A0%80', '%00', 'a%2Fb'),
  text.map((value) => encodeURIComponent(value.replace(/[\ud800-\udfff]/g, 'x'))),
  fc.string({ unit: 'grapheme-ascii', maxLength: 80 }).map((value) => value.replace(/[?#/ ]/g, '')),
);
const query = fc.oneof(
  fc.constant(''),
  fc.dictionary(fc.constantFrom('limit', 'after_id', 'x', 'limit[]'), segment, { maxKeys: 3 }).map(
    (entries) =>
      `?${Object.entries(entries)
        .map(([k, v]) => `${k}=${v}`)
        .join('&')}`,
  ),
  segment.map((raw) => `?${raw}`),
);

// --- Requests ------------------------------------------------------------------------------------------------

interface Target {
  productId: number;
  orderId: number;
  holdId: string;
}

type Fuzzed = Pick<InjectOptions, 'method' | 'url' | 'payload' | 'headers'>;
type Route = (target: Target) => fc.Arbitrary<Fuzzed>;

const withHeaders = (request: fc.Arbitrary<Omit<Fuzzed, 'headers'>>, extra: Record<string, string> = {}) =>
  fc.tuple(request, headers).map(([r, h]) => ({ ...r, headers: { ...h, ...extra } }));

const products: Route = ({ productId }) =>
  fc.oneof(
    withHeaders(query.map((q) => ({ method: 'GET' as const, url: `/api/products${q}` }))),
    withHeaders(segment.map((id) => ({ method: 'GET' as const, url: `/api/products/${id}` }))),
    // Admin routes with the right token: the body gets past the door and is what is fuzzed.
    withHeaders(
      bodyOf({
        name: field('A product', 'x'.repeat(200), 'x'.repeat(201), '\ud800', 'caf\u00e9 \ud83d\ude00'),
        price_cents: field(0, 1, 1999, 100_000_000_00, 100_000_000_01),
        stock: field(0, 5, 1_000_000_000, 1_000_000_001),
        per_customer_limit: field(null, 1, 0, 1_000_000),
      }).map((payload) => ({ method: 'POST' as const, url: '/api/products', payload })),
      admin,
    ),
    withHeaders(
      fc
        .tuple(fc.oneof(fc.constant(String(productId)), segment), bodyOf({ stock: field(0, 3, 1_000_000_000, -1) }))
        .map(([id, payload]) => ({ method: 'PUT' as const, url: `/api/products/${id}/stock`, payload })),
      admin,
    ),
  );

const holds: Route = ({ productId, holdId }) =>
  fc.oneof(
    withHeaders(
      bodyOf({
        product_id: field(productId, 0, 2147483647, 2147483648),
        qty: field(1, 0, 10, 11),
        customer_id: field(null, 'buyer-1', '', 'c'.repeat(129), '\ud800'),
      }).map((payload) => ({ method: 'POST' as const, url: '/api/holds', payload })),
    ),
    withHeaders(
      fc
        .tuple(
          fc.constantFrom('GET', 'DELETE') as fc.Arbitrary<'GET' | 'DELETE'>,
          fc.oneof(fc.constant(holdId), segment),
        )
        .map(([method, id]) => ({ method, url: `/api/holds/${id}` })),
    ),
  );

const orders: Route = ({ holdId }) =>
  fc.oneof(
    withHeaders(
      bodyOf({
        hold_id: field(holdId, '1-AAAAAAAAAAAA', '', 'h'.repeat(65), '\ud800'),
        payment_method: field('card', '', '\u0000', 'p'.repeat(65)),
        payment_status: field('card', '\ud800'),
      }).map((payload) => ({ method: 'POST' as const, url: '/api/orders', payload })),
    ),
    withHeaders(segment.map((id) => ({ method: 'GET' as const, url: `/api/orders/${id}` }))),
  );

const webhookBody = ({ orderId }: Target) =>
  bodyOf({
    idempotency_key: field('evt_1', '', 'k'.repeat(256), '\ud800', 'a\u0000b'),
    order_id: field(orderId, 987_654, 0, 1e16, 1e16 + 2),
    event_type: field('success', 'failure', 'refund'),
    amount_cents: field(3998, 1, -1, 1e16 + 2),
    currency: field('usd', 'EUR', 'us', '\ud800\udc00x'),
    note: field('\ud800', 'a\u0000', 'ok'),
  });

/** Signed correctly (most of the time), so the fuzzed body is what the route reads past the signature. */
const signedWebhooks: Route = (target) =>
  fc.tuple(webhookBody(target), headers, fc.integer({ min: 0, max: 9 })).map(([payload, h, mangle]) => {
    const signature = signPayload(payload, SECRET);
    return {
      method: 'POST' as const,
      url: '/api/webhooks/payment',
      payload,
      headers: { ...h, 'x-signature': mangle === 0 ? (h['x-signature'] ?? '') : signature },
    };
  });

const unsignedWebhooks: Route = (target) =>
  withHeaders(
    webhookBody(target).map((payload) => ({ method: 'POST' as const, url: '/api/webhooks/payment', payload })),
  );

const health: Route = () =>
  withHeaders(
    fc
      .tuple(fc.constantFrom('/healthz', '/readyz', '/healthz/', '/readyz/x'), query)
      .map(([path, q]) => ({ method: 'GET' as const, url: `${path}${q}` })),
  );

// --- What a refusal may not change ---------------------------------------------------------------------------

interface Footprint {
  /** Rows and last change of every table but the two a judged webhook writes to. */
  postgres: string;
  deliveries: number;
  processedWebhooks: number;
  /** Redis's count of changes since it started (INFO persistence), this test's Redis alone. */
  redisChanges: string;
}

/**
 * What the stores hold, in one query and one command; with `postgres` false, Redis alone (for routes that never
 * write to Postgres, whose Postgres is compared once around the whole run).
 */
async function footprint(app: FastifyInstance, redis: Redis, postgres = true): Promise<Footprint> {
  const counts = TABLES.map((table) => `(SELECT count(*) FROM ${table}) AS ${table}`).join(', ');
  const latest = ['orders', 'payments', 'products']
    .map((table) => `(SELECT max(updated_at) FROM ${table}) AS ${table}_updated`)
    .join(', ');
  const [{ rows }, info] = await Promise.all([
    postgres
      ? sql<Record<string, unknown>>`SELECT ${sql.raw(counts)}, ${sql.raw(latest)},
      (SELECT count(*)::int FROM webhook_deliveries) AS deliveries,
      (SELECT count(*)::int FROM processed_webhooks) AS processed`.execute(app.db)
      : { rows: [{ deliveries: 0, processed: 0 }] },
    redis.info('persistence'),
  ]);
  const { deliveries, processed, ...tables } = rows[0]!;
  return {
    postgres: JSON.stringify(tables),
    deliveries: Number(deliveries),
    processedWebhooks: Number(processed),
    redisChanges: /rdb_changes_since_last_save:(\d+)/.exec(info)?.[1] ?? '',
  };
}

/**
 * A 4xx the service records on purpose: a webhook judged against its order (kept for ops; a 409 for an order
 * already final also uses its idempotency key up, so its copies are answered the same), a wrong admin token
 * (its counter), and a hold request's Idempotency-Key, claimed before the product is looked up: remembered with a
 * 409's answer, given back after a 404 (a claim and its release leave nothing, but Redis's change counter counts them).
 */
function recordsRefusal(request: Fuzzed, status: number): { delivery: boolean; key: boolean; redis: boolean } {
  const webhook = request.url === '/api/webhooks/payment';
  const keyedHold =
    request.method === 'POST' && request.url === '/api/holds' && request.headers?.['idempotency-key'] !== undefined;
  return {
    delivery: webhook && [404, 409, 422].includes(status),
    key: webhook && status === 409,
    redis: (status === 401 && !webhook) || (keyedHold && [404, 409].includes(status)),
  };
}

async function fuzzRoute(
  t: Test,
  name: string,
  { app }: TestApp,
  redis: Redis,
  target: Target,
  route: Route,
  writesPostgres = true,
) {
  const statuses = new Map<number, number>();
  const postgresAtStart = (await footprint(app, redis)).postgres;
  // Only requests change the stores (no background work runs), so the state after one is the state before the next.
  let before = await footprint(app, redis, writesPostgres);
  await fc.assert(
    fc.asyncProperty(route(target), async (request) => {
      const answer = await app.inject(request);
      statuses.set(answer.statusCode, (statuses.get(answer.statusCode) ?? 0) + 1);
      const after = await footprint(app, redis, writesPostgres);
      const was = before;
      before = after;
      if (answer.statusCode >= 500) throw new Error(`answered ${answer.statusCode}: ${answer.body}`);
      if (answer.statusCode < 400) return;
      if (!answer.json<{ code?: unknown }>().code) throw new Error(`a ${answer.statusCode} without a code`);
      const allowed = recordsRefusal(request, answer.statusCode);
      if (after.postgres !== was.postgres) throw new Error(`a ${answer.statusCode} changed Postgres`);
      if (!allowed.redis && after.redisChanges !== was.redisChanges) {
        throw new Error(`a ${answer.statusCode} wrote to Redis`);
      }
      if (!allowed.key && after.processedWebhooks !== was.processedWebhooks) {
        throw new Error(`a ${answer.statusCode} used a webhook idempotency key up`);
      }
      if (!allowed.delivery && after.deliveries !== was.deliveries) {
        throw new Error(`a ${answer.statusCode} recorded a webhook delivery`);
      }
    }),
    { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
  );
  if (!writesPostgres) t.equal((await footprint(app, redis)).postgres, postgresAtStart, `${name}: Postgres unchanged`);
  const seen = [...statuses].sort(([a], [b]) => a - b);
  t.pass(`${name}: ${RUNS} cases, no 5xx, no 4xx wrote anything (answers: ${JSON.stringify(seen)})`);
  t.ok(
    seen.some(([status]) => status >= 400),
    `${name}: the cases reached refusals, not only successes`,
  );
}

/** A product, a pending order and a live hold of the service's, so some fuzzed requests meet real ids. */
async function targetOf({ app }: TestApp): Promise<Target> {
  const product = await createProduct(app, { stock: 1_000_000, price_cents: 1999 });
  const hold = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 2 } });
  const order = await app.inject({
    method: 'POST',
    url: '/api/orders',
    payload: { hold_id: hold.json<{ hold_id: string }>().hold_id },
  });
  const live = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 1 } });
  return {
    productId: product.id,
    orderId: order.json<{ order_id: number }>().order_id,
    holdId: live.json<{ hold_id: string }>().hold_id,
  };
}

t.test('fuzzing every route: no 5xx, and a 4xx writes nothing', async (t) => {
  const signed = { WEBHOOK_SECRET: SECRET, ADMIN_AUTH_MAX_FAILURES: 1e9 };
  const groups: [name: string, route: Route, config: Partial<Config>, writesPostgres: boolean][] = [
    ['products', products, signed, true],
    // Holds live in Redis alone, and health writes nothing: Postgres is compared around their whole runs.
    ['holds', holds, signed, false],
    ['orders', orders, signed, true],
    ['webhooks, signed', signedWebhooks, signed, true],
    ['webhooks, unsigned', unsignedWebhooks, { WEBHOOK_ALLOW_UNSIGNED: true }, true],
    ['health', health, signed, false],
  ];
  // Each group on a service, database and Redis of its own, so the groups run at once (most of a case is waiting
  // for the stores) and each Redis's change counter is its group's alone.
  await Promise.all(
    groups.map(async ([name, route, config, writesPostgres]) => {
      const ownRedis = await privateRedis(t);
      const redis = new Redis(ownRedis.url);
      t.teardown(() => redis.disconnect());
      // No background work: every change in the stores comes from a fuzzed request.
      const service = await buildTestApp(t, {
        REDIS_URL: ownRedis.url,
        REDIS_LOSS_CHECK_MS: 0,
        RECOVERY_INTERVAL_MS: 0,
        // Every request from one address would be counted, a write by design (test/rate-limits.test.ts checks
        // that a refused request leaves nothing but its count); here every write must come from a route.
        RATE_LIMIT: 'off',
        ...config,
      });
      await fuzzRoute(t, name, service, redis, await targetOf(service), route, writesPostgres);
    }),
  );
});
