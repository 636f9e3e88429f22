import t from 'tap';
import { productState } from './support/api.js';
import { buildTestApp, createProduct, listen, scanKeys } from './support/app.js';
import { request } from './support/http.js';
import { asCustomer, CUSTOMER_SECRET } from './support/tokens.js';
import { loadConfig } from '../src/config.js';
import { trustProxyOption } from '../src/plugins/callers.js';
import { requestCounterKey } from '../src/redis/keys.js';

interface Body {
  code?: string;
  hold_id?: string;
  order_id?: number;
  retry_after_seconds?: number;
}

const from = (address: string, headers: Record<string, string> = {}) => ({ 'x-forwarded-for': address, ...headers });

/** Two instances behind a load balancer: one Redis prefix, one database, client addresses from X-Forwarded-For. */
async function twoInstances(t: Parameters<typeof buildTestApp>[0], limits: Record<string, unknown>) {
  const settings = { TRUST_PROXY: 'true', CUSTOMER_TOKEN_SECRET: CUSTOMER_SECRET, ...limits };
  const first = await buildTestApp(t, settings);
  const second = await buildTestApp(t, {
    ...settings,
    DATABASE_URL: first.config.DATABASE_URL,
    REDIS_KEY_PREFIX: first.config.REDIS_KEY_PREFIX,
  });
  return { first, second, bases: [await listen(first.app), await listen(second.app)] as const };
}

