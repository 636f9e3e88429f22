/** The end of a run: the markdown table (stdout), the targets, and the JSON record under bench/results/. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './environment.js';
import { formatStatusCodes, otherCpuPercent, type LoadSummary } from './load.js';
import { formatMachine, type Machine } from './machine.js';
import { REFERENCE_NAMES, type ReferenceLoad, type ReferenceName } from './references.js';
import type { ScenarioResult } from './scenario.js';
import type { ScenarioName, Settings } from './settings.js';

export type ScenarioOutcome =
  | { status: 'ok'; name: ScenarioName; result: ScenarioResult }
  | { status: 'crashed'; name: ScenarioName; error: string }
  | { status: 'skipped'; name: ScenarioName; reason: string };

export interface TargetResult {
  target: string;
  measured: string;
  /** undefined: not measured in this run. */
  met: boolean | undefined;
}

export interface RunRecord {
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  settings: Settings;
  /** 'started by the bench' or the BENCH_URL. */
  service: string;
  references: Partial<Record<ReferenceName, ReferenceLoad>>;
  scenarios: ScenarioOutcome[];
  targets: TargetResult[];
  /** False when an invariant check failed or something crashed: the run exits non-zero. */
  ok: boolean;
  /** Reasons the run failed, outside the scenarios' invariant checks. */
  failures: string[];
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ratio = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : `${n.toFixed(2)}×`);
const ms = (n: number | undefined) => (n === undefined ? '—' : Number.isInteger(n) ? String(n) : n.toFixed(1));

function resultOf(scenarios: ScenarioOutcome[], name: ScenarioName): ScenarioResult | undefined {
  const outcome = scenarios.find((s) => s.name === name);
  return outcome?.status === 'ok' ? outcome.result : undefined;
}

export function evaluateTargets(references: RunRecord['references'], scenarios: ScenarioOutcome[]): TargetResult[] {
  const ceiling = references.ceiling;
  const seed = references.seed;
  const seedCheckout = references['seed-checkout'];
  const hot = resultOf(scenarios, 'hot-sku');
  const soldOut = resultOf(scenarios, 'sold-out');
  const checkout = resultOf(scenarios, 'checkout');
  const storm = resultOf(scenarios, 'expiry-storm');
  const target = (
    name: string,
    value: number | undefined,
    format: (v: number) => string,
    met: (v: number) => boolean,
  ): TargetResult =>
    value === undefined || !Number.isFinite(value)
      ? { target: name, measured: 'not measured', met: undefined }
      : { target: name, measured: format(value), met: met(value) };
  const div = (a: number | undefined, b: number | undefined) => (a === undefined || !b ? undefined : a / b);
  return [
    target(
      'hot-sku ≥ 0.8 × ceiling req/s',
      div(hot?.load.requestsPerSecond, ceiling?.requestsPerSecond),
      ratio,
      (v) => v >= 0.8,
    ),
    target(
      'hot-sku p99 ≤ 1.5 × ceiling p99',
      div(hot?.load.latencyMs.p99, ceiling?.latencyMs.p99),
      ratio,
      (v) => v <= 1.5,
    ),
    target(
      'hot-sku ≥ 20 × seed req/s',
      div(hot?.load.requestsPerSecond, seed?.requestsPerSecond),
      ratio,
      (v) => v >= 20,
    ),
    target(
      'sold-out ≥ 0.9 × ceiling req/s',
      div(soldOut?.load.requestsPerSecond, ceiling?.requestsPerSecond),
      ratio,
      (v) => v >= 0.9,
    ),
    target(
      'checkout ≥ 5 × seed hold-only rate (checkouts/s ÷ seed holds/s)',
      div(checkout?.figures.checkoutsPerSecond, seed?.requestsPerSecond),
      ratio,
      (v) => v >= 5,
    ),
    target(
      "checkout ≥ 10 × seed's own checkout (checkouts/s ÷ seed checkouts/s)",
      div(checkout?.figures.checkoutsPerSecond, seedCheckout?.checkoutsPerSecond),
      ratio,
      (v) => v >= 10,
    ),
    target(
      'Redis ≤ 300 B per active hold',
      hot?.figures.bytesPerHold,
      (v) => `${int(v)} B`,
      (v) => v <= 300,
    ),
    target(
      'sweeper ≥ 50,000 expired holds released/s',
      storm?.figures.releasedPerSecond,
      (v) => `${int(v)}/s`,
      (v) => v >= 50_000,
    ),
  ];
}

