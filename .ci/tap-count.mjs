// Counts tests in the TAP stream of `tap --reporter=tap` (tap 21) and prints "PASSED FAILED SKIPPED".
//
// The stream nests with 4 spaces a level:
//   # Subtest: test/x.test.ts          <- level 0: one test file
//       # Subtest: reserves stock      <- level 1: a named t.test()/test() in that file
//           ok 1 - should be equal     <- level 2: its assertions (not counted)
//       ok 1 - reserves stock # time=3ms
//   ok 1 - test/x.test.ts # time=40ms
// A "test" is a level-1 named subtest. Also counted as failed: a level-1 `not ok` that is not a
// subtest (uncaught error, failing top-level assertion), a file whose own line is `not ok` with no
// failure inside it (crash, exit code, timeout, "no tests found"), a level-0 `not ok` that is not a
// file, a Bail out!, and files the plan promised but that never reported. A file without subtests
// counts as one test. Diagnostics blocks (`---` ... `...`) are skipped: they quote source code.
import { readFileSync } from 'node:fs';

const lines = readFileSync(process.argv[2] ?? '/dev/stdin', 'utf8').split(/\r?\n/);
const point = /^(not )?ok\b(?:\s+\d+)?(?:\s*-)?\s*(.*)$/;
const directive = (desc) => /(?:^|[^\\])#\s*(skip|todo)\b/i.exec(desc)?.[1]?.toLowerCase();

let passed = 0, failed = 0, skipped = 0;
const failures = [];
let file = null; // { name, pass, fail, skip, pending: the next level-1 point closes a subtest }
let plan = null;
let filePoints = 0;
let yamlEnd = null; // the line that closes the diagnostics block being skipped
let lastWasPoint = -1; // indent of the previous line if it was a test point

for (const raw of lines) {
  if (yamlEnd !== null) {
    if (raw === yamlEnd) yamlEnd = null;
    continue;
  }
  const indent = raw.length - raw.trimStart().length;
  const line = raw.trim();
  if (line === '---' && indent === lastWasPoint + 2) {
    yamlEnd = ' '.repeat(indent) + '...';
    continue;
  }
  lastWasPoint = -1;
  if (line === '' || indent % 4 !== 0) continue;
  const level = indent / 4;

  if (/^Bail out!/.test(line)) {
    failed++;
    failures.push(line);
    continue;
  }
  if (level === 0 && /^1\.\.\d+/.test(line)) {
    plan = Number(line.slice(3).split(/\D/)[0]);
    continue;
  }
  // A subtest is a level-1 point with a body: a "# Subtest" header (absent for unnamed ones) or deeper lines.
  if (level >= 2 && file) file.pending = true;
  const sub = /^# Subtest(?::\s*(.*))?$/.exec(line);
  if (sub) {
    if (level === 0) file = { name: sub[1] ?? '(unnamed file)', pass: 0, fail: 0, skip: 0, pending: false };
    else if (level === 1 && file) file.pending = true;
    continue;
  }
  const m = point.exec(line);
  if (!m) continue;
  lastWasPoint = indent;
  const ok = !m[1];
  const desc = m[2];
  const dir = directive(desc);
  const name = desc.replace(/\s+#\s.*$/, '').replace(/\\#/g, '#');

  if (level === 1 && file) {
    // Skipped and todo subtests never ran, so they have no body.
    const isSubtest = file.pending || dir !== undefined;
    file.pending = false;
    if (isSubtest) {
      if (dir) file.skip++;
      else if (ok) file.pass++;
      else {
        file.fail++;
        failures.push(`${file.name} > ${name}`);
      }
    } else if (!ok && !dir) {
      file.fail++;
      failures.push(`${file.name} > ${name} (outside any subtest)`);
    }
  } else if (level === 0) {
    filePoints++;
    if (!file) {
      // A runner-level point such as "not ok 5 - timeout!".
      if (!ok && !dir) {
        failed++;
        failures.push(name);
      }
      continue;
    }
    let { pass, fail, skip } = file;
    if (pass + fail + skip === 0) {
      // No named subtests: the file itself is the test.
      if (dir) skip = 1;
      else if (ok) pass = 1;
    }
    if (!ok && !dir && fail === 0) {
      fail = 1;
      failures.push(`${file.name} (file failed: crash, exit code, timeout or no tests)`);
    }
    passed += pass;
    failed += fail;
    skipped += skip;
    file = null;
  }
}

if (plan !== null && filePoints < plan) {
  failed += plan - filePoints;
  failures.push(`${plan - filePoints} test file(s) never reported`);
}
for (const f of failures) process.stderr.write(`FAILED: ${f}\n`);
process.stdout.write(`${passed} ${failed} ${skipped}\n`);
