/** The flashsale program's command line, failures and settings, run as a real child process. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { buildTestApp, createProduct, TEST_REDIS_URL } from './support/app.js';
import { flashsale } from './support/cli.js';
import { freePort } from './support/processes.js';

// Each run is a fresh node loading the service's modules through tsx (about a second of CPU): on a machine
// shared with other test runs, the file takes longer than tap's default timeout.
t.setTimeout(300_000);

t.test('usage: --help on every command, exit 2 on a wrong command line', async (t) => {
  const commands = ['serve', 'migrate', 'seed', 'stock', 'expire-holds', 'reconcile', 'inspect', 'restock'];
  const helps = await Promise.all(commands.map((c) => flashsale(undefined, [c, '--help'])));
  for (const [i, help] of helps.entries()) {
    t.equal(help.code, 0, `${commands[i]} --help: exit 0`);
    t.match(help.stdout, `usage: flashsale ${commands[i]}`, `${commands[i]} --help: its usage`);
  }
  const [top, unknown, option, nothing] = await Promise.all([
    flashsale(undefined, ['--help']),
    flashsale(undefined, ['frobnicate']),
    flashsale(undefined, ['stock', '--bogus']),
    flashsale(undefined, []),
  ]);
  t.equal(top.code, 0);
  for (const c of commands) t.match(top.stdout, `\n  ${c} `, `--help lists ${c}`);
  t.same([unknown.code, option.code, nothing.code], [2, 2, 2], 'unknown command or option, or none: exit 2');
  t.match(unknown.stderr, /unknown command frobnicate/);
  t.match(option.stderr, /Unknown option '--bogus'/);
});

t.test('a store that cannot be reached: exit 1 with the reason', async (t) => {
  const closed = `redis://127.0.0.1:${await freePort()}`;
  const run = await flashsale(undefined, ['stock'], { env: { REDIS_URL: closed } });
  t.equal(run.code, 1);
  t.match(run.stderr, `flashsale stock failed: cannot connect to Redis at ${closed}`);
});

t.test('settings from .env in the working directory; the environment wins', async (t) => {
  const w = await buildTestApp(t);
  const product = (await createProduct(w.app, { stock: 7 })).id;
  const dir = mkdtempSync(join(tmpdir(), 'flashsale-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, '.env'),
    `REDIS_URL=${TEST_REDIS_URL}\nDATABASE_URL=${w.config.DATABASE_URL}\nREDIS_KEY_PREFIX=${w.prefix}\n`,
  );
  const fromFile = await flashsale(undefined, ['stock', '--json'], { cwd: dir });
  t.equal(fromFile.code, 0, fromFile.stderr);
  t.match(JSON.parse(fromFile.stdout), [{ id: product, stock: 7 }], 'the stores named in .env');
  const closed = `redis://127.0.0.1:${await freePort()}`;
  const overridden = await flashsale(undefined, ['stock'], { cwd: dir, env: { REDIS_URL: closed } });
  t.equal(overridden.code, 1, 'REDIS_URL from the environment, not from the file');
  t.match(overridden.stderr, `cannot connect to Redis at ${closed}`);
  writeFileSync(join(dir, '.env'), 'REDIS_PORT=1\n');
  const typo = await flashsale(undefined, ['stock'], { cwd: dir });
  t.equal(typo.code, 1, 'a name in .env that is no setting stops the command');
  t.match(typo.stderr, /REDIS_PORT \(in .*\): not a setting/);
});
