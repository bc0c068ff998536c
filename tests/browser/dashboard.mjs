// The dashboard in a real browser: Debian's Chromium driven by playwright-core (installed by
// scripts/setup.sh --test). tests/dashboard.rs starts the server and runs one case:
//
//   node tests/browser/dashboard.mjs CASE BASE_URL [ADMIN_TOKEN]
//
// and expects `ok CASE` on stdout. A case is a function in CASES: adding one is adding a
// function. DASHBOARD_SCREENSHOT=FILE saves a picture of the page at the end of a case.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [caseName, base, token] = process.argv.slice(2);
const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
const nodeDir = process.env.SERVEGRAPH_NODE_DIR || path.join(cache, 'servegraph/node');
const { chromium } = createRequire(path.join(nodeDir, 'package.json'))('playwright-core');

// What the machine's notes ask of Chromium here: no sandbox (root), no GPU, nothing fetched
// in the background (the network is closed), and a new empty profile (launchPersistentContext's
// folder, made here and removed at the end).
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const TIMEOUT_MS = 20000; // the longest one condition is waited for

const ROUTER = 'pick';
const INFER = `${base}/v2/models/iris-dash/infer`;
const ROW = { inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [5.1, 3.5, 1.4, 0.2] }] };

function fail(message) {
  throw new Error(message);
}

// Waits until `fn(arg)`, run in the page, is truthy; fails saying `what` and what the page
// showed.
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT_MS, polling: 100 });
  } catch (e) {
    const status = await page.locator('#status').textContent().catch(() => '?');
    fail(`${what}: not seen within ${TIMEOUT_MS} ms (status: ${status}): ${e.message.split('\n')[0]}`);
  }
}

// `n` requests through the graph, each answered by feedback (iris-rf rewarded 3 times in 4,
// iris-lr every other time); the routes taken.
let sent = 0;
async function traffic(n) {
  const routes = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(INFER, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ROW) });
    if (r.status !== 200) fail(`infer: HTTP ${r.status} ${await r.text()}`);
    const answer = await r.json();
    routes.push(answer.parameters.route);
    sent++;
    const f = await fetch(`${base}/v2/models/${ROUTER}/feedback`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: answer.id, reward: Number(answer.parameters.route === 'iris-rf' ? sent % 4 !== 0 : sent % 2 === 0) }),
    });
    if (f.status !== 200) fail(`feedback: HTTP ${f.status} ${await f.text()}`);
  }
  return routes;
}

// Opens the page (with the admin token when there is one), and waits for the graph.
async function open(page) {
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  const response = await page.goto(`${base}/dashboard${query}`);
  if (response.status() !== 200) fail(`GET /dashboard${query}: HTTP ${response.status()}`);
  await until(page, 'the graph drawn', () => document.querySelector('#graph-svg g[data-node]'));
}

