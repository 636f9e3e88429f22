/**
 * The long form of test/process-crashes.test.ts, run by hand:
 * `node --import tsx bench/crashes.ts [--rounds 20] [--pg-crashes 5] [--seed N]`.
 * Runs that test file with more SIGKILL rounds (CRASH_ROUNDS) and more Postgres crashes (PG_CRASHES) than CI's
 * 3 and 1, prints its measured figures (503 latency while Postgres is down, recovery times, orders lost, holds
 * with two orders) and every failed assertion, and exits non-zero when an assertion failed. The full TAP output
 * is kept in a temporary file, named at the end.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '20' },
    'pg-crashes': { type: 'string', default: '5' },
    seed: { type: 'string' },
  },
});
for (const [name, value] of Object.entries(values)) {
  if (value !== undefined && !/^[0-9]{1,9}$/.test(value)) throw new Error(`--${name} takes a whole number`);
}

const log = join(await mkdtemp(join(tmpdir(), 'flashsale-crashes-')), 'tap.log');
const output = createWriteStream(log);
const child = spawn(
  join(ROOT, 'node_modules', '.bin', 'tap'),
  ['--reporter=tap', '--timeout=0', 'test/process-crashes.test.ts'],
  {
    cwd: ROOT,
    env: {
      ...process.env,
      CRASH_ROUNDS: values.rounds,
      PG_CRASHES: values['pg-crashes'],
      ...(values.seed ? { CRASH_SEED: values.seed } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  },
);
let pending = '';
const show = (line: string) => {
  const text = line.trim();
  if (/^# (seed|measured|answers|while|killed)/.test(text) || /^not ok/.test(text)) console.log(text);
};
child.stdout.on('data', (chunk: Buffer) => {
  output.write(chunk);
  const lines = (pending + chunk.toString('utf8')).split('\n');
  pending = lines.pop() ?? '';
  lines.forEach(show);
});
child.stderr.on('data', (chunk: Buffer) => output.write(chunk));
const code = await new Promise<number>((resolve) => child.once('exit', (c) => resolve(c ?? 1)));
show(pending);
output.end();
console.log(`${code === 0 ? 'passed' : 'FAILED'}; full TAP output in ${log}`);
process.exitCode = code;
