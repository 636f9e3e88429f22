// Counts tests in the TAP log of `tap --reporter=tap` and prints "PASSED FAILED SKIPPED", with tap-parser (tap's own
// parser). Level 0 has one subtest per test file; a "test" is a level-1 subtest (a named t.test()), and a file without
// subtests counts as one. Also failed: a failing level-1 assertion outside subtests, a file failed with no failing
// subtest (crash, exit code, timeout), a failing runner-level point, a Bail out!, files the plan promised that never
// reported, and a stream tap-parser finds not ok although nothing above failed.
import { readFileSync } from 'node:fs';
import { Parser } from 'tap-parser';

const total = { pass: 0, fail: 0, skip: 0 };
const failures = [];
const fail = (what, n = 1) => void ((total.fail += n), failures.push(what));
const parser = new Parser();
parser.on('child', (file) => {
  const own = { pass: 0, fail: 0, skip: 0, failures: [] };
  const failed = (what) => void (own.fail++, own.failures.push(what));
  file.on('assert', (a) => {
    // A point that closes a body is a subtest; a skipped or todo subtest never ran, so it has none.
    if (a.skip || a.todo) own.skip++;
    else if (!a.ok) failed(a.closingTestPoint ? a.fullname : `${a.fullname} (outside any subtest)`);
    else if (a.closingTestPoint) own.pass++;
  });
  file.on('complete', () => {
    const end = file.closingTestPoint; // the file's own point: without one, the plan counts the file as missing
    if (!end) return;
    const directive = end.skip || end.todo;
    if (own.pass + own.fail + own.skip === 0 && (directive || end.ok)) own[directive ? 'skip' : 'pass'] = 1;
    if (!end.ok && !directive && own.fail === 0) failed(`${file.name} (file failed: crash, exit code, timeout)`);
    for (const k of ['pass', 'fail', 'skip']) total[k] += own[k];
    failures.push(...own.failures);
  });
});
parser.on('assert', (a) => a.closingTestPoint || a.ok || a.skip || a.todo || fail(a.name));
parser.on('bailout', (reason) => fail(`Bail out! ${reason || ''}`));
parser.on('complete', (results) => {
  const missing = (results.plan.end ?? 0) - results.count;
  if (missing > 0) fail(`${missing} test file(s) never reported`, missing);
  if (!results.ok && total.fail === 0) fail(`TAP stream not ok: ${JSON.stringify(results.failures)}`);
  for (const f of failures) process.stderr.write(`FAILED: ${f}\n`);
  process.stdout.write(`${total.pass} ${total.fail} ${total.skip}\n`);
});
parser.end(readFileSync(process.argv[2] ?? '/dev/stdin', 'utf8'));