t.test('one client is refused 429 with Retry-After across two instances while another is served', async (t) => {
  const { first, bases } = await twoInstances(t, { RATE_LIMIT_PER_ADDRESS: 3, RATE_LIMIT_WINDOW_SECONDS: 60 });
  const product = await createProduct(first.app, { stock: 100 });
  const hold = (base: string, address: string) =>
    request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, from(address));

  // Three holds from 203.0.113.7, spread over both instances: the limit is one count for the whole service.
  const allowed = [
    await hold(bases[0], '203.0.113.7'),
    await hold(bases[1], '203.0.113.7'),
    await hold(bases[0], '203.0.113.7'),
  ];
  t.same(
    allowed.map((a) => a.status),
    [201, 201, 201],
  );
  for (const base of bases) {
    const refused = await hold(base, '203.0.113.7');
    t.equal(refused.status, 429, 'the fourth is refused, whichever instance it reaches');
    t.equal(refused.body.code, 'RATE_LIMITED');
    const retryAfter = Number(refused.headers.get('retry-after'));
    t.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After within the window (${retryAfter} s)`);
  }
  for (const base of bases) t.equal((await hold(base, '198.51.100.9')).status, 201, 'another client is served');
  t.match(await productState(bases[0], product.id), { held: 5 }, 'the refused requests held nothing');

  // POST /api/orders has counters of its own: a client refused holds may still check out the ones it has.
  const order = await request<Body>(
    bases[1],
    'POST',
    '/api/orders',
    { hold_id: allowed[0]!.body.hold_id },
    from('203.0.113.7'),
  );
  t.equal(order.status, 201);
});

t.test(
  'a burst from one client against a limit of L: exactly L served, the rest 429, across two instances',
  async (t) => {
    const L = 17;
    const { first, bases } = await twoInstances(t, { RATE_LIMIT_PER_ADDRESS: L, RATE_LIMIT_WINDOW_SECONDS: 60 });
    const product = await createProduct(first.app, { stock: 1000 });
    // Sixty holds at once, thirty to each instance: each instance counts those of one event-loop turn in one call.
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        request<Body>(bases[i % 2]!, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, from('203.0.113.40')),
      ),
    );
    const served = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status === 429);
    t.equal(served.length, L, `exactly ${L} served`);
    t.equal(refused.length, 60 - L, 'every other one refused');
    for (const answer of refused) {
      const retryAfter = Number(answer.headers.get('retry-after'));
      if (answer.body.code !== 'RATE_LIMITED' || !(retryAfter >= 1 && retryAfter <= 60)) {
        t.fail(`a refusal without its code or Retry-After: ${answer.body.code}, ${retryAfter}`);
      }
    }
    t.match(await productState(bases[0], product.id), { held: L }, 'the refused requests held nothing');
    const counter = await first.redis.get(requestCounterKey(first.prefix, 'holds', 'a:203.0.113.40'));
    t.equal(counter, '60', 'every request was counted, the refused ones too');
  },
);

t.test('requests counted in one turn are decided in arrival order, as one at a time would be', async (t) => {
  const { first, second } = await twoInstances(t, { RATE_LIMIT_PER_ADDRESS: 25 });
  const [one, two] = [first.app, second.app];
  const outcome = (counted: Promise<void>) =>
    counted.then(
      () => 'served',
      (err: { code?: string; details?: { retry_after_seconds?: number } }) =>
        err.code === 'RATE_LIMITED' && (err.details?.retry_after_seconds ?? 0) >= 1 ? 'refused' : `error ${err.code}`,
    );
  // Forty calls on each instance, made in one turn, so each instance sends them as one batch: the address's
  // first 25 requests are served, wherever they were counted, and within a batch they are its first ones.
  const anonymous = { kind: 'anonymous', address: '198.51.100.40' } as const;
  const atOne = Array.from({ length: 40 }, () => outcome(one.limitRate('holds', anonymous)));
  const atTwo = Array.from({ length: 40 }, () => outcome(two.limitRate('holds', anonymous)));
  const [fromOne, fromTwo] = [await Promise.all(atOne), await Promise.all(atTwo)];
  const servedOne = fromOne.filter((o) => o === 'served').length;
  const servedTwo = fromTwo.filter((o) => o === 'served').length;
  t.equal(servedOne + servedTwo, 25, `25 served in all (${servedOne} + ${servedTwo})`);
  for (const [batch, served] of [
    [fromOne, servedOne],
    [fromTwo, servedTwo],
  ] as const) {
    t.same(batch, [...Array<string>(served).fill('served'), ...Array<string>(40 - served).fill('refused')]);
  }

  // Two counters per request: alice's (limit 3) and her address's (limit 25, 2 here). Six requests, one turn.
  const { first: other } = await twoInstances(t, { RATE_LIMIT_PER_ADDRESS: 2, RATE_LIMIT_PER_CUSTOMER: 3 });
  const alice = (address: string) => ({ kind: 'customer', customerId: 'alice', address }) as const;
  const sequence = ['192.0.2.1', '192.0.2.1', '192.0.2.1', '192.0.2.2', '192.0.2.2', '192.0.2.3'];
  const decided = await Promise.all(sequence.map((a) => outcome(other.app.limitRate('holds', alice(a)))));
  // 1st and 2nd: within both; 3rd: the address's third; 4th on: alice's 4th, 5th, 6th.
  t.same(decided, ['served', 'served', 'refused', 'refused', 'refused', 'refused']);
  const count = (subject: string) => other.redis.get(requestCounterKey(other.prefix, 'holds', subject));
  t.same(
    await Promise.all(['c:alice', 'a:192.0.2.1', 'a:192.0.2.2', 'a:192.0.2.3'].map(count)),
    ['6', '3', '2', '1'],
    'every counter counted every request against it, refused or not',
  );
  t.ok(
    (await other.redis.pttl(requestCounterKey(other.prefix, 'holds', 'c:alice'))) > 0,
    'a counter always has its window',
  );
});

t.test('a proven customer is limited across addresses; RATE_LIMIT=off turns the limits off', async (t) => {
  const { first, bases } = await twoInstances(t, { RATE_LIMIT_PER_ADDRESS: 100, RATE_LIMIT_PER_CUSTOMER: 2 });
  const product = await createProduct(first.app, { stock: 100 });
  const alice = await asCustomer('alice');
  const hold = (base: string, address: string, headers: Record<string, string>) =>
    request<Body>(base, 'POST', '/api/holds', { product_id: product.id, qty: 1 }, from(address, headers));
  t.equal((await hold(bases[0], '192.0.2.1', alice)).status, 201);
  t.equal((await hold(bases[1], '192.0.2.2', alice)).status, 201);
  const third = await hold(bases[0], '192.0.2.3', alice);
  t.equal(third.status, 429, 'a third address does not reset the customer’s count');
  t.ok(Number(third.headers.get('retry-after')) >= 1);
  t.equal((await hold(bases[0], '192.0.2.3', await asCustomer('bob'))).status, 201, 'bob, from that address: served');

  const off = await buildTestApp(t, { RATE_LIMIT: 'off', RATE_LIMIT_PER_ADDRESS: 1 });
  const offBase = await listen(off.app);
  const unlimited = await createProduct(off.app, { stock: 10 });
  const answers = [];
  for (let i = 0; i < 5; i++)
    answers.push((await request(offBase, 'POST', '/api/holds', { product_id: unlimited.id, qty: 1 })).status);
  t.same(answers, [201, 201, 201, 201, 201], 'limits off: five holds at a limit of one');
});

t.test(
  'an Idempotency-Key replayed by another caller gets its own decision, never the first caller’s hold',
  async (t) => {
    const { first, bases } = await twoInstances(t, {});
    const product = await createProduct(first.app, { stock: 10 });
    const body = { product_id: product.id, qty: 1 };
    const key = { 'idempotency-key': 'cart-42' };
    const victim = await request<Body>(bases[0], 'POST', '/api/holds', body, from('192.0.2.10', key));
    t.equal(victim.status, 201);

    const thief = await request<Body>(bases[1], 'POST', '/api/holds', body, from('192.0.2.66', key));
    t.equal(thief.status, 201, 'the other address is answered its own hold');
    t.not(thief.body.hold_id, victim.body.hold_id, 'not the victim’s hold id');
    t.equal(thief.headers.get('idempotent-replayed'), null, 'not a replay');
    const poison = await request<Body>(bases[1], 'POST', '/api/holds', { ...body, qty: 2 }, from('192.0.2.67', key));
    t.equal(poison.status, 201, 'another body under the same key from a third caller: its own decision, not 422');

    const retry = await request<Body>(bases[1], 'POST', '/api/holds', body, from('192.0.2.10', key));
    t.equal(retry.headers.get('idempotent-replayed'), 'true', 'the victim’s own retry is still its replay');
    t.equal(retry.body.hold_id, victim.body.hold_id);

    // Customers are their own scope, whatever address they come from.
    const aliceAt = (address: string) =>
      asCustomer('alice').then((h) =>
        request<Body>(bases[0], 'POST', '/api/holds', body, from(address, { ...h, ...key })),
      );
    const alice = await aliceAt('192.0.2.20');
    const aliceElsewhere = await aliceAt('192.0.2.21');
    t.equal(aliceElsewhere.body.hold_id, alice.body.hold_id, 'alice’s retry from another address is her replay');
    t.not(alice.body.hold_id, victim.body.hold_id, 'and alice’s key is not the anonymous client’s');
    const bob = await request<Body>(
      bases[0],
      'POST',
      '/api/holds',
      body,
      from('192.0.2.20', { ...(await asCustomer('bob')), ...key }),
    );
    t.not(bob.body.hold_id, alice.body.hold_id, 'bob with alice’s key: his own hold');
    t.match(await productState(bases[0], product.id), { held: 6 }, 'six holds: 1 + 1 + 2 + 1 + 1 units');
  },
);

t.test('a burst of refused requests changes no Redis key and no Postgres row', async (t) => {
  const { first, bases } = await twoInstances(t, { RATE_LIMIT_PER_ADDRESS: 10 });
  const { redis, prefix, app } = first;
  const open = await createProduct(app, { stock: 10 });
  const limited = await createProduct(app, { stock: 10, per_customer_limit: 1 });
  // One hold and one order first, so the client's rate counters exist: they are the one thing a refusal counts.
  const held = await request<Body>(bases[0], 'POST', '/api/holds', { product_id: open.id, qty: 1 }, from('192.0.2.5'));
  await request(bases[0], 'POST', '/api/orders', { hold_id: held.body.hold_id }, from('192.0.2.5'));
  const alice = await asCustomer('alice');
  const aliceHold = await request<Body>(
    bases[0],
    'POST',
    '/api/holds',
    { product_id: limited.id, qty: 1 },
    from('192.0.2.5', alice),
  );
  t.equal(aliceHold.status, 201);

  const keys = async () => (await scanKeys(redis, `${prefix}*`)).sort();
  const rows = async () =>
    Promise.all(
      ['orders', 'payments', 'hold_claims', 'webhook_deliveries'].map(async (table) => {
        const result = await app.db
          .selectFrom(table as 'orders')
          .select((eb) => eb.fn.countAll<string>().as('n'))
          .executeTakeFirstOrThrow();
        return `${table}: ${result.n}`;
      }),
    );
  const keysBefore = await keys();
  const rowsBefore = await rows();

  const statuses = new Map<string, number>();
  const refusals: [string, string, unknown, Record<string, string>][] = [
    ['POST', '/api/holds', { product_id: 999_999, qty: 1 }, {}], // 404
    ['POST', '/api/holds', { product_id: limited.id, qty: 1 }, {}], // 401: the limit needs a proven customer
    ['POST', '/api/holds', { product_id: limited.id, qty: 1, customer_id: 'bob' }, alice], // 403
    ['POST', '/api/holds', { product_id: open.id, qty: 1 }, { authorization: 'Bearer not-a-token' }], // 401
    ['POST', '/api/holds', { product_id: open.id, qty: 0 }, {}], // 400
    ['POST', '/api/orders', { hold_id: `${open.id}-AAAAAAAAAAAA` }, {}], // 404
    ['POST', '/api/orders', { hold_id: aliceHold.body.hold_id }, {}], // 401: alice's hold
  ];
  for (let i = 0; i < 60; i++) {
    const [method, path, body, headers] = refusals[i % refusals.length]!;
    const answer = await request<Body>(
      bases[i % 2]!,
      method,
      path,
      body,
      from('192.0.2.5', { 'idempotency-key': `fresh-${i}`, ...headers }),
    );
    statuses.set(String(answer.status), (statuses.get(String(answer.status)) ?? 0) + 1);
    t.ok(answer.status >= 400 && answer.status < 500, `${method} ${path}: ${answer.status} ${answer.body.code}`);
  }
  t.ok(statuses.get('429'), `the burst ran into the rate limit too (${JSON.stringify([...statuses])})`);
  t.same(await keys(), keysBefore, 'the same Redis keys, none added');
  t.same(await rows(), rowsBefore, 'the same Postgres rows');
  t.match(await productState(bases[0], open.id), { held: 0, sold: 1 });
  t.match(await productState(bases[0], limited.id), { held: 1, sold: 0 });
});

t.test('IPv6 clients are counted by their /64: a new address in the same network is the same client', async (t) => {
  const { first, bases } = await twoInstances(t, { RATE_LIMIT_PER_ADDRESS: 2 });
  const product = await createProduct(first.app, { stock: 10 });
  const hold = (address: string) =>
    request<Body>(bases[0], 'POST', '/api/holds', { product_id: product.id, qty: 1 }, from(address));
  t.equal((await hold('2001:db8:0:7::1')).status, 201);
  t.equal((await hold('2001:db8:0:7:ffff:1:2:3')).status, 201);
  t.equal((await hold('2001:0db8:0000:0007::abcd')).status, 429, 'a third address of the /64: refused');
  t.equal((await hold('2001:db8:0:8::1')).status, 201, 'the next /64 is another client');
});

t.test(
  'the settings of callers are checked at start: a short secret, an unknown mode or a bad proxy list stop it',
  async (t) => {
    for (const [name, value] of [
      ['CUSTOMER_TOKEN_SECRET', 'too-short'],
      ['RATE_LIMIT', 'maybe'],
      ['RATE_LIMIT_PER_ADDRESS', '0'],
      ['TRUST_PROXY', 'everyone'],
    ] as const) {
      t.throws(
        () => loadConfig({ [name]: value }),
        { name: 'InvalidConfigError', message: new RegExp(name) },
        `${name}=${value}`,
      );
    }
    t.equal(trustProxyOption(''), false);
    t.equal(trustProxyOption('true'), true);
    t.equal(trustProxyOption('10.0.0.0/8, 127.0.0.1'), '10.0.0.0/8, 127.0.0.1');
    const hops = trustProxyOption('2') as (address: string, hop: number) => boolean;
    t.same(
      [0, 1, 2].map((hop) => hops('10.0.0.1', hop)),
      [true, true, false],
      'a hop count trusts that many proxies',
    );
  },
);
