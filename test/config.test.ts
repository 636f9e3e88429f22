import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { ConfigSchema, InvalidConfigError, loadConfig, type Config } from '../src/config.js';

/** Compiles only when A and B are the same type. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const levelIsLiteral: Same<Config['LOG_LEVEL'], 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'> =
  true;

/** The problems loadConfig reports for this environment, or [] when it loads. */
function problems(env: NodeJS.ProcessEnv, overrides: Partial<Config> = {}): string[] {
  try {
    loadConfig(env, overrides);
    return [];
  } catch (err) {
    if (!(err instanceof InvalidConfigError)) throw err;
    return err.problems;
  }
}

t.test('an empty environment gives the documented defaults', async (t) => {
  const config = loadConfig({});
  t.match(config, {
    PORT: 3000,
    REDIS_URL: 'redis://127.0.0.1:6379',
    HOLD_TTL_SECONDS: 120,
    MAX_QTY_PER_HOLD: 10,
    SWEEP_INTERVAL_MS: 250,
    LOG_LEVEL: 'info',
    WEBHOOK_SECRET: '',
  });
  t.same(loadConfig({ HOLD_TTL_SECONDS: '', LOG_LEVEL: '' }), config, 'an empty variable is an unset one');
  t.ok(levelIsLiteral, 'LOG_LEVEL is typed as its levels, not as any string');
});

t.test('integer settings take plain decimal digits and nothing else', async (t) => {
  t.equal(loadConfig({ MAX_QTY_PER_HOLD: '7' }).MAX_QTY_PER_HOLD, 7);
  t.equal(loadConfig({ SWEEP_INTERVAL_MS: '0' }).SWEEP_INTERVAL_MS, 0, '0 turns the sweeper off');
  for (const text of ['1.5', '1e3', '0x10', ' 5', '5 ', 'abc', '-1', '+5', '05', '1_000', 'Infinity']) {
    t.same(
      problems({ MAX_QTY_PER_HOLD: text }),
      [
        `MAX_QTY_PER_HOLD=${JSON.stringify(text)}: expected an integer from 1 to 10000, in decimal digits (most units in one hold)`,
      ],
      `MAX_QTY_PER_HOLD=${JSON.stringify(text)} stops the start`,
    );
  }
});

t.test('integer settings outside their range stop the start, naming the range', async (t) => {
  const cases: [keyof Config, string, RegExp][] = [
    ['PORT', '65536', /^PORT=65536: expected an integer from 0 to 65535/],
    ['HOLD_TTL_SECONDS', '0', /^HOLD_TTL_SECONDS=0: expected an integer from 1 to 31536000/],
    ['MAX_QTY_PER_HOLD', '10001', /^MAX_QTY_PER_HOLD=10001: /],
    // A Node.js timer past 2^31 - 1 ms fires after 1 ms: the sweeper would spin.
    ['SWEEP_INTERVAL_MS', '2147483648', /^SWEEP_INTERVAL_MS=2147483648: expected an integer from 0 to 2147483647/],
    ['REDIS_COMMAND_TIMEOUT_MS', '0', /^REDIS_COMMAND_TIMEOUT_MS=0: /],
    // Five times this is Postgres's idle_in_transaction_session_timeout, which stops at 2^31 - 1 ms.
    ['DATABASE_TIMEOUT_MS', '429496730', /^DATABASE_TIMEOUT_MS=429496730: expected an integer from 1 to 429496729/],
    ['SWEEP_BATCH_SIZE', '2001', /^SWEEP_BATCH_SIZE=2001: expected an integer from 1 to 2000/],
    ['SWEEP_LEASE_MS', '99', /^SWEEP_LEASE_MS=99: expected an integer from 100 to 2147483647/],
    ['DATABASE_POOL_SIZE', '0', /^DATABASE_POOL_SIZE=0: expected an integer of at least 1/],
  ];
  for (const [name, text, expected] of cases) {
    const found = problems({ [name]: text });
    t.equal(found.length, 1, `${name}=${text}: one problem`);
    t.match(found[0], expected, `${name}=${text}: ${found[0]}`);
  }
  t.equal(
    loadConfig({ SWEEP_INTERVAL_MS: '2147483647' }).SWEEP_INTERVAL_MS,
    2_147_483_647,
    'the largest timer is accepted',
  );
});

t.test('a drain as long as the grace period stops the start: every stop would run out of grace', async (t) => {
  const found = problems({ SHUTDOWN_DRAIN_MS: '5000', SHUTDOWN_GRACE_MS: '5000' });
  t.equal(found.length, 1);
  t.match(found[0], /^SHUTDOWN_DRAIN_MS: must be shorter than SHUTDOWN_GRACE_MS/);
  t.equal(loadConfig({ SHUTDOWN_DRAIN_MS: '4999', SHUTDOWN_GRACE_MS: '5000' }).SHUTDOWN_DRAIN_MS, 4999);
});

t.test('LOG_LEVEL must be a pino level, named with the ones it accepts', async (t) => {
  t.equal(loadConfig({ LOG_LEVEL: 'debug' }).LOG_LEVEL, 'debug');
  t.same(problems({ LOG_LEVEL: 'verbose' }), [
    'LOG_LEVEL="verbose": expected one of fatal, error, warn, info, debug, trace, silent (pino log level)',
  ]);
  t.same(problems({ LOG_LEVEL: 'INFO' }).length, 1, 'levels are lower case');
});

