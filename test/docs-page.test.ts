import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { buildTestApp, listen } from './support/app.js';
import { chromiumMissing, launchChromium } from './support/browser.js';

/** Where the browser test leaves its screenshot (.tap/ is git-ignored). */
const SCREENSHOT_DIR = join('.tap', 'screenshots');

t.test(
  'the docs UI renders every operation in a real browser, with nothing its CSP blocks',
  { skip: chromiumMissing() },
  async (t) => {
    const { app } = await buildTestApp(t);
    const base = await listen(app);
    const openapi = (await app.inject({ url: '/openapi.json' })).json() as { paths: Record<string, object> };
    const operations = Object.values(openapi.paths).reduce((n, item) => n + Object.keys(item).length, 0);

    const browser = await launchChromium(t);
    const page = await browser.newPage();
    // Each blocked script, style or fetch is reported to the page as it happens, before anything could hide it.
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) =>
        console.error(`csp-violation ${e.effectiveDirective} ${e.sourceFile}:${e.lineNumber}`),
      );
    });
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));

    await page.goto(`${base}/docs/`);
    await page.waitForSelector('.opblock', { timeout: 60_000 });
    t.equal(await page.locator('.opblock').count(), operations, 'one block per operation of /openapi.json');
    t.ok(await page.getByText('/api/holds', { exact: true }).first().isVisible(), 'the hold route is shown');
    t.same(problems, [], 'no CSP violation, no script error');

    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    const screenshot = join(SCREENSHOT_DIR, 'docs-page.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    t.comment(`screenshot: ${screenshot}`);
  },
);