const CASES = {
  // The page draws the graph, counts and rates follow requests as they arrive, the
  // experiment's counts come from the router, and "no monitor" is said when there is none.
  async live(page) {
    await open(page);
    for (const id of ['scale', 'pick', 'pick/iris-lr', 'pick/iris-rf', 'names']) {
      if (!(await page.locator(`#graph-svg g[data-node="${id}"]`).count())) fail(`no node ${id} in the graph`);
    }
    if ((await page.locator('#graph-svg path.edge').count()) < 6) fail('fewer edges than request → scale → pick → names → response and two routes');
    await until(page, 'no monitor configured', () => document.querySelector('#no-monitor'));
    await until(page, 'two samples', () => Number(document.body.dataset.samples) >= 2);
    const idle = await page.locator('g[data-node="pick"]').getAttribute('data-rate');
    if (Number(idle) !== 0) fail(`a rate of ${idle}/s before any request`);

    // Totals before (a fresh server: 0), then after, per step exactly; rates above zero on
    // the graph and in the table.
    const totals = () => page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#traffic-table tr[data-step], #traffic-table tr[data-source]')]
      .map((tr) => [tr.dataset.step || tr.dataset.source, Number(tr.querySelector('td.total').textContent)])));
    const before = await totals();
    const n = 30;
    const routes = await traffic(n);
    const lr = routes.filter((r) => r === 'iris-lr').length;
    const want = { ...before };
    for (const id of ['scale', 'pick', 'names', 'http']) want[id] += n;
    want['pick/iris-lr'] += lr;
    want['pick/iris-rf'] += n - lr;
    await until(page, `the requests counted at each step: ${JSON.stringify(want)}`, (want) =>
      Object.entries(want).every(([id, n]) =>
        document.querySelector(`#traffic-table tr[data-step="${id}"] td.total, #traffic-table tr[data-source="${id}"] td.total`)?.textContent === String(n)), want);
    await until(page, 'a live rate on the router', () => Number(document.querySelector('g[data-node="pick"]').dataset.rate) > 0);
    const live = await page.locator('g[data-node="pick"] text.live').textContent();
    if (!/^[0-9.]+\/s · p99 [0-9.]+ (µs|ms|s)$/.test(live)) fail(`the router's live text: ${live}`);
    // The experiment: pulls per route as the router counted them, every reward taken.
    const real = await (await fetch(`${base}/v2/models/${ROUTER}/experiment`)).json();
    const pulls = Object.fromEntries(real.routes.map((r) => [r.route, [r.pulls, r.rewards]]));
    if (pulls['iris-lr'][0] < lr || pulls['iris-rf'][0] < n - lr) fail(`the router counted ${JSON.stringify(pulls)}`);
    await until(page, `the experiment counted: ${JSON.stringify(pulls)}`, (pulls) =>
      Object.entries(pulls).every(([r, [p, w]]) => {
        const row = document.querySelector(`[data-router="pick"] tr[data-route="${r}"]`);
        return row?.dataset.pulls === String(p) && row?.dataset.rewards === String(w);
      }), pulls);
    // The readout the router serves (a bandit's: estimates from its logged probabilities).
    if (!real.readout) fail('the router serves no readout');
    await until(page, 'the served readout drawn', (n) =>
      document.querySelectorAll('[data-router="pick"] .readout tr[data-route]').length === n, real.readout.routes.length);
    // And once more: the page keeps following.
    await traffic(5);
    await until(page, 'more requests counted', (n) =>
      document.querySelector('tr[data-step="pick"] td.total')?.textContent === String(n), want.pick + 5);
  },

  // The real drift monitor (serve's in-process one, reading the graph's tracking file): the
  // reference is frozen from the first 100 rows, a window of the same rows shows no drift,
  // then rows whose sepal length is far beyond the reference's are injected, and the page
  // shows that feature detected (and the other one not) with the windows' history.
  async drift(page) {
    await open(page);
    const rows = (n, length) => Array.from({ length: n }, (_, i) => [length(i), 2.8 + (i % 5) * 0.1, 1.4, 0.2]);
    const send = async (batch) => {
      const body = { inputs: [{ name: 'input', shape: [batch.length, 4], datatype: 'FP32', data: batch.flat() }] };
      const r = await fetch(INFER, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (r.status !== 200) fail(`infer: HTTP ${r.status} ${await r.text()}`);
    };
    const usual = (i) => 4.5 + (i % 10) * 0.1; // 4.5 … 5.4, evenly
    for (let k = 0; k < 10; k++) await send(rows(10, usual)); // the reference: 100 rows
    for (let k = 0; k < 5; k++) await send(rows(10, usual)); // a window like it
    await until(page, 'a window without drift', () =>
      document.querySelector('[data-feature="sepal_length"]')?.dataset.status === '0');
    for (let k = 0; k < 5; k++) await send(rows(10, (i) => 7.5 + (i % 5) * 0.1)); // drifted
    await until(page, 'the injected drift detected', () =>
      document.querySelector('[data-feature="sepal_length"]')?.dataset.status === '2');
    const width = await page.locator('[data-feature="sepal_width"]').getAttribute('data-status');
    if (width !== '0') fail(`sepal_width's status: ${width} (it did not drift)`);
    const history = page.locator('[data-feature="sepal_length"] svg.drift-history circle');
    if ((await history.count()) < 2) fail('the history of both windows');
    if ((await page.locator('[data-feature="sepal_length"] svg.drift-history circle.st2').count()) < 1) fail('a detected window in the history');
    if ((await page.locator('#no-monitor').count())) fail('"no monitor" with a monitor running');
  },

  // The drift and readout sections against their JSON contracts (`GET /v2/monitor`, the
  // experiment's `readout`), answered here for the page: an empty monitor list first, then a
  // monitor whose feature `petal_length` drifted.
  async contract(page) {
    let monitors = [];
    await page.route('**/v2/monitor', (route) => route.fulfill({ json: { monitors } }));
    await page.route(`**/v2/models/${ROUTER}/experiment`, async (route) => {
      const real = await (await route.fetch()).json();
      route.fulfill({ json: { ...real, readout: readout(real) } });
    });
    await open(page);
    await until(page, 'no monitor configured (empty list)', () => document.querySelector('#no-monitor'));
    await traffic(40);
    monitors = [monitor()];
    await until(page, 'the drifted feature', () =>
      document.querySelector('[data-feature="petal_length"]')?.dataset.status === '2');
    const feature = page.locator('[data-feature="petal_length"]');
    if ((await feature.locator('svg.histogram rect.ref').count()) !== 4) fail('four reference bins');
    if ((await feature.locator('svg.histogram rect.cur').count()) !== 4) fail('four last-window bins');
    if ((await feature.locator('svg.drift-history circle').count()) !== 6) fail('six windows in the history');
    if ((await feature.locator('svg.drift-history circle.st2').count()) !== 2) fail('two windows with drift detected');
    if ((await page.locator('[data-feature="sepal_width"]').getAttribute('data-status')) !== '0') fail('sepal_width without drift');
    if ((await page.locator('[data-feature="species"] svg.histogram rect.ref').count()) !== 3) fail('three categories');
    const dataset = await page.locator('.dataset').textContent();
    if (!dataset.includes('1 of 3 features drifted') || !dataset.includes('no drift')) fail(`dataset line: ${dataset}`);
    // Another statistic chosen: the history follows.
    await page.locator('.monitor select').selectOption('hellinger');
    await until(page, 'the hellinger history', () =>
      document.querySelector('[data-feature="petal_length"] .drift-history text')?.textContent.startsWith('hellinger'));
    // The readout: intervals, lift, SRM alert, warnings, the verdict.
    await until(page, 'the readout', () => document.querySelector('[data-router="pick"] .readout'));
    const ro = page.locator('[data-router="pick"] .readout');
    if ((await ro.getAttribute('data-verdict-ready')) !== 'true') fail('verdict ready');
    if (!(await ro.locator('.srm.alert').count())) fail('the SRM alert');
    if ((await ro.locator('.warnings li').count()) !== 1) fail('one warning');
    if ((await ro.locator('svg line.zero').count()) !== 1) fail('the lift chart with its zero');
    if ((await ro.locator('svg circle').count()) !== 3) fail('two means and one lift');
    const ctb = await ro.locator('tr[data-route="iris-rf"] td[data-col="chance_to_beat_control"]').textContent();
    if (ctb !== '0.970') fail(`chance to beat control: ${ctb}`);
    const control = await ro.locator('tr[data-route="iris-lr"] td[data-col="lift_abs"]').textContent();
    if (control !== '–') fail(`the control's lift: ${control}`);
  },
};

