import { execFile } from 'node:child_process';
import t from 'tap';

interface Row {
  batch: number;
  generators: number;
  holds: number;
  redis: { scriptCalls: number; operations: number };
}
interface Record {
  ok: boolean;
  checks: { name: string; ok: boolean; detail: string }[];
  shard: Row[];
  sweep: { holds: number; steps: number };
  conversion: { holds: number; claim: { scriptCalls: number; units: number }; finish: { scriptCalls: number } };
}

const STOCK = 2000;

t.test(
  'the shard-cap bench, smoke form: a hot product sells exactly its stock under several load generators, and every phase balances',
  async (t) => {
    const record = await new Promise<Record>((resolve, reject) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', 'bench/shard-cap.ts', '--smoke', '--no-service', '--json', '--stock', String(STOCK)],
        { timeout: 100_000, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`${err.message}\n${stderr}`));
          else resolve(JSON.parse(stdout) as Record);
        },
      );
    });
    t.ok(record.ok, 'the run says every check held');
    for (const check of record.checks) t.ok(check.ok, `${check.name}: ${check.detail}`);
    t.same(
      record.shard.map((r) => [r.batch, r.generators]),
      [
        [1, 2],
        [32, 2],
      ],
      'one row per batch size, each with both generators',
    );
    // 2000 units against two generators of 8 batches of 32 in flight for 2 s: the product sells out, and the
    // check that it sold exactly its stock, no unit more or less, ran.
    t.ok(
      record.checks.some((c) => c.name === 'batch 32, 2 generator(s): sold out exactly' && c.ok),
      'the batch-32 row sold out exactly its stock',
    );
    t.equal(record.sweep.holds, 2000, 'the sweep released every one of its 2000 expired holds');
    t.ok(record.sweep.steps >= 2, 'in steps of at most SWEEP_BATCH_SIZE (1000)');
    t.equal(record.conversion.holds, 1000, 'the conversion phase converted its 1000 holds');
    // commandstats counted: one EVALSHA per claimHold and per finishConversion, and the script's own commands.
    t.equal(record.conversion.claim.scriptCalls, 1, 'one script call per claim, counted from INFO commandstats');
    t.equal(record.conversion.finish.scriptCalls, 1, 'one script call per finishConversion');
  },
);
