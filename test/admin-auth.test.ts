import t from 'tap';
import { admin, ADMIN_TOKEN, buildTestApp, scanKeys } from './support/app.js';

const product = { name: 'Guarded', price_cents: 100, stock: 1 };

t.test('wrong admin tokens are throttled per client address, across instances, with 429 and Retry-After', async (t) => {
  const first = await buildTestApp(t, { ADMIN_AUTH_MAX_FAILURES: 3, ADMIN_AUTH_WINDOW_SECONDS: 60 });
  // A second instance on the same Redis and Postgres: the count is shared.
  const second = await buildTestApp(t, {
    ADMIN_AUTH_MAX_FAILURES: 3,
    ADMIN_AUTH_WINDOW_SECONDS: 60,
    REDIS_KEY_PREFIX: first.prefix,
    DATABASE_URL: first.config.DATABASE_URL,
  });
  const create = (app: typeof first.app, headers: Record<string, string>, remoteAddress = '203.0.113.7') =>
    app.inject({ method: 'POST', url: '/api/products', payload: product, headers, remoteAddress });

  const guesses = [
    await create(first.app, { authorization: 'Bearer wrong-token-number-one' }),
    await create(second.app, { authorization: `Bearer ${ADMIN_TOKEN}x` }),
    await create(first.app, {}),
  ];
  t.same(
    guesses.map((answer) => [answer.statusCode, answer.json().code]),
    [
      [401, 'UNAUTHORIZED'],
      [401, 'UNAUTHORIZED'],
      [401, 'UNAUTHORIZED'],
    ],
    'three wrong tokens, on either instance, are told 401',
  );
  for (const [name, app] of [
    ['the first instance', first.app],
    ['the second instance', second.app],
  ] as const) {
    const throttled = await create(app, admin);
    t.equal(throttled.statusCode, 429, `${name}: then the address is refused, even with the right token`);
    t.equal(throttled.json().code, 'RATE_LIMITED');
    const retryAfter = Number(throttled.headers['retry-after']);
    t.ok(retryAfter >= 1 && retryAfter <= 60, `${name}: Retry-After is the rest of the window (${retryAfter} s)`);
  }
  const other = await create(first.app, admin, '198.51.100.9');
  t.equal(other.statusCode, 201, 'another address is served');
  const products = await first.app.inject({ method: 'GET', url: '/api/products' });
  t.same(
    products.json<{ name: string }[]>().map((p) => p.name),
    ['Guarded'],
    'only the allowed request created anything',
  );
  t.ok(
    (await scanKeys(first.redis, `${first.prefix}admin-failures:*`)).length === 1,
    'one failure counter, for the guessing address',
  );
});

t.test('the throttle window ends: the address is served again', async (t) => {
  const { app } = await buildTestApp(t, { ADMIN_AUTH_MAX_FAILURES: 1, ADMIN_AUTH_WINDOW_SECONDS: 1 });
  const create = (headers: Record<string, string>) =>
    app.inject({ method: 'POST', url: '/api/products', payload: product, headers });
  t.equal((await create({ authorization: 'Bearer nope-nope-nope-nope' })).statusCode, 401);
  t.equal((await create(admin)).statusCode, 429, 'throttled after one failure');
  let status = 429;
  for (const deadline = Date.now() + 10_000; status === 429 && Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    status = (await create(admin)).statusCode;
  }
  t.equal(status, 201, 'served once the window has passed');
});

t.test('an admin route checks the token before the body: no schema is told to a stranger', async (t) => {
  const { app } = await buildTestApp(t);
  const answer = await app.inject({ method: 'PUT', url: '/api/products/1/stock', payload: { nonsense: true } });
  t.equal(answer.statusCode, 401);
  t.equal(answer.json().code, 'UNAUTHORIZED');
});
