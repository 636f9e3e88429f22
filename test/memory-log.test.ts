import t from 'tap';
import { loadConfig } from '../src/config.js';
import { serviceWorld } from './support/service-process.js';
import { poll } from './support/wait.js';

interface MemoryLine {
  level: number;
  msg: string;
  memory: NodeJS.MemoryUsage;
  time: number;
}

/** The service's `memory usage` lines so far, parsed. */
function memoryLines(output: string[]): MemoryLine[] {
  return output.flatMap((line) => {
    try {
      const parsed = JSON.parse(line) as MemoryLine;
      return parsed.msg === 'memory usage' ? [parsed] : [];
    } catch {
      return [];
    }
  });
}

t.test('the memory report is off unless MEMORY_LOG_INTERVAL_MS asks for it', async (t) => {
  t.equal(loadConfig({}).MEMORY_LOG_INTERVAL_MS, 0);
  t.equal(loadConfig({ MEMORY_LOG_INTERVAL_MS: '5000' }).MEMORY_LOG_INTERVAL_MS, 5000);
});

t.test('with MEMORY_LOG_INTERVAL_MS the process logs its memory at info, even at LOG_LEVEL=warn', async (t) => {
  const w = await serviceWorld(t, { LOG_LEVEL: 'warn', MEMORY_LOG_INTERVAL_MS: '100' });
  const quiet = await w.start({ env: { MEMORY_LOG_INTERVAL_MS: '0' } });
  const reporting = await w.start();
  const lines = await poll(
    async () => memoryLines(reporting.output()),
    (found) => found.length >= 3,
    15_000,
    50,
  );
  t.ok(lines.length >= 3, `several reports (${lines.length})`);
  for (const line of lines.slice(0, 3)) {
    t.equal(line.level, 30, 'at info');
    t.ok(line.memory.heapUsed > 0 && line.memory.rss > line.memory.heapUsed, 'heapUsed and rss in bytes');
    t.ok(line.memory.heapTotal >= line.memory.heapUsed, 'heapTotal covers heapUsed');
  }
  t.ok(lines[2]!.time > lines[0]!.time, 'one report per interval, not one in all');
  // The quiet one has been up at least as long as the reporting one has taken to write three lines.
  t.same(memoryLines(quiet.output()), [], 'none with MEMORY_LOG_INTERVAL_MS=0');
  const belowWarn = reporting.output().filter((line) => {
    const parsed = JSON.parse(line) as { level: number; msg: string };
    return parsed.level < 40 && parsed.msg !== 'memory usage';
  });
  t.same(belowWarn, [], 'nothing else below warn is logged because of it');
});
