import { readFileSync } from 'node:fs';
import t from 'tap';
import { buildTestApp } from './support/app.js';
import { logLines } from './support/log-lines.js';
import { ConfigSchema } from '../src/config.js';
import { ErrorCodes } from '../src/errors.js';

const read = (file: string) => readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');

t.test('SECURITY.md covers each threat, and every setting and error code it names exists', async (t) => {
  const text = read('SECURITY.md');
  const headings = [...text.matchAll(/^## (.+)$/gm)].map((m) => m[1]!.toLowerCase());
  for (const threat of [
    /scalpers|bots/,
    /forged|replayed/,
    /stolen hold ids/,
    /enumeration/,
    /admin token/,
    /memory/,
    /slow clients/,
  ]) {
    t.ok(
      headings.some((h) => threat.test(h)),
      `a section on ${threat.source}`,
    );
  }
  const settings = new Set(Object.keys(ConfigSchema.properties));
  const codes = new Set(Object.keys(ErrorCodes));
  const named = new Set([...text.matchAll(/`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`/g)].map((m) => m[1]!));
  t.ok(named.size >= 10, `${named.size} settings and codes named`);
  for (const name of named) {
    t.ok(settings.has(name) || codes.has(name), `${name} is a setting of src/config.ts or a code of src/errors.ts`);
  }
});

t.test('the defaults are closed: compose demands a webhook secret, and the boot log says what is open', async (t) => {
  const compose = read('docker-compose.yml');
  t.match(compose, /WEBHOOK_SECRET: \$\{WEBHOOK_SECRET:\?/, 'compose refuses to start the service without a secret');
  t.notMatch(compose, /WEBHOOK_ALLOW_UNSIGNED/, 'and never accepts unsigned webhooks');

  const { destination, lines } = logLines<{ level: number; msg: string }>();
  await buildTestApp(
    t,
    { LOG_LEVEL: 'info', WEBHOOK_SECRET: '', CUSTOMER_TOKEN_SECRET: '' },
    { logDestination: destination },
  );
  const warned = lines.filter((l) => l.level === 40).map((l) => l.msg);
  t.ok(
    warned.some((msg) => /customer ids are self-declared/.test(msg)),
    'without CUSTOMER_TOKEN_SECRET the boot log says customers are self-declared',
  );
  t.ok(
    warned.some((msg) => /WEBHOOK_SECRET is not set: every payment webhook is refused/.test(msg)),
    'without WEBHOOK_SECRET the boot log says webhooks are refused',
  );
});
