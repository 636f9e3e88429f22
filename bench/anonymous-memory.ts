/**
 * What an anonymous client leaves in Redis: `node --import tsx bench/anonymous-memory.ts [requests]`.
 *
 * Starts a private redis-server (nothing else writes to it, so INFO used_memory is this run's alone) and the
 * service in this process on a fresh database, then sends, from one client address, `requests` (default 2000)
 * requests of each kind below and prints the Redis memory each left behind, per request: refused requests with a
 * fresh Idempotency-Key each (the worst case: 255 characters), and granted holds with and without one. A
 * granted hold's record stays for HOLD_RETAIN_SECONDS after it ends, so what one client can leave in an hour is
 * its holds per hour (the rate limit) times the bytes of one. SECURITY.md quotes the figures.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import pg from 'pg';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createDatabase } from '../src/db/connection.js';
import { migrateToLatest } from '../src/db/migrate.js';

const requests = Number(process.argv[2] ?? 2000);
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ADMIN = 'memory-admin-token';
// Requests in flight at once. One: concurrent requests for one unknown product answer 503 while the first looks
// it up in Postgres, and those 503s would stand in for the 404s measured.
const AT_ONCE = 1;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function usedMemory(redis: Redis): Promise<number> {
  return Number(/^used_memory:(\d+)/m.exec(await redis.info('memory'))![1]);
}

// MEMORY_REDIS_PORT: a port of your choosing for the private redis-server (a free one otherwise).
const port = Number(process.env.MEMORY_REDIS_PORT) || (await freePort());
const redisServer = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], {
  stdio: 'ignore',
});
// ioredis retries until the new server listens, and queues the PING meanwhile.
const redis = new Redis({ port, retryStrategy: () => 50 });
redis.on('error', () => {});
await redis.ping();
const database = `flashsale_memory_${randomBytes(4).toString('hex')}`;
const admin = new pg.Client({ connectionString: PG_URL });
await admin.connect();
await admin.query(`CREATE DATABASE ${database}`);
const dbUrl = new URL(PG_URL);
dbUrl.pathname = `/${database}`;
const migrations = createDatabase({ url: dbUrl.toString(), timeoutMs: 10_000, poolSize: 1 });
await migrateToLatest(migrations);
await migrations.destroy();

process.env.RATE_LIMIT = 'off'; // one address sends thousands here; the limits bound the rate, measured below
const config = loadConfig(process.env, {
  REDIS_URL: `redis://127.0.0.1:${port}`,
  DATABASE_URL: dbUrl.toString(),
  ADMIN_TOKEN: ADMIN,
  LOG_LEVEL: 'silent',
  SWEEP_INTERVAL_MS: 0,
});
const app = await buildApp(config);
try {
  const auth = { authorization: `Bearer ${ADMIN}` };
  const product = async (fields: Record<string, unknown>) =>
    (
      await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: auth,
        payload: { name: 'memory', price_cents: 100, stock: 1_000_000, ...fields },
      })
    ).json<{ id: number }>().id;
  const open = await product({});
  const limited = await product({ per_customer_limit: 2 });
  const soldOut = await product({ stock: 0 });
  const key = (i: number, kind: string) => `${kind}-${i}-`.padEnd(255, 'k');

  const kinds: [string, (i: number) => { payload: object; headers: Record<string, string> }][] = [
    [
      'refused 404 (unknown product), fresh 255-char key',
      (i) => ({ payload: { product_id: 999_999, qty: 1 }, headers: { 'idempotency-key': key(i, 'a') } }),
    ],
    [
      'refused 400 CUSTOMER_ID_REQUIRED, fresh 255-char key',
      (i) => ({ payload: { product_id: limited, qty: 1 }, headers: { 'idempotency-key': key(i, 'b') } }),
    ],
    [
      'refused 409 INSUFFICIENT_STOCK, fresh 255-char key (a decided answer: remembered for replay)',
      (i) => ({ payload: { product_id: soldOut, qty: 1 }, headers: { 'idempotency-key': key(i, 'd') } }),
    ],
    ['granted hold, no key', () => ({ payload: { product_id: open, qty: 1 }, headers: {} })],
    [
      'granted hold, fresh 255-char key',
      (i) => ({ payload: { product_id: open, qty: 1 }, headers: { 'idempotency-key': key(i, 'c') } }),
    ],
  ];
  // Once of each first: Redis's script cache and the service's first connections are not the client's doing.
  for (const [, make] of kinds) {
    const { payload, headers } = make(-1);
    await app.inject({ method: 'POST', url: '/api/holds', payload, headers });
  }
  console.log(
    `| what one anonymous client sent (${requests} of each, ${AT_ONCE} at a time) | answers | Redis bytes left per request |`,
  );
  console.log('|---|---|---|');
  for (const [name, make] of kinds) {
    const before = await usedMemory(redis);
    const statuses = new Map<number, number>();
    for (let i = 0; i < requests; i += AT_ONCE) {
      const answers = await Promise.all(
        Array.from({ length: Math.min(AT_ONCE, requests - i) }, (_, j) =>
          app.inject({ method: 'POST', url: '/api/holds', ...make(i + j) }),
        ),
      );
      for (const { statusCode } of answers) statuses.set(statusCode, (statuses.get(statusCode) ?? 0) + 1);
    }
    const after = await usedMemory(redis);
    const answered = [...statuses].map(([status, n]) => `${n}× ${status}`).join(', ');
    console.log(`| ${name} | ${answered} | ${((after - before) / requests).toFixed(0)} |`);
  }
  console.log(`keys in Redis at the end: ${await redis.dbsize()}`);
} finally {
  await app.close();
  redis.disconnect();
  redisServer.kill();
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
}
