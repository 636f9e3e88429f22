// The live sale page: asks once for the admin token (kept in sessionStorage), then polls GET /ops/snapshot
// once a second and draws what it answers. No build step: plain JavaScript, uPlot from /ops/static/.
'use strict';

const TOKEN_KEY = 'flashsale-admin-token';
const PLOT_HEIGHT = 110;

const $ = (id) => document.getElementById(id);
const status = $('status');
const form = $('token-form');
const sale = $('sale');

let points = []; // the plot points the page has, oldest first (the server sends only newer ones)
let historyMs = 5 * 60_000;
let sampleMs = 1000;
let timer;
const rows = new Map(); // product id -> its row's elements and plot
const servicePlots = {};

function tell(text, problem = false) {
  status.textContent = text;
  status.classList.toggle('problem', problem);
}

function askForToken(why) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  sale.hidden = true;
  form.hidden = false;
  tell(why, why !== 'enter the admin token');
  $('token').focus();
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  form.hidden = true;
  poll();
});

$('forget').addEventListener('click', () => askForToken('enter the admin token'));

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return askForToken('enter the admin token');
  const after = points.length > 0 ? points[points.length - 1].t : 0;
  let wait = sampleMs;
  try {
    const answer = await fetch(`/ops/snapshot?after=${after}`, {
      headers: { authorization: `Bearer ${token}` },
      cache: 'no-store',
    });
    if (answer.status === 401) return askForToken('that token was refused: enter the admin token');
    if (answer.status === 429 || answer.status === 503) {
      const seconds = Number(answer.headers.get('retry-after')) || 1;
      wait = seconds * 1000;
      const body = await answer.json().catch(() => ({}));
      tell(`${answer.status} ${body.code ?? ''}: ${body.message ?? ''} (trying again in ${seconds} s)`, true);
    } else if (!answer.ok) {
      tell(`the snapshot answered ${answer.status}`, true);
    } else {
      show(await answer.json());
    }
  } catch (err) {
    tell(`cannot reach the service: ${err.message}`, true);
  }
  timer = setTimeout(poll, wait);
}

function show(snapshot) {
  sampleMs = snapshot.sample_ms;
  historyMs = snapshot.history_ms;
  // A restarted service starts its history again: keep only points older than its first new one.
  const first = snapshot.points[0];
  if (first) points = points.filter((point) => point.t < first.t);
  points.push(...snapshot.points);
  const oldest = snapshot.t - historyMs;
  points = points.filter((point) => point.t >= oldest);

  sale.hidden = false;
  showService(snapshot);
  showProducts(snapshot);
  const time = new Date(snapshot.t).toLocaleTimeString();
  tell(`updated ${time}, ${snapshot.products.length} products`);
  document.body.dataset.updated = String(snapshot.t);
}

const seconds = (t) => t / 1000;
const fixed = (value, digits = 1) => (value === null || value === undefined ? '-' : value.toFixed(digits));

function showService(snapshot) {
  $('unavailable-total').textContent = snapshot.unavailable_total ?? 'n/a';
  $('sweeper-lag').textContent = snapshot.sweeper_lag_seconds === null ? 'n/a' : fixed(snapshot.sweeper_lag_seconds);
  const times = points.map((point) => seconds(point.t));
  plotInto(
    servicePlots,
    'unavailable',
    $('unavailable-plot'),
    [{ label: '503/s', stroke: '#dc2626' }],
    [times, points.map((point) => point.unavailable_per_s)],
  );
  plotInto(
    servicePlots,
    'lag',
    $('lag-plot'),
    [{ label: 'lag s', stroke: '#7c3aed' }],
    [times, points.map((point) => point.sweeper_lag_seconds)],
  );

  const webhooks = $('webhooks').tBodies[0];
  webhooks.replaceChildren();
  if (snapshot.webhooks === null) {
    webhooks.append(tableRow('n/a', 'no counters'));
  } else {
    const results = Object.entries(snapshot.webhooks).sort(([a], [b]) => a.localeCompare(b));
    if (results.length === 0) webhooks.append(tableRow('none yet', ''));
    for (const [result, count] of results) {
      const tr = tableRow(result, String(count));
      tr.dataset.result = result;
      webhooks.append(tr);
    }
  }
  $('source').textContent =
    snapshot.rates_from === 'counters'
      ? "Holds/s, refusals/s, 503s and webhook results: this instance's metrics (a product they do not label shows units taken/s). Stock figures: Redis, every instance together."
      : 'No metrics in this service: the plots show units taken per second (the change of held + sold), and refusals, 503s and webhook results are not known.';
}

