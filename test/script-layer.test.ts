import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import pg from 'pg';
import t from 'tap';
import { StoreUnavailableError } from '../src/errors.js';
import { databaseFailure } from '../src/db/errors.js';
import { redisFailure, ScriptReplyError } from '../src/redis/errors.js';
import { ScriptCode } from '../src/redis/script-codes.js';
import { readScript, SCRIPT_FILES } from '../src/redis/scripts.js';
import { TEST_PG_URL, TEST_REDIS_URL } from './support/app.js';

t.test('every script code means the same in Lua and in TypeScript', async (t) => {
  const lua = readFileSync(new URL('../lua/includes/codes.lua', import.meta.url), 'utf8');
  const inLua = Object.fromEntries(
    [...lua.matchAll(/^\s+([A-Z_]+) = (-?\d+),/gm)].map(([, name, value]) => [name!, Number(value)]),
  );
  const inTypeScript = Object.fromEntries(Object.entries(ScriptCode).filter(([name]) => Number.isNaN(Number(name))));
  t.same(inLua, inTypeScript, 'lua/includes/codes.lua and src/redis/script-codes.ts list the same codes');
  t.equal(new Set(Object.values(inLua)).size, Object.keys(inLua).length, 'no two codes share a number');
});

t.test('a script is sent with each include inlined once, dependencies first, and no include line left', async (t) => {
  for (const file of SCRIPT_FILES) {
    const source = readScript(file);
    t.notMatch(source, /--- @include/, `${file}: every include resolved`);
    for (const fn of [
      'local function now_ms',
      'local function give_back_customer_units',
      'local function end_hold',
      'local CODE =',
      'local PRODUCT_KEYS =',
    ]) {
      t.ok(source.split(fn).length <= 2, `${file}: ${fn} defined at most once`);
    }
    if (source.includes('local function end_hold')) {
      t.ok(
        source.indexOf('local function give_back_customer_units') < source.indexOf('local function end_hold'),
        `${file}: endHold's own include comes before it`,
      );
    }
  }
  const redis = new Redis(TEST_REDIS_URL);
  t.teardown(() => redis.disconnect());
  // Redis compiles each as it is sent: a missing definition or a syntax error fails here, not under load.
  for (const file of SCRIPT_FILES) {
    const sha = await redis.script('LOAD', readScript(file));
    t.match(sha, /^[0-9a-f]{40}$/, `${file} compiles in Redis`);
  }
});

t.test('Redis errors: connection failures are outages whatever their message, error replies are answers', async (t) => {
  const closed = new Redis(TEST_REDIS_URL, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
  t.teardown(() => closed.disconnect());
  const offline = await closed.get('x').catch((err: unknown) => err);
  t.type(redisFailure(offline), StoreUnavailableError, `not connected (${(offline as Error).message})`);

  // As the service's own connection is set up (src/redis/connection.ts).
  const live = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false });
  await live.ping();
  // A command in flight when the connection drops is aborted with a message no list of messages knew.
  const inFlight = live.blpop('script-layer-test:never', 5).catch((err: unknown) => err);
  live.stream.destroy();
  const aborted = await inFlight;
  t.type(redisFailure(aborted), StoreUnavailableError, `aborted in flight (${(aborted as Error).message})`);
  live.disconnect();

  const timed = new Redis(TEST_REDIS_URL, { commandTimeout: 50 });
  t.teardown(() => timed.disconnect());
  const timeout = await timed.blpop('script-layer-test:never', 1).catch((err: unknown) => err);
  t.type(redisFailure(timeout), StoreUnavailableError, `timed out (${(timeout as Error).message})`);

  // A fresh connection: the timed-out BLPOP still occupies `timed` on the server (an out-of-step connection).
  const fresh = new Redis(TEST_REDIS_URL);
  t.teardown(() => fresh.disconnect());
  const bad = await fresh.eval('return redis.error_reply("ERR a bug in a script")', 0).catch((err: unknown) => err);
  t.notOk(redisFailure(bad) instanceof StoreUnavailableError, 'an error reply from a script is a bug, not an outage');
  const noScript = await fresh.evalsha('0'.repeat(40), 0).catch((err: unknown) => err);
  t.type(redisFailure(noScript), StoreUnavailableError, 'NOSCRIPT (the cache was flushed under us) is an outage');
  const shape = new ScriptReplyError('getHold', [7]);
  t.equal(redisFailure(shape), shape, 'a reply of the wrong shape stays a bug');
});

t.test('Postgres errors: server answers by SQLSTATE, every driver-level failure is an outage', async (t) => {
  const client = new pg.Client({ connectionString: TEST_PG_URL });
  await client.connect();
  t.teardown(() => client.end());
  const syntax = await client.query('SELEC 1').catch((err: unknown) => err);
  t.notOk(databaseFailure(syntax) instanceof StoreUnavailableError, 'a syntax error is a bug');
  const timeout = await client.query('SET statement_timeout = 10; SELECT pg_sleep(1)').catch((err: unknown) => err);
  t.type(databaseFailure(timeout), StoreUnavailableError, 'statement_timeout (57014) is an outage');

  const refused = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres' });
  const refusal = await refused.connect().catch((err: unknown) => err);
  t.teardown(() => refused.end().catch(() => {}));
  t.type(databaseFailure(refusal), StoreUnavailableError, `connection refused (${(refusal as Error).message})`);

  const victim = new pg.Client({ connectionString: TEST_PG_URL });
  await victim.connect();
  victim.on('error', () => {});
  t.teardown(() => victim.end().catch(() => {}));
  const { rows } = await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const killed = victim.query('SELECT pg_sleep(5)').catch((err: unknown) => err);
  await client.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
  t.type(databaseFailure(await killed), StoreUnavailableError, 'a terminated connection is an outage');
  const after = await victim.query('SELECT 1').catch((err: unknown) => err);
  t.type(databaseFailure(after), StoreUnavailableError, `a client no longer usable (${(after as Error).message})`);
});
