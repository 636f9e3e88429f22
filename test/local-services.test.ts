/**
 * The private stores `npm start` runs when none answers: a start that was killed leaves its redis-server running
 * (daemonised, so unsynced writes survive the crash); the next start takes it over and stops it when it stops.
 * And SIGTERM to `npm start` itself stops the service (npm's shell must not keep the signal from node).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import t from 'tap';
import { ensureLocalServices, isListening } from '../src/cli/local-services.js';
import { ADMIN_TOKEN, createTestDatabase, createKeyPrefix, TEST_REDIS_URL } from './support/app.js';
import { ROOT } from './support/cli.js';
import { freePort, startProcess, waitForExit } from './support/processes.js';
import { eventually } from './support/wait.js';

/** A logger that keeps what it was told. */
function recorder() {
  const lines: { level: string; msg: string; fields: object }[] = [];
  const log = {
    info: (fields: object, msg: string) => lines.push({ level: 'info', msg, fields }),
    warn: (fields: object, msg: string) => lines.push({ level: 'warn', msg, fields }),
  };
  return { log, lines };
}

t.test("a killed start's private redis-server is taken over by the next start, and stopped with it", async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'flashsale-local-'));
  const port = await freePort();
  const options = { root, redisPort: port };
  const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/postgres' };
  let cleanup = () => Promise.resolve();
  t.teardown(async () => {
    await cleanup();
    rmSync(root, { recursive: true, force: true });
  });

  const first = recorder();
  const killed = await ensureLocalServices(env, first.log, options);
  cleanup = killed.stop;
  t.equal(killed.redisUrl, `redis://127.0.0.1:${port}`);
  t.match(first.lines, [{ level: 'warn', msg: /started a private redis-server/ }]);
  const client = new Redis(killed.redisUrl);
  await client.set('written-before-the-kill', 'kept');
  client.disconnect();
  // The start is SIGKILLed here: it never calls stop().

  const second = recorder();
  const next = await ensureLocalServices(env, second.log, options);
  cleanup = next.stop;
  t.equal(next.redisUrl, killed.redisUrl, 'the same server');
  t.match(second.lines, [{ level: 'warn', msg: /taking over the private redis-server/, fields: { pid: Number } }]);
  const again = new Redis(next.redisUrl);
  t.equal(await again.get('written-before-the-kill'), 'kept', 'with its data');
  again.disconnect();

  await next.stop();
  t.equal(await isListening('127.0.0.1', port), false, 'stopping the next start stops it');
  const third = recorder();
  const fresh = await ensureLocalServices(env, third.log, options);
  cleanup = fresh.stop;
  t.match(third.lines, [{ msg: /started a private redis-server/ }], 'once stopped, a start starts its own again');
  await fresh.stop();
});

// SIGTERM to npm (a process manager), and Ctrl-C at a terminal: SIGINT to the whole process group, which node then
// gets twice (from the terminal and forwarded by npm): one request to stop, not a second signal.
for (const [name, signal, toGroup] of [
  ['SIGTERM to `npm start`', 'SIGTERM', false],
  ['Ctrl-C at a terminal running `npm start`', 'SIGINT', true],
] as const)
  t.test(`${name} stops the service with grace, exit 0`, async (t) => {
    const port = await freePort();
    const npm = startProcess('npm', ['start'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? '/tmp',
        REDIS_URL: TEST_REDIS_URL,
        DATABASE_URL: await createTestDatabase(t),
        REDIS_KEY_PREFIX: createKeyPrefix(t),
        ADMIN_TOKEN,
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, as a terminal's foreground job has.
      detached: toGroup,
    });
    t.teardown(() => npm.stop());
    let output = '';
    npm.child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
    npm.child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
    const ready = async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200;
    t.ok(await eventually(ready, 60_000, 100), 'the service answers');
    const service = output.split('\n').find((line) => line.includes('Server listening'));
    const pid = (JSON.parse(service!) as { pid: number }).pid;

    if (toGroup) process.kill(-npm.child.pid!, signal);
    else npm.child.kill(signal);
    const status = await waitForExit(npm, 20_000);
    t.same(status, { code: 0, signal: null }, 'npm start exits 0');
    t.match(output, /"msg":"shut down"/, 'the service shut down with grace');
    t.notMatch(output, /second signal/, 'one request to stop');
    const alive = (() => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    })();
    t.equal(alive, false, 'no service process is left behind');
    t.equal(await isListening('127.0.0.1', port), false, 'nothing listens on its port');
  });
