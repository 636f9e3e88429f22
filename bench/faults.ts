/**
 * The long form of test/redis-faults.test.ts: `npm run faults -- --rounds N [--clients C] [--seed S]`. Runs that
 * file (every check of the CI form) with N faults in each scenario's storm: Redis SIGKILLed and restarted with its
 * AOF, restarted on an empty data directory, flushed. Prints each round's figures as they come, then their median
 * and maximum per scenario. The exit status is tap's: non-zero when any check failed.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    clients: { type: 'string', default: '16' },
    seed: { type: 'string' },
  },
});
for (const [name, value] of Object.entries(values)) {
  if (value !== undefined && !/^[1-9][0-9]*$/.test(value)) {
    console.error(`--${name} must be a positive integer, got ${value}`);
    process.exit(2);
  }
}

type Figures = Record<string, unknown> & { scenario: string; round?: number };
const rounds: Figures[] = [];
const failures: string[] = [];

const tap = spawn(
  join(ROOT, 'node_modules', '.bin', 'tap'),
  ['--reporter=tap', '--timeout=0', '--disable-coverage', 'test/redis-faults.test.ts'],
  {
    cwd: ROOT,
    env: {
      ...process.env,
      REDIS_FAULTS_ROUNDS: values.rounds,
      REDIS_FAULTS_CLIENTS: values.clients,
      ...(values.seed ? { REDIS_FAULTS_SEED: values.seed } : {}),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  },
);
let pending = '';
tap.stdout.on('data', (chunk: Buffer) => {
  pending += chunk.toString('utf8');
  const lines = pending.split('\n');
  pending = lines.pop() ?? '';
  for (const line of lines) {
    const text = line.trim();
    const figures = /^# figures (\{.*\})$/.exec(text);
    if (figures) {
      const parsed = JSON.parse(figures[1]!) as Figures;
      rounds.push(parsed);
      console.error(text.slice(2));
    } else if (text.startsWith('not ok')) {
      failures.push(text);
      console.error(text);
    } else if (/^# (seed|Subtest)/.test(text)) {
      console.error(text.slice(2));
    }
  }
});
const code: number = await new Promise((resolve) => tap.on('exit', (exitCode) => resolve(exitCode ?? 1)));

function median(numbers: number[]): number {
  const sorted = [...numbers].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const lines = ['| scenario | figure | rounds | median | max |', '|---|---|---|---|---|'];
for (const scenario of [...new Set(rounds.map((r) => r.scenario))]) {
  const ofScenario = rounds.filter((r) => r.scenario === scenario);
  const fields = [...new Set(ofScenario.flatMap((r) => Object.keys(r)))].filter(
    (f) => f !== 'scenario' && f !== 'round',
  );
  for (const field of fields) {
    const seen = ofScenario.map((r) => r[field]).filter((v) => v !== undefined);
    const numbers = seen.filter((v): v is number => typeof v === 'number');
    if (numbers.length > 0) {
      lines.push(`| ${scenario} | ${field} | ${numbers.length} | ${median(numbers)} | ${Math.max(...numbers)} |`);
    } else {
      lines.push(`| ${scenario} | ${field} | ${seen.length} | ${seen.map((v) => JSON.stringify(v)).join(' ')} | |`);
    }
  }
}
console.log(lines.join('\n'));
console.log(
  failures.length === 0 && code === 0
    ? '\nevery check passed'
    : `\n${failures.length} check(s) failed (tap exit ${code})`,
);
process.exit(code);
