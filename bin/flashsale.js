#!/usr/bin/env node
// `flashsale`: the source through tsx in a checkout with dev dependencies (always current), else the build.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../src/cli/flashsale.ts', import.meta.url));
const built = new URL('../dist/src/cli/flashsale.js', import.meta.url);

let tsx;
try {
  tsx = existsSync(source) ? await import('tsx/esm/api') : undefined;
} catch {
  tsx = undefined; // installed without dev dependencies
}
if (tsx) {
  tsx.register();
  await import(source);
} else if (existsSync(fileURLToPath(built))) {
  await import(built.href);
} else {
  process.stderr.write('flashsale: neither tsx (npm ci) nor a build (npm run build) is there to run\n');
  process.exit(1);
}
