import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import t from 'tap';
import { signPayload } from '../src/domain/signatures.js';
import { OPS_SAMPLE_MS } from '../src/ops/sale-watch.js';
import type { OpsSnapshot } from '../src/schemas/ops.js';
import { productState as apiProductState, type ProductState } from './support/api.js';
import { admin, ADMIN_TOKEN, buildTestApp, createProduct, listen } from './support/app.js';
import { chromiumMissing, launchChromium } from './support/browser.js';
import { request, sendRaw } from './support/http.js';
import { poll } from './support/wait.js';

// Hundreds of holds from one address: what this races is the page, not the rate limits.
const UNLIMITED = { RATE_LIMIT: 'off' } as const;
const WEBHOOK_SECRET = 'whsec_ops_page_test';
/** Where the browser test leaves its screenshot (.tap/ is git-ignored). */
const SCREENSHOT_DIR = join('.tap', 'screenshots');

t.test('the page and its files are served under the same-origin policy, with their own caching', async (t) => {
  const { app } = await buildTestApp(t);
  const page = await app.inject({ url: '/ops' });
  t.equal(page.statusCode, 200);
  t.match(page.headers['content-type'], /^text\/html; charset=utf-8/);
  t.equal(page.headers['x-content-type-options'], 'nosniff');
  t.match(page.headers['content-security-policy'], /default-src 'self'/);
  t.match(page.headers['content-security-policy'], /script-src 'self'/);
  t.equal(page.headers['cache-control'], 'no-cache', 'revalidated on every load');
  t.notMatch(page.body, /https?:\/\//, 'nothing is fetched from elsewhere');
  t.notMatch(page.body, /<script>|\son[a-z]+=/i, 'no inline script or event handler');

  const assets = [...page.body.matchAll(/(?:src|href)="(\/ops\/static\/[^"]+)"/g)].map((m) => m[1]!);
  t.same(assets.sort(), [
    '/ops/static/ops.css',
    '/ops/static/ops.js',
    '/ops/static/uplot.min.css',
    '/ops/static/uplot.min.js',
  ]);
  for (const asset of assets) {
    const file = await app.inject({ url: asset });
    t.equal(file.statusCode, 200, asset);
    t.equal(file.headers['x-content-type-options'], 'nosniff');
    t.match(file.headers['content-type'], asset.endsWith('.js') ? /^application\/javascript/ : /^text\/css/, asset);
    t.match(file.headers['cache-control'], asset.includes('uplot') ? /max-age=86400/ : /^no-cache$/, asset);
    const again = await app.inject({ url: asset, headers: { 'if-none-match': String(file.headers.etag) } });
    t.equal(again.statusCode, 304, `${asset}: unchanged, not sent again`);
  }
  const missing = await app.inject({ url: '/ops/static/../../package.json' });
  t.equal(missing.statusCode, 404);
  t.equal((await app.inject({ url: '/ops/static/secrets.js' })).json().code, 'NOT_FOUND');
});

t.test("the page's figures are the admin's only, and closed without ADMIN_TOKEN", async (t) => {
  const { app } = await buildTestApp(t, { ADMIN_AUTH_MAX_FAILURES: 3 });
  t.equal((await app.inject({ url: '/ops/snapshot' })).json().code, 'UNAUTHORIZED', 'no token');
  const wrong = { authorization: 'Bearer not-the-admin-token' };
  t.equal((await app.inject({ url: '/ops/snapshot', headers: wrong })).statusCode, 401);
  t.equal((await app.inject({ url: '/ops/snapshot', headers: wrong })).statusCode, 401);
  const throttled = await app.inject({ url: '/ops/snapshot', headers: admin });
  t.equal(throttled.statusCode, 429, 'wrong tokens are throttled as on every admin route, even before a right one');
  t.ok(throttled.headers['retry-after']);

  const closed = await buildTestApp(t, { ADMIN_TOKEN: '' });
  const refused = await closed.app.inject({ url: '/ops/snapshot', headers: admin });
  t.equal(refused.statusCode, 401, 'no ADMIN_TOKEN: nobody reads the figures');
  t.equal(refused.json().code, 'UNAUTHORIZED');
});

t.test('the snapshot answers the figures GET /api/products/:id answers, and refuses a bad `after`', async (t) => {
  const { app } = await buildTestApp(t);
  const product = await createProduct(app, { stock: 10 });
  const snapshot = (await app.inject({ url: '/ops/snapshot', headers: admin })).json() as OpsSnapshot;
  t.equal(snapshot.products.length, 1);
  t.match(snapshot.products[0], { id: product.id, stock: 10, held: 0, sold: 0, available_stock: 10 });
  t.equal(snapshot.sample_ms, OPS_SAMPLE_MS);
  t.equal(snapshot.points.length, 1);
  const later = await app.inject({ url: `/ops/snapshot?after=${snapshot.t}`, headers: admin });
  t.same(later.json().points, [], 'only points after `after`');
  t.equal(later.headers['cache-control'], 'no-store');
  const bad = await app.inject({ url: '/ops/snapshot?after=1e3', headers: admin });
  t.equal(bad.statusCode, 400);
  t.equal(bad.json().code, 'VALIDATION_ERROR');
});

/** A product's stock figures as GET /api/products/:id answers them. */
async function productState(base: string, id: number): Promise<ProductState> {
  const { stock, held, sold, available_stock } = await apiProductState(base, id);
  return { stock, held, sold, available_stock };
}

/** A product row's figures as the page shows them. */
function pageFigures(page: Page, id: number): Promise<ProductState> {
  return page.$eval(`[data-product="${id}"]`, (row) => {
    const field = (name: string) => Number(row.querySelector(`[data-field="${name}"]`)?.textContent);
    return { stock: field('stock'), held: field('held'), sold: field('sold'), available_stock: field('available') };
  });
}

const hold = (base: string, productId: number, qty: number, i: number) =>
  request<{ hold_id: string }>(base, 'POST', '/api/holds', { product_id: productId, qty, customer_id: `c${i}` });

t.test(
  'in a real browser: the page asks for the token once, then follows a sale under load with the figures of the API',
  { skip: chromiumMissing() },
  async (t) => {
    const service = await buildTestApp(t, { ...UNLIMITED, WEBHOOK_SECRET });
    const base = await listen(service.app);
    const steady = (await createProduct(service.app, { name: 'Steady seller', stock: 2000 })).id;
    const drop = (await createProduct(service.app, { name: 'Limited drop', stock: 40 })).id;

    const browser = await launchChromium(t);
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // Any script error, refused resource (a CSP violation is logged as a console error) or failed request.
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error' && !/status of 401/.test(message.text())) problems.push(message.text());
    });
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('requestfailed', (failed) => {
      // A reload cancels the poll in flight: that one is the page's own doing.
      const error = failed.failure()?.errorText;
      if (error !== 'net::ERR_ABORTED') problems.push(`${failed.url()}: ${error}`);
    });
    const snapshots: OpsSnapshot[] = [];
    page.on('response', async (response) => {
      if (response.url().includes('/ops/snapshot') && response.status() === 200) snapshots.push(await response.json());
    });

    const opened = await page.goto(`${base}/ops`);
    t.equal(opened?.status(), 200);
    t.match(opened?.headers()['content-security-policy'], /default-src 'self'/);
    await page.locator('#token-form').waitFor({ state: 'visible', timeout: 10_000 });

    // A wrong token is refused and asked for again.
    await page.fill('#token', 'not-the-admin-token');
    await page.click('#token-form button');
    await page.locator('#status', { hasText: 'refused' }).waitFor({ timeout: 10_000 });
    t.ok(await page.isVisible('#token-form'), 'a refused token: the form again');
    t.equal(await page.evaluate(() => sessionStorage.getItem('flashsale-admin-token')), null, 'not kept');

    await page.fill('#token', ADMIN_TOKEN);
    await page.click('#token-form button');
    await page.locator(`[data-product="${drop}"] canvas`).first().waitFor({ timeout: 10_000 });
    t.notOk(await page.isVisible('#token-form'), 'the token is asked for once');
    t.same(await pageFigures(page, steady), await productState(base, steady), 'before the sale: as the API says');

    // Load: waves of concurrent holds on both products, some turned into orders, until the drop is sold out.
    const seenHeld = new Set<number>();
    let customer = 0;
    const started = Date.now();
    const watching = (async () => {
      while (Date.now() - started < 5500) {
        seenHeld.add((await pageFigures(page, steady)).held);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    const granted = { [steady]: 0, [drop]: 0 };
    const refused = { [steady]: 0, [drop]: 0 };
    const orders: number[] = [];
    while (Date.now() - started < 5000) {
      const wave = [...Array<number>(20).fill(steady), ...Array<number>(4).fill(drop)];
      const answers = await Promise.all(wave.map((id) => hold(base, id, id === steady ? 2 : 1, customer++)));
      answers.forEach((answer, i) => {
        if (answer.status === 201) granted[wave[i]!]!++;
        if (answer.status === 409) refused[wave[i]!]!++;
      });
      // One hold of each product a wave becomes an order: sold moves too.
      for (const productId of [steady, drop]) {
        const made = answers.find((answer) => answer.status === 201 && answer.body.hold_id.startsWith(`${productId}-`));
        if (!made) continue;
        const order = await request<{ order_id: number }>(base, 'POST', '/api/orders', { hold_id: made.body.hold_id });
        if (order.status === 201) orders.push(order.body.order_id);
      }
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    await watching;
    t.ok(granted[steady]! > 100, `${granted[steady]} holds of the steady seller granted`);
    t.ok(refused[drop]! > 0, `${granted[drop]} holds of the drop granted, ${refused[drop]} refused: it sold out`);

    // Webhooks: every order paid by a signed delivery, and two forged ones.
    for (const [i, orderId] of orders.entries()) {
      const body = JSON.stringify({ idempotency_key: `pay-${i}`, order_id: orderId, event_type: 'success' });
      const headers = { 'content-type': 'application/json', 'x-signature': signPayload(body, WEBHOOK_SECRET) };
      t.equal(
        (await sendRaw(base, 'POST', '/api/webhooks/payment', body, headers)).status,
        200,
        `order ${orderId} paid`,
      );
    }
    for (const forged of ['forged-1', 'forged-2']) {
      const body = JSON.stringify({ idempotency_key: forged, order_id: orders[0], event_type: 'failure' });
      const headers = { 'content-type': 'application/json', 'x-signature': 't=1,v1=00' };
      t.equal((await sendRaw(base, 'POST', '/api/webhooks/payment', body, headers)).status, 401, 'forged: refused');
    }
    t.ok(seenHeld.size >= 3, `the page's held figure changed under load: ${[...seenHeld].join(', ')}`);

    // Once the load stops, the page settles on the API's figures within a few samples.
    for (const id of [steady, drop]) {
      const api = await productState(base, id);
      const shown = await poll(
        () => pageFigures(page, id),
        (figures) => JSON.stringify(figures) === JSON.stringify(api),
        5 * OPS_SAMPLE_MS,
        100,
      );
      t.same(shown, api, `product ${id}: the page shows GET /api/products/${id}'s figures`);
      t.ok(api.held > 0 && api.sold > 0, `product ${id}: holds and orders were made (${JSON.stringify(api)})`);
    }
    // This instance's counts, as the metrics counted them: every hold the test was granted or refused.
    for (const id of [steady, drop]) {
      const counted = await page.$eval(`[data-product="${id}"]`, (row) => ({
        holds: Number(row.querySelector('[data-field="holds"]')?.textContent),
        refusals: Number(row.querySelector('[data-field="refusals"]')?.textContent),
      }));
      t.same(counted, { holds: granted[id], refusals: refused[id] }, `product ${id}: holds granted and refused`);
    }
    const webhookResults = await poll(
      () =>
        page.$$eval<Record<string, number>, HTMLTableRowElement>('#webhooks tr[data-result]', (trs) =>
          Object.fromEntries(trs.map((tr) => [tr.dataset.result, Number(tr.cells[1]?.textContent)])),
        ),
      (results) => results.paid === orders.length && results.bad_signature === 2,
      5 * OPS_SAMPLE_MS,
      100,
    );
    t.match(webhookResults, { paid: orders.length, bad_signature: 2 }, 'webhook results: the deliveries sent');
    t.equal(await page.textContent('#unavailable-total'), '0', 'no 503 answered');
    t.match(await page.textContent('#sweeper-lag'), /^\d+\.\d$/, 'the sweeper lag is shown');

    t.equal((await productState(base, drop)).available_stock, 0, 'the drop sold out');
    t.ok(await page.isVisible(`[data-product="${drop}"] .sold-out-badge`), 'the drop is marked sold out');
    t.notOk(await page.isVisible(`[data-product="${steady}"] .sold-out-badge`), 'the steady seller is not');
    t.match(await page.textContent(`[data-product="${drop}"] .moments`), /^sold out at /, 'the moment is listed');

    // The bar drains: the available part of the steady seller is its available share of the stock.
    const availableShare = await page.$eval(`[data-product="${steady}"] .bar .available`, (element) => {
      const bar = element.parentElement!.getBoundingClientRect().width;
      return element.getBoundingClientRect().width / bar;
    });
    const steadyState = await productState(base, steady);
    t.ok(
      Math.abs(availableShare - steadyState.available_stock / steadyState.stock) < 0.01,
      `available part of the bar: ${availableShare.toFixed(3)} of its width`,
    );

    // The plots: one per product, fed with rates the server measured while the holds came in.
    t.equal(await page.locator('.product .uplot').count(), 2, 'one plot a product');
    const rates = snapshots.flatMap((snapshot) =>
      snapshot.points.flatMap((point) => point.products.filter((rate) => rate.id === steady)),
    );
    t.ok(
      rates.some((rate) => (rate.holds_per_s ?? rate.units_taken_per_s ?? 0) > 0),
      'the page was sent positive hold rates to plot',
    );

    // Asked once: a reload finds the token in sessionStorage.
    await page.reload();
    await page.locator(`[data-product="${steady}"] canvas`).first().waitFor({ timeout: 10_000 });
    t.notOk(await page.isVisible('#token-form'), 'no token asked for after a reload');

    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    const screenshot = join(SCREENSHOT_DIR, 'ops-page.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    t.comment(`screenshot: ${screenshot}`);
    t.same(problems, [], 'no script error, CSP violation or failed request');
  },
);
