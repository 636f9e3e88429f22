import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ConfigSchema, InvalidConfigError, loadConfig } from '../src/config.js';
import { withEnvFile } from '../src/env-file.js';

function envFile(t: Test, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'flashsale-env-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, '.env');
  writeFileSync(file, text);
  return file;
}

t.test('.env.example lists every setting of src/config.ts, in order, with its default and meaning', async (t) => {
  const text = readFileSync(new URL('../.env.example', import.meta.url), 'utf8');
  const lines = text.split('\n');
  const listed: { name: string; value: string; description: string | undefined }[] = [];
  for (const [i, line] of lines.entries()) {
    const match = /^# ([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (match) listed.push({ name: match[1]!, value: match[2]!, description: lines[i - 1]?.replace(/^# /, '') });
  }
  const schema = ConfigSchema.properties as Record<string, { default: unknown; description: string }>;
  t.same(
    listed.map((l) => l.name),
    Object.keys(schema),
    'exactly the settings, in the order of the schema',
  );
  for (const { name, value, description } of listed) {
    if (!schema[name]) continue;
    t.equal(value, String(schema[name].default), `${name}: its default`);
    t.equal(description, schema[name].description, `${name}: its meaning`);
  }
  // Copied to .env as it is, it changes nothing.
  t.same(loadConfig(withEnvFile({}, envFile(t, text))), loadConfig({}), 'as a .env, every line is a comment');
});

t.test('a .env file sets settings; the environment wins over it', async (t) => {
  const file = envFile(t, 'PORT=4100\nHOLD_TTL_SECONDS=30\n# a comment\nLOG_LEVEL="warn"\n');
  const config = loadConfig(withEnvFile({ HOLD_TTL_SECONDS: '45' }, file));
  t.equal(config.PORT, 4100, 'from the file');
  t.equal(config.LOG_LEVEL, 'warn', 'quoted in the file');
  t.equal(config.HOLD_TTL_SECONDS, 45, 'the environment wins');
  t.same(
    withEnvFile({ A: 'b' }, join(tmpdir(), 'no-such-dir-flashsale', '.env')),
    { A: 'b' },
    'no file: the environment',
  );
});

t.test('a .env file is checked as strictly as the environment', async (t) => {
  t.throws(
    () => withEnvFile({}, envFile(t, 'PORT=4100\nPROT=4200\n')),
    { name: 'InvalidConfigError', message: /PROT \(in .*\.env\): not a setting of the service/ },
    'a misspelt name stops the start',
  );
  const bad = withEnvFile({}, envFile(t, 'MAX_QTY_PER_HOLD=1.5\n'));
  t.throws(() => loadConfig(bad), InvalidConfigError, 'a bad value is refused');
  t.throws(() => loadConfig(bad), { message: /MAX_QTY_PER_HOLD="1.5": expected/ }, 'naming the variable');
});
