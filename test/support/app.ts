import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Cluster, Redis } from 'ioredis';
import pg from 'pg';
import type { Test } from 'tap';
import { buildApp, type AppOptions } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createDatabase } from '../../src/db/connection.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { clusterNodeList, type RedisClient } from '../../src/redis/connection.js';
import type { Clock } from './clock.js';

/** The servers tests run against: CI has both at their default local ports. */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/**
 * host:port of a Redis Cluster's nodes: when set, every test app that does not bring its own Redis runs on that
 * cluster (REDIS_CLUSTER_NODES) instead of TEST_REDIS_URL, and the helpers here look at its keys there.
 */
export const TEST_REDIS_CLUSTER_NODES = process.env.TEST_REDIS_CLUSTER_NODES ?? '';
export const TEST_PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** The admin token every test service is configured with. */
export const ADMIN_TOKEN = 'test-admin-token';
/** The headers of an admin request. */
export const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

function databaseUrl(server: string, name: string): string {
  const url = new URL(server);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * A fresh database, migrated, dropped when the test ends. Returns its URL. `server` is a maintenance-database URL
 * (a test's own cluster, say); the shared server by default.
 */
export async function createTestDatabase(t: Test, server: string = TEST_PG_URL): Promise<string> {
  const name = `flashsale_test_${randomBytes(6).toString('hex')}`;
  const adminClient = new pg.Client({ connectionString: server });
  await adminClient.connect();
  await adminClient.query(`CREATE DATABASE ${name}`);
  await adminClient.end();
  t.teardown(async () => {
    const client = new pg.Client({ connectionString: server });
    await client.connect();
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await client.end();
  });
  const url = databaseUrl(server, name);
  const db = createDatabase({ url, timeoutMs: 10_000, poolSize: 1 });
  await migrateToLatest(db);
  await db.destroy();
  return url;
}

/** A key prefix no other test uses; the caller deletes its keys (`deleteKeys`) when done with them. */
export function newKeyPrefix(): string {
  return `test:${randomBytes(6).toString('hex')}:`;
}

/** A key prefix of this test's own; its keys are deleted when the test ends (never FLUSHALL). */
export function createKeyPrefix(t: Test): string {
  const prefix = newKeyPrefix();
  t.teardown(() => deleteKeys(prefix));
  return prefix;
}

/**
 * A plain client for looking at keys: a Cluster client when `clusterNodes` names a cluster, else one to `url`.
 * The caller disconnects it.
 */
export function redisClient(
  clusterNodes: string = TEST_REDIS_CLUSTER_NODES,
  url: string = TEST_REDIS_URL,
): RedisClient {
  const nodes = clusterNodeList(clusterNodes);
  if (nodes.length === 0) return new Redis(url);
  const cluster = new Cluster(nodes.map((node) => ({ host: node.split(':')[0], port: Number(node.split(':')[1]) })));
  cluster.on('error', () => {});
  return cluster;
}

/** Every key matching `pattern`, with SCAN on the server or on every master of a cluster. */
export async function scanKeys(redis: RedisClient, pattern: string): Promise<string[]> {
  const found: string[] = [];
  // A Cluster client knows its masters only once connected: before that it would scan none.
  if (redis instanceof Cluster && redis.status !== 'ready')
    await new Promise<void>((resolve, reject) => {
      redis.once('ready', resolve);
      setTimeout(() => reject(new Error(`the Redis Cluster client is not ready (${redis.status})`)), 10_000).unref();
    });
  const servers = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const server of servers) {
    let cursor = '0';
    do {
      const [next, keys] = await server.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found;
}

/** Deletes every key under a prefix, with SCAN (of every master of a cluster): other tests' keys are left alone. */
export async function deleteKeys(prefix: string, clusterNodes: string = TEST_REDIS_CLUSTER_NODES): Promise<void> {
  const redis = redisClient(clusterNodes);
  try {
    const keys = await scanKeys(redis, `${prefix}*`);
    // One key per command: on a cluster the keys live in many slots.
    await Promise.all(keys.map((key) => redis.unlink(key)));
  } finally {
    redis.disconnect();
  }
}

/** The service under test, in this process, and a client to look at its keys. */
export interface TestApp {
  app: FastifyInstance;
  config: Config;
  /** A plain Redis client for looking at the test's keys (a Cluster client on a cluster). */
  redis: RedisClient;
  /** The app's key prefix, so that a TestApp is a scope for the helpers of ./redis-state.ts. */
  prefix: string;
}

/** What a test may give the app besides configuration. */
export interface TestAppOptions {
  /** The clock the app's sold-out cache reads instead of Date.now, for a test that moves time itself. */
  soldOutClock?: Clock;
  /** Told of every route as it is declared. */
  onRoute?: AppOptions['onRoute'];
  /** Where the app's log lines go (with a LOG_LEVEL other than the tests' silent). */
  logDestination?: AppOptions['logDestination'];
}

/**
 * The whole service on its own database and key prefix, closed when the test ends. The sweeper is off unless
 * the test turns it on, so tests decide when expired holds are released; Redis commands time out after 2 s.
 */
export async function buildTestApp(
  t: Test,
  overrides: Partial<Config> = {},
  options: TestAppOptions = {},
): Promise<TestApp> {
  const config = loadConfig(
    {},
    {
      REDIS_URL: TEST_REDIS_URL,
      // A test that brings its own Redis server runs on it, cluster or not.
      REDIS_CLUSTER_NODES: overrides.REDIS_URL === undefined ? TEST_REDIS_CLUSTER_NODES : '',
      DATABASE_URL: overrides.DATABASE_URL ?? (await createTestDatabase(t)),
      REDIS_KEY_PREFIX: overrides.REDIS_KEY_PREFIX ?? createKeyPrefix(t),
      ADMIN_TOKEN,
      LOG_LEVEL: 'silent',
      SWEEP_INTERVAL_MS: 0,
      // Longer than the service's 500 ms: a test run beside others on a loaded machine must not see 503s it is
      // not about; the tests of timeouts and outages set their own.
      REDIS_COMMAND_TIMEOUT_MS: 2000,
      ...overrides,
    },
  );
  const app = await buildApp(config, {
    now: options.soldOutClock?.now,
    onRoute: options.onRoute,
    logDestination: options.logDestination,
  });
  t.teardown(() => app.close());
  const redis = redisClient(config.REDIS_CLUSTER_NODES);
  t.teardown(() => redis.disconnect());
  return { app, config, redis, prefix: config.REDIS_KEY_PREFIX };
}

/** The fields of a product that tests leave to a default. */
export const PRODUCT_DEFAULTS = { name: 'Test product', price_cents: 1000 };

/** What creating a product takes: its stock, and anything else the test cares about. */
export type ProductFields = {
  name?: string;
  price_cents?: number;
  stock: number;
  per_customer_limit?: number;
  buckets?: number;
};

/** Creates a product through the admin API and returns it. */
export async function createProduct(
  app: FastifyInstance,
  product: ProductFields,
): Promise<{ id: number; [field: string]: unknown }> {
  const response = await app.inject({
    method: 'POST',
    url: '/api/products',
    headers: admin,
    payload: { ...PRODUCT_DEFAULTS, ...product },
  });
  if (response.statusCode !== 201)
    throw new Error(`product creation answered ${response.statusCode}: ${response.body}`);
  return response.json();
}

/** Serves the app on a free port of 127.0.0.1 and returns its base URL, for tests that need real HTTP. */
export async function listen(app: FastifyInstance): Promise<string> {
  return app.listen({ port: 0, host: '127.0.0.1' });
}