// A readout as the contract shapes it, over the router's real counts.
function readout(real) {
  const [a, b] = real.routes;
  const mean = (r) => (r.rewards ? r.reward_mean : 0);
  const row = (r, control) => ({
    route: r.route, n: r.pulls, rewarded: r.rewards, mean: mean(r), ci95: [Math.max(0, mean(r) - 0.2), Math.min(1, mean(r) + 0.2)],
    lift_abs: control ? null : mean(r) - mean(a), lift_rel: control ? null : 0.1,
    cs95: control ? null : [mean(r) - mean(a) - 0.3, mean(r) - mean(a) + 0.3],
    p_always_valid: control ? null : 0.04, p_adjusted: control ? null : 0.08,
    chance_to_beat_control: control ? null : 0.97, expected_loss: control ? null : 0.002,
  });
  return {
    control: a.route, method: { test: 'msprt', alpha: 0.05 }, min_sample: 20, verdict_ready: true,
    routes: [row(a, true), row(b, false)],
    srm: { p: 0.0004, alert: true, expected: [0.5, 0.5], observed: [a.pulls, b.pulls] },
    warnings: ['the routes\' shares differ from the policy\'s (sample ratio mismatch)'],
  };
}

// A monitor as the contract shapes it: three features, one drifted.
function monitor() {
  const stats = (psi) => ({ psi, hellinger: psi / 2, tvd: psi / 3, general_drift: psi / 2, ks: null, ks_p: null, wasserstein: null, chi2_p: null, js: null });
  const history = (statuses, psi) => statuses.map((status, k) => ({
    window: k + 1, end: `2026-12-07T19:0${k}:00Z`, events: 200, status, stats: stats(psi[k]),
  }));
  return {
    graph: 'iris-dash', reference: { id: 'iris-train', version: 1, events: 10000 },
    window: { events: 200, max_age_s: 600, min_events: 100 },
    current: { index: 7, events: 40, started: '2026-12-07T19:06:00Z' },
    dataset: { share: 1 / 3, drift_share: 0.5, drifted: false },
    features: [
      { name: 'petal_length', kind: 'feature', type: 'numerical',
        reference: { edges: [1.6, 4.35, 5.1], fractions: [0.33, 0.17, 0.25, 0.25] },
        last: { fractions: [0.05, 0.1, 0.3, 0.55], status: 2, stats: stats(0.42) },
        history: history([0, 0, 0, 1, 2, 2], [0.01, 0.02, 0.02, 0.12, 0.3, 0.42]) },
      { name: 'sepal_width', kind: 'feature', type: 'numerical',
        reference: { edges: [2.8, 3.0, 3.3], fractions: [0.25, 0.25, 0.25, 0.25] },
        last: { fractions: [0.24, 0.26, 0.25, 0.25], status: 0, stats: stats(0.01) },
        history: history([0, 0, 0, 0, 0, 0], [0.01, 0.01, 0.02, 0.01, 0.01, 0.01]) },
      { name: 'species', kind: 'output', type: 'categorical',
        reference: { edges: [], categories: ['setosa', 'versicolor', 'virginica'], fractions: [0.33, 0.33, 0.34] },
        last: null, history: [] },
    ],
    performance: { task: 'classification', realised: null, estimated: { accuracy: 0.91 } },
  };
}

