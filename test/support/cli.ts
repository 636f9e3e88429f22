/** The flashsale program as a child process, for tests of its output and exit codes. */
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_REDIS_URL, type TestApp } from './app.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `flashsale ...args` (through bin/flashsale.js, as an installed command runs) on the test's stores. */
export function flashsale(
  w: TestApp | undefined,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
) {
  return new Promise<Run>((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'bin', 'flashsale.js'), ...args],
      {
        cwd: options.cwd ?? ROOT,
        timeout: 60_000,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? '/tmp',
          ...(w
            ? {
                REDIS_URL: TEST_REDIS_URL,
                REDIS_CLUSTER_NODES: w.config.REDIS_CLUSTER_NODES,
                DATABASE_URL: w.config.DATABASE_URL,
                REDIS_KEY_PREFIX: w.prefix,
              }
            : {}),
          LOG_LEVEL: 'warn',
          ...options.env,
        },
      },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}
