/**
 * Stopping the service: a real service process under keep-alive load gets SIGTERM. Every request in flight then
 * is answered (no reset), later ones are refused cleanly, the process exits 0 and logs no error. A close that
 * outlasts SHUTDOWN_GRACE_MS exits 1 with a line saying so; a second signal exits at once. Each case runs as one
 * process and as a primary of two workers (WEB_CONCURRENCY=2), which passes the signals on to its workers.
 */
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { admin } from './support/app.js';
import { createProductAt } from './support/api.js';
import { waitForExit } from './support/processes.js';
import { errorLines, serviceWorld, type Service } from './support/service-process.js';
import { eventually } from './support/wait.js';

interface Outcome {
  path: string;
  /** ms since the request was sent, relative to the signal (negative: before it). */
  sentAt: number;
  status?: number;
  connection?: string;
  retryAfter?: string;
  error?: string;
}

/** One request on a keep-alive agent; its answer or its error code. */
function send(agent: http.Agent, service: Service, method: string, path: string, body?: unknown): Promise<Outcome> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve) => {
    const outcome: Outcome = { path, sentAt: Date.now() };
    const req = http.request(`${service.base}${path}`, {
      method,
      agent,
      headers: { ...admin, ...(payload ? { 'content-type': 'application/json' } : {}) },
      timeout: 8000,
    });
    req.once('response', (res) => {
      res.resume();
      res.once('end', () =>
        resolve({
          ...outcome,
          status: res.statusCode,
          connection: String(res.headers.connection),
          retryAfter: res.headers['retry-after'],
        }),
      );
    });
    req.once('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.once('error', (err: NodeJS.ErrnoException) => resolve({ ...outcome, error: err.code ?? err.message }));
    req.end(payload);
  });
}

// A primary and two workers start in about three times the time of one process on a busy machine.
t.setTimeout(300_000);

/** One process, and a primary of two workers. */
// Three processes starting at once keep a busy machine's event loops slow a while: not "overloaded" here.
const GROUPS: { name: string; group: Record<string, string> }[] = [
  { name: 'one process', group: { WEB_CONCURRENCY: '1' } },
  { name: 'two workers', group: { WEB_CONCURRENCY: '2', READY_MAX_EVENT_LOOP_DELAY_MS: '0' } },
];