t.test('text settings are checked, and their values are never echoed (URLs and tokens may be secret)', async (t) => {
  t.same(problems({ REDIS_KEY_PREFIX: 'a b' }), [
    'REDIS_KEY_PREFIX: expected text matching ^[A-Za-z0-9_:.-]*$ (prefix of every Redis key, so several deployments or test runs can share one Redis)',
  ]);
  const [redis] = problems({ REDIS_URL: 'localhost:6379' });
  t.match(redis, /^REDIS_URL: expected text matching \^rediss\?:\/\//);
  const [database] = problems({ DATABASE_URL: 'mysql://shop:s3cret@db/flashsale' });
  t.match(database, /^DATABASE_URL: expected text matching/);
  t.notMatch(database, /s3cret/, 'the password is not in the message');
  t.equal(loadConfig({ REDIS_URL: 'rediss://cache:6380' }).REDIS_URL, 'rediss://cache:6380');
  t.equal(loadConfig({ DATABASE_URL: 'postgresql://u:p@db/x' }).DATABASE_URL, 'postgresql://u:p@db/x');
});

t.test('every bad variable is named at once, in the order of the schema', async (t) => {
  const found = problems({ LOG_LEVEL: 'verbose', MAX_QTY_PER_HOLD: '1.5', PORT: 'http', UNRELATED: 'x' });
  t.same(
    found.map((line) => line.split(/[=:]/)[0]),
    ['PORT', 'MAX_QTY_PER_HOLD', 'LOG_LEVEL'],
  );
  t.throws(() => loadConfig({ PORT: 'http' }), {
    name: 'InvalidConfigError',
    message: /^invalid configuration: PORT="http": /,
  });
});

t.test('overrides are typed values: they win over the environment and are checked too', async (t) => {
  t.equal(loadConfig({ HOLD_TTL_SECONDS: '60' }, { HOLD_TTL_SECONDS: 1 }).HOLD_TTL_SECONDS, 1);
  t.same(problems({}, { HOLD_TTL_SECONDS: 0 }), [
    'HOLD_TTL_SECONDS=0: expected an integer from 1 to 31536000, in decimal digits (how long a hold reserves its units)',
  ]);
  t.same(problems({}, { MAX_QTY_PER_HOLD: 1.5 }).length, 1, 'a fractional override is refused, not rounded');
});

t.test('the schema has a default and a description for every variable', async (t) => {
  for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
    t.not(schema.default, undefined, `${name} has a default`);
    t.type(schema.description, 'string', `${name} has a description`);
  }
});

// The real start: a bad variable stops the process before it listens or starts anything, naming the variable.
t.test('the service refuses to start on a bad variable, and says which', async (t) => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const start = (env: Record<string, string>) =>
    new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        ['--import', 'tsx', 'src/server.ts'],
        { cwd: root, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 },
        (_err, stdout, stderr) => resolve({ code: child.exitCode, output: stdout + stderr }),
      );
    });
  for (const [name, value] of [
    ['LOG_LEVEL', 'verbose'],
    ['MAX_QTY_PER_HOLD', '1.5'],
  ] as const) {
    const { code, output } = await start({ [name]: value, PORT: '0' });
    t.equal(code, 1, `${name}=${value}: the process exits with 1`);
    t.match(output, `${name}=\\"${value}\\": expected`, `${name}=${value}: the message names the variable`);
    t.notMatch(output, /listening|migration applied|started a private/, `${name}=${value}: nothing was started`);
  }
  const short = await start({ ADMIN_TOKEN: 'hunter2-short', PORT: '0' });
  t.equal(short.code, 1, 'an ADMIN_TOKEN shorter than 16 characters stops the start');
  t.match(short.output, /ADMIN_TOKEN: expected .*at least 16 characters/, 'and says why');
  t.notMatch(short.output, /hunter2/, 'without echoing the token');
  t.notMatch(short.output, /listening|migration applied|started a private/, 'nothing was started');
});

t.test('the edge settings are checked: token length, origins, currency, timeouts', async (t) => {
  t.match(problems({ ADMIN_TOKEN: 'x'.repeat(15) }), [/^ADMIN_TOKEN: expected/]);
  t.same(problems({ ADMIN_TOKEN: 'x'.repeat(16) }), [], '16 characters are enough');
  t.same(problems({ ADMIN_TOKEN: '' }), [], 'empty: admin routes off');
  t.same(problems({ CORS_ORIGINS: 'https://shop.example, http://localhost:5173' }), []);
  for (const bad of ['*', 'shop.example', 'https://shop.example/path', 'https://a.example,,https://b.example']) {
    t.match(problems({ CORS_ORIGINS: bad }), [/^CORS_ORIGINS: expected/], `CORS_ORIGINS=${bad}`);
  }
  t.match(problems({ CURRENCY: 'usd' }), [/^CURRENCY: expected/]);
  t.match(problems({ REQUEST_TIMEOUT_MS: '0' }), [/^REQUEST_TIMEOUT_MS=0: expected an integer from 1/]);
  t.match(problems({ WEBHOOK_ALLOW_UNSIGNED: 'yes' }), [/^WEBHOOK_ALLOW_UNSIGNED="yes": expected true or false/]);
  t.match(loadConfig({}), {
    WEBHOOK_ALLOW_UNSIGNED: false,
    CURRENCY: 'USD',
    REQUEST_TIMEOUT_MS: 30_000,
    CORS_ORIGINS: '',
  });
});