function tableRow(...cells) {
  const tr = document.createElement('tr');
  for (const text of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

function showProducts(snapshot) {
  const shown = new Set();
  const container = $('products');
  for (const product of snapshot.products) {
    shown.add(product.id);
    const row = rows.get(product.id) ?? addRow(container, product);
    const { stock, held, sold, available_stock: available } = product;
    row.field.stock.textContent = String(stock);
    row.field.held.textContent = String(held);
    row.field.sold.textContent = String(sold);
    row.field.available.textContent = String(available);
    // Counted by this instance's metrics since it started; "-" for a product they do not label.
    row.field.holds.textContent = String(product.holds_total ?? '-');
    row.field.refusals.textContent = String(product.refusals_total ?? '-');
    const whole = Math.max(stock, held + sold, 1);
    row.bar.sold.style.width = `${(100 * sold) / whole}%`;
    row.bar.held.style.width = `${(100 * held) / whole}%`;
    row.bar.available.style.width = `${(100 * Math.max(available, 0)) / whole}%`;
    row.badge.hidden = available !== 0;
    row.soldOutAt = product.sold_out_at.map(seconds);
    row.moments.textContent =
      product.sold_out_at.length === 0
        ? ''
        : `sold out at ${product.sold_out_at.map((t) => new Date(t).toLocaleTimeString()).join(', ')}`;

    const rates = points.map((point) => point.products.find((p) => p.id === product.id));
    const data = [points.map((point) => seconds(point.t))];
    const series = [];
    // A product the metrics count (not one past their label bound) shows holds and refusals; any other what
    // its stock figures say.
    if (rates.some((rate) => rate && rate.holds_per_s !== null)) {
      series.push({ label: 'holds/s', stroke: '#2563eb' }, { label: 'refusals/s', stroke: '#dc2626' });
      data.push(
        rates.map((rate) => rate?.holds_per_s ?? null),
        rates.map((rate) => rate?.refusals_per_s ?? null),
      );
    } else {
      series.push({ label: 'units taken/s', stroke: '#2563eb' });
      data.push(rates.map((rate) => rate?.units_taken_per_s ?? null));
    }
    plotInto(row, 'plot', row.plotElement, series, data, row);
  }
  for (const [id, row] of rows) {
    if (shown.has(id)) continue;
    row.plot?.destroy();
    row.element.remove();
    rows.delete(id);
  }
}

function addRow(container, product) {
  const element = document.createElement('div');
  element.className = 'product';
  element.dataset.product = String(product.id);

  const left = document.createElement('div');
  const name = document.createElement('div');
  name.className = 'name';
  name.textContent = `#${product.id} ${product.name}`;
  const badge = document.createElement('span');
  badge.className = 'sold-out-badge';
  badge.textContent = 'sold out';
  badge.hidden = true;
  name.append(badge);

  const barElement = document.createElement('div');
  barElement.className = 'bar';
  barElement.title = 'sold, held, available';
  const bar = {};
  for (const part of ['sold', 'held', 'available']) {
    bar[part] = document.createElement('div');
    bar[part].className = part;
    barElement.append(bar[part]);
  }

  const figures = document.createElement('dl');
  figures.className = 'figures';
  const field = {};
  for (const [key, label] of [
    ['stock', 'stock'],
    ['held', 'held'],
    ['sold', 'sold'],
    ['available', 'available'],
    ['holds', 'holds granted'],
    ['refusals', 'refused'],
  ]) {
    const dt = document.createElement('dt');
    dt.textContent = label;
    field[key] = document.createElement('dd');
    field[key].dataset.field = key;
    figures.append(dt, field[key]);
  }
  const moments = document.createElement('div');
  moments.className = 'moments';
  left.append(name, barElement, figures, moments);

  const plotElement = document.createElement('div');
  plotElement.className = 'plot';
  element.append(left, plotElement);
  container.append(element);

  const row = { element, field, bar, badge, moments, plotElement, soldOutAt: [] };
  rows.set(product.id, row);
  return row;
}

// Sold-out moments as red vertical lines across a product's plot.
const soldOutMarks = (row) => ({
  draw: [
    (u) => {
      const { ctx, bbox } = u;
      ctx.save();
      ctx.strokeStyle = '#dc2626';
      ctx.lineWidth = 2;
      for (const t of row.soldOutAt) {
        const x = u.valToPos(t, 'x', true);
        if (x < bbox.left || x > bbox.left + bbox.width) continue;
        ctx.beginPath();
        ctx.moveTo(x, bbox.top);
        ctx.lineTo(x, bbox.top + bbox.height);
        ctx.stroke();
      }
      ctx.restore();
    },
  ],
});

/** Tick steps of the time axis, in seconds. */
const TIME_TICKS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600];

/** A tick's label: the local time of day, to the second. */
function clockTime(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

/** Draws `data` into `holder[key]`'s plot, making it (again) when its series changed. */
function plotInto(holder, key, element, series, data, row) {
  const shape = series.map((s) => s.label).join(',');
  let plot = holder[key];
  if (plot && holder[`${key}Shape`] !== shape) {
    plot.destroy();
    plot = undefined;
  }
  if (!plot) {
    const width = Math.max(240, element.clientWidth || 320);
    plot = new uPlot(
      {
        width,
        height: PLOT_HEIGHT,
        legend: { show: true, live: false },
        cursor: { show: false },
        scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1)] } },
        // Whole seconds on the time axis, as a wall clock (uPlot's own ticks went to half seconds: ":53.500").
        axes: [
          { size: 24, space: 70, incrs: TIME_TICKS, values: (_u, ticks) => ticks.map(clockTime) },
          { size: 48, space: 20 },
        ],
        series: [{}, ...series.map((s) => ({ ...s, width: 1.5, spanGaps: false }))],
        hooks: row ? soldOutMarks(row) : {},
      },
      data,
      element,
    );
    holder[key] = plot;
    holder[`${key}Shape`] = shape;
  } else {
    plot.setData(data);
  }
  if (row) row.plot = plot;
}

window.addEventListener('resize', () => {
  const plots = [...Object.values(servicePlots), ...[...rows.values()].map((row) => row.plot)];
  for (const plot of plots) {
    if (!plot || typeof plot.setSize !== 'function') continue;
    const width = Math.max(240, plot.root.parentElement.clientWidth || 320);
    plot.setSize({ width, height: PLOT_HEIGHT });
  }
});

poll();