const COLUMNS = 18;

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

function otherCpu(load: LoadSummary): string {
  const other = otherCpuPercent(load);
  return other === undefined ? '—' : `${int(other)}%`;
}

function loadCells(load: LoadSummary, references: RunRecord['references']): string[] {
  const ceiling = references.ceiling;
  const seed = references.seed;
  return [
    int(load.requestsPerSecond),
    ms(load.latencyMs.p50),
    ms(load.latencyMs.p99),
    ms(load.latencyMs.p99_9),
    formatStatusCodes(load.statusCodes),
    load.errors === 0 ? '0' : `${int(load.errors)} (${int(load.timeouts)} timeouts)`,
    int(load.unexpected),
    ratio(ceiling ? load.requestsPerSecond / ceiling.requestsPerSecond : undefined),
    ratio(seed ? load.requestsPerSecond / seed.requestsPerSecond : undefined),
    ratio(ceiling && ceiling.latencyMs.p99 > 0 ? load.latencyMs.p99 / ceiling.latencyMs.p99 : undefined),
    load.usage ? `${int(load.usage.cpuPercent)}%` : '—',
    // CPU time per answer: steadier than req/s on a machine that other work shares.
    load.usage && load.requestsPerSecond > 0
      ? ((load.usage.cpuPercent * 1e4) / load.requestsPerSecond).toFixed(1)
      : '—',
    load.usage ? int(load.usage.peakRssMb) : '—',
    `${int(load.machine.storesPercent)}%`,
    `${int(load.machine.benchPercent)}%`,
    otherCpu(load),
  ];
}

/** The service's checkout rate beside the seed's two rates, all three from this run. */
function checkoutComparison(record: RunRecord): string[] {
  const seedCheckout = record.references['seed-checkout'];
  const seed = record.references.seed;
  const service = resultOf(record.scenarios, 'checkout')?.figures.checkoutsPerSecond;
  const lines: string[] = [];
  if (seedCheckout?.checkoutsPerSecond !== undefined) {
    lines.push(
      `- seed checkout: ${int(seedCheckout.checkoutsPerSecond)} checkouts/s (the same requests, on the seed's design)`,
    );
  }
  if (service !== undefined && (seedCheckout?.checkoutsPerSecond || seed)) {
    const against = [
      ...(seedCheckout?.checkoutsPerSecond
        ? [`${ratio(service / seedCheckout.checkoutsPerSecond)} the seed's checkout`]
        : []),
      ...(seed ? [`${ratio(service / seed.requestsPerSecond)} the seed's hold-only rate`] : []),
    ];
    lines.push(`- checkout: ${int(service)} checkouts/s = ${against.join(', ')}`);
  }
  return lines;
}