// Before a screenshot for the docs: a minute of traffic whose rate rises and falls, so the
// charts have something to show.
async function showcase() {
  const start = Date.now();
  while (Date.now() - start < 60000) {
    const t = (Date.now() - start) / 1000;
    await traffic(1);
    await new Promise((r) => setTimeout(r, 1000 / (12 + 10 * Math.sin(t / 6))));
  }
}

async function main() {
  const run = CASES[caseName];
  if (!run || !base) fail(`usage: dashboard.mjs (${Object.keys(CASES).join('|')}) BASE_URL [TOKEN]`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'servegraph-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.SERVEGRAPH_CHROMIUM || '/usr/bin/chromium',
      headless: true, args: FLAGS, viewport: { width: 1280, height: 1000 }, timeout: TIMEOUT_MS,
    });
    const page = context.pages()[0] || (await context.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
    // The browser logs every HTTP error as a console error: those are checked here instead
    // (a 404 from /v2/monitor is how "no monitor" is said today).
    page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && errors.push(`console: ${m.text()}`));
    page.on('response', (r) => r.status() >= 400 && !(r.status() === 404 && new URL(r.url()).pathname === '/v2/monitor') &&
      errors.push(`HTTP ${r.status()} for ${r.url()}`));
    await run(page);
    if (await page.locator('#status.error').count()) fail(`the page says: ${await page.locator('#status').textContent()}`);
    if (errors.length) fail(errors.join('\n'));
    if (process.env.DASHBOARD_SCREENSHOT) await showcase();
    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
    console.log(`ok ${caseName}`);
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

// However it ends, the browser goes with it: a hard limit closes it and exits.
const limit = setTimeout(() => {
  console.error(`${caseName}: still running after 120 s`);
  process.exit(2);
}, 120000);
main().then(() => clearTimeout(limit), (e) => {
  console.error(`${caseName}: ${e.stack || e}`);
  process.exitCode = 1;
  clearTimeout(limit);
});