for (const { name, group } of GROUPS)
  t.test(
    `${name}: SIGTERM under keep-alive load: requests in flight are answered, exit 0 with no error logged`,
    async (t) => {
      // Hundreds of holds a second from one address: the rate limits are not the subject.
      const world = await serviceWorld(t, {
        SWEEP_INTERVAL_MS: '50',
        HOLD_TTL_SECONDS: '1',
        RATE_LIMIT: 'off',
        ...group,
      });
      const service = await world.start({ env: { LOG_LEVEL: 'info' } });
      const product = await createProductAt(service.base, { stock: 1_000_000 });

      const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
      t.teardown(() => agent.destroy());
      const outcomes: Outcome[] = [];
      let signalledAt: number | undefined;
      let stopped = false;
      // Each worker keeps one request going until the service refuses it; holds, reads and probes mixed.
      const worker = async (n: number) => {
        for (let i = 0; !stopped; i++) {
          const [method, path, body] =
            i % 3 === 0
              ? (['POST', '/api/holds', { product_id: product, qty: 1 }] as const)
              : i % 3 === 1
                ? (['GET', `/api/products/${product}`, undefined] as const)
                : (['GET', '/readyz', undefined] as const);
          const outcome = await send(agent, service, method, path, body);
          outcomes.push(outcome);
          if (outcome.error === 'ECONNREFUSED' || (signalledAt !== undefined && n % 2 === 0 && outcome.status === 503))
            await sleep(20);
        }
      };
      const workers = Array.from({ length: 16 }, (_, n) => worker(n));
      t.ok(await eventually(async () => outcomes.length >= 300, 30_000), 'the load is running');

      const killedAt = Date.now();
      const answeredBefore = outcomes.length;
      service.child.kill('SIGTERM');
      signalledAt = killedAt;
      const status = await waitForExit(service, 15_000);
      const exitMs = Date.now() - killedAt;
      stopped = true;
      await Promise.all(workers);
      // The moment the service took the signal, by its own log lines (the clocks are the machine's): with
      // workers, the last of them to log it, since each drains from the moment the primary's signal reaches it.
      const took = service
        .output()
        .map((line) => JSON.parse(line) as { msg?: string; time: number })
        .filter((line) => line.msg === 'shutting down')
        .map((line) => line.time);
      t.ok(took.length > 0, 'the process logged that it is shutting down');
      signalledAt = took.length > 0 ? Math.max(...took) : killedAt;

      t.same(status, { code: 0, signal: null }, 'the process exits 0');
      t.comment(
        `${name}: exit ${exitMs.toFixed(0)} ms after SIGTERM (SHUTDOWN_DRAIN_MS 1000), under 16 keep-alive connections`,
      );
      t.same(errorLines(service), [], 'nothing logged at error level');

      const before = outcomes.filter((o) => o.sentAt < signalledAt!);
      const after = outcomes.filter((o) => o.sentAt >= signalledAt!);
      const unanswered = before.filter((o) => o.status === undefined);
      t.ok(
        before.length > answeredBefore,
        `requests were in flight at the signal (${before.length - answeredBefore} answered after it)`,
      );
      t.same(unanswered, [], 'every request sent before the signal got an answer (no reset, no timeout)');
      t.same(
        before.filter((o) => o.path !== '/readyz' && o.status !== 200 && o.status !== 201),
        [],
        'and served: the stores stay open until the requests in flight are done',
      );
      t.same(
        before.filter((o) => o.path === '/readyz' && o.status !== 200 && o.status !== 503),
        [],
        'a probe running at the signal says ready or draining',
      );
      const count = (pick: (o: Outcome) => boolean) => after.filter(pick).length;
      const errors = after.filter((o) => o.error !== undefined).map((o) => o.error);
      t.comment(
        `${before.length} requests sent before the signal, all answered; after it: ${count((o) => o.status === 503)} ` +
          `answered 503, ${count((o) => o.status === 200 || o.status === 201)} served, errors ${JSON.stringify(
            Object.fromEntries([...new Set(errors)].map((e) => [e, errors.filter((x) => x === e).length])),
          )}`,
      );
      t.same(
        after.filter((o) => o.path === '/readyz' && o.status === 200),
        [],
        '/readyz never answers ready once the process took the signal',
      );
      t.same(
        after.filter((o) => o.status !== undefined && o.connection !== 'close'),
        [],
        'every answer after the signal closes its connection',
      );
      t.same(
        outcomes.filter((o) => o.status === 503 && o.retryAfter === undefined),
        [],
        'every 503 while stopping says when to retry',
      );
    },
  );

/** A service whose next stock change waits on a row another session holds: a request that stays in flight. */
async function blockedRequest(t: Test, env: Record<string, string>) {
  const world = await serviceWorld(t, { DATABASE_TIMEOUT_MS: '20000', SHUTDOWN_DRAIN_MS: '0', ...env });
  const service = await world.start();
  const product = await createProductAt(service.base, { stock: 10 });
  const blocker = await world.db.connect();
  t.teardown(() => blocker.release());
  await blocker.query('BEGIN');
  await blocker.query('SELECT 1 FROM products WHERE id = $1 FOR UPDATE', [product]);
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const pending = send(agent, service, 'PUT', `/api/products/${product}/stock`, { stock: 20 });
  const waiting = async () =>
    (
      await world.db.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
      )
    ).rows[0].n > 0;
  t.ok(await eventually(waiting, 10_000), 'the stock change waits on the row lock');
  return { service, pending, release: () => blocker.query('ROLLBACK') };
}

for (const { name, group } of GROUPS)
  t.test(`${name}: a close that outlasts SHUTDOWN_GRACE_MS exits 1 and says why`, async (t) => {
    const { service, release } = await blockedRequest(t, { SHUTDOWN_GRACE_MS: '300', ...group });
    service.child.kill('SIGTERM');
    const status = await waitForExit(service, 10_000);
    await release();
    t.same(status, { code: 1, signal: null }, 'exit 1');
    t.match(errorLines(service).join('\n'), /shutdown grace period ran out/, 'the error line names the grace period');
  });

for (const { name, group } of GROUPS)
  t.test(`${name}: a request in flight is waited for; a second signal exits at once`, async (t) => {
    const { service, pending, release } = await blockedRequest(t, { SHUTDOWN_GRACE_MS: '20000', ...group });
    service.child.kill('SIGTERM');
    t.equal(await waitForExit(service, 1000), undefined, 'the first signal waits for the request in flight');
    service.child.kill('SIGTERM');
    const status = await waitForExit(service, 5000);
    await release();
    t.same(status, { code: 1, signal: null }, 'the second signal exits 1 at once');
    t.match(errorLines(service).join('\n'), /second signal/);
    t.match(await pending, { error: 'ECONNRESET' }, 'the request it gave up on is cut');
  });