export function renderMarkdown(record: RunRecord): string {
  const { settings } = record;
  const lines: string[] = [];
  lines.push(
    `### flashsale load test, ${record.startedAt.slice(0, 16).replace('T', ' ')} UTC${settings.smoke ? ' (smoke)' : ''}`,
  );
  lines.push('');
  lines.push(`Machine: ${formatMachine(record.machine)}. Service: ${record.service}.`);
  lines.push(
    `Load: ${settings.connections} connections, ${settings.duration} s per scenario after a ${settings.warmup} s warm-up ` +
      `(autocannon, on the same machine).`,
  );
  lines.push('');
  lines.push(
    row([
      '',
      'req/s',
      'p50 ms',
      'p99 ms',
      'p99.9 ms',
      'answers',
      'errors',
      'unexpected',
      '÷ ceiling req/s',
      '÷ seed req/s',
      'p99 ÷ ceiling p99',
      'server CPU',
      'server CPU µs/req',
      'peak RSS MiB',
      'stores CPU',
      'bench CPU',
      'other CPU',
      'invariants',
    ]),
  );
  lines.push(
    row(Array.from({ length: COLUMNS }, (_, i) => (i === 0 || i === 5 || i === COLUMNS - 1 ? '---' : '---:'))),
  );
  for (const name of REFERENCE_NAMES) {
    const load = record.references[name];
    if (load) lines.push(row([`*reference: ${name.replace('-', ' ')}*`, ...loadCells(load, record.references), '']));
  }
  for (const outcome of record.scenarios) {
    if (outcome.status === 'ok') {
      const { result } = outcome;
      lines.push(
        row([
          `**${outcome.name}**`,
          ...loadCells(result.load, record.references),
          result.invariants.ok ? 'ok' : '**FAILED**',
        ]),
      );
    } else if (outcome.status === 'crashed') {
      lines.push(
        row([
          `**${outcome.name}**`,
          ...Array.from({ length: COLUMNS - 2 }, () => '—'),
          `**CRASHED**: ${outcome.error.split('\n')[0]}`,
        ]),
      );
    } else {
      lines.push(
        row([`**${outcome.name}**`, ...Array.from({ length: COLUMNS - 2 }, () => '—'), `skipped: ${outcome.reason}`]),
      );
    }
  }
  lines.push('');
  lines.push(
    'CPU in % of one core (the machine has ' +
      `${record.machine.nproc * 100}%): the server process (peak RSS is its own), the stores (the Redis server and every ` +
      'postgres process), the bench (autocannon runs in it), and everything else (noise from other work on the machine). ' +
      'Latencies over all answers, whatever their status.',
  );
  const notes = record.scenarios.flatMap((o) => {
    if (o.status !== 'ok') return [];
    const { notes: scenarioNotes, invariants } = o.result;
    const settled =
      invariants.ok && invariants.attempts > 1
        ? [
            `invariants held at check ${invariants.attempts}, ${invariants.settleSeconds.toFixed(1)} s after the load (work in flight had to finish)`,
          ]
        : [];
    return [...scenarioNotes, ...settled].map((n) => `- ${o.name}: ${n}`);
  });
  notes.push(...checkoutComparison(record));
  if (notes.length > 0) {
    lines.push('');
    lines.push(...notes);
  }

  lines.push('');
  lines.push(row(['target', 'measured', 'met']));
  lines.push(row(['---', '---:', '---']));
  for (const t of record.targets)
    lines.push(row([t.target, t.measured, t.met === undefined ? '—' : t.met ? 'met' : '**not met**']));

  const failed = record.scenarios.flatMap((o) =>
    o.status === 'ok'
      ? o.result.invariants.checks.filter((c) => !c.ok).map((c) => `- ${o.name}: ${c.name}: ${c.detail}`)
      : [],
  );
  const crashed = record.scenarios.flatMap((o) => (o.status === 'crashed' ? [`- ${o.name} crashed: ${o.error}`] : []));
  const problems = [...failed, ...crashed, ...record.failures.map((f) => `- ${f}`)];
  lines.push('');
  if (problems.length > 0) {
    lines.push('**Run FAILED:**');
    lines.push(...problems);
  } else {
    const checked = record.scenarios.filter((o) => o.status === 'ok').length;
    lines.push(`Invariants held in all ${checked} scenario(s). Targets are reported, never enforced.`);
  }
  return lines.join('\n');
}

/** Writes the run's JSON record to bench/results/<timestamp>[-smoke].json and returns its path. */
export function writeRecord(record: RunRecord): string {
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = record.startedAt.replace(/[:.]/g, '-');
  const path = join(dir, `${stamp}${record.settings.smoke ? '-smoke' : ''}.json`);
  writeFileSync(path, `${JSON.stringify(record, null, 2)}\n`);
  return path;
}
