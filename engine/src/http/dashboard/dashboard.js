'use strict';
// servegraph's dashboard. Once a second it polls /dashboard/data (the graph's shape and each
// step's timer: counts per latency bucket), each router's /v2/models/{router}/experiment and
// /v2/monitor, keeps the last 5 minutes of samples, and draws everything as SVG by hand.

const POLL_MS = 1000; // one sample a second
const KEEP = 300; // samples kept: 5 minutes
const SPAN = 5; // samples a rate or a quantile spans: 5 s

const query = new URLSearchParams(location.search);
if (query.has('token')) sessionStorage.setItem('servegraph-token', query.get('token'));
const TOKEN = sessionStorage.getItem('servegraph-token');
const HEADERS = TOKEN ? { Authorization: 'Bearer ' + TOKEN } : {};

// ---- DOM helpers: text always goes in as text, never as markup.
const SVG = 'http://www.w3.org/2000/svg';
function make(doc, tag, attrs, parent, text) {
  const e = doc ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
const svg = (tag, attrs, parent, text) => make(true, tag, attrs, parent, text);
const html = (tag, attrs, parent, text) => make(false, tag, attrs, parent, text);
const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  const r = await fetch(path, { headers: HEADERS, cache: 'no-store' });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  return { status: r.status, body };
}

// ---- Numbers in words.
function fmtRate(r) {
  if (r == null) return '–';
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}
function fmtDur(s) {
  if (s == null) return '–';
  if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
  if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + ' ms';
  return s.toFixed(2) + ' s';
}
function fmt(v) {
  if (v == null) return '–';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v !== 'number') return String(v);
  return Number.isInteger(v) || Math.abs(v) >= 1000 ? String(v) : v.toPrecision(3);
}
const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

// ---- The samples, and rates and quantiles between two of them.
const history = []; // {t: seconds, timers: {id: snapshot}, requests: {source: snapshot}}
let bounds = []; // the timers' finite buckets' upper bounds, seconds

function ingest(data) {
  bounds = data.bounds_s;
  const requests = {};
  for (const r of data.requests) requests[r.source] = r;
  history.push({ t: data.time_ms / 1000, timers: data.timers, requests });
  if (history.length > KEEP) history.shift();
}

// The two samples a value at sample i spans, when both have the timer `get` picks.
function span(i, get) {
  const j = Math.max(0, i - SPAN);
  if (j === i) return null;
  const a = get(history[j]), b = get(history[i]);
  const dt = history[i].t - history[j].t;
  return a && b && dt > 0 && b.count >= a.count ? { a, b, dt } : null;
}
function rateAt(i, get) {
  const s = span(i, get);
  return s ? (s.b.count - s.a.count) / s.dt : null;
}
// The q-quantile of the durations recorded between the two samples, interpolated inside its
// bucket as Prometheus's histogram_quantile does (the +Inf bucket answers its lower bound).
function quantileAt(i, get, q) {
  const s = span(i, get);
  if (!s) return null;
  const d = s.b.buckets.map((n, k) => n - (s.a.buckets[k] || 0));
  const total = d.reduce((x, y) => x + y, 0);
  if (total <= 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let k = 0; k < d.length; k++) {
    if (d[k] > 0 && seen + d[k] >= rank) {
      const lo = k === 0 ? 0 : bounds[k - 1];
      if (k >= bounds.length) return lo;
      return lo + ((bounds[k] - lo) * (rank - seen)) / d[k];
    }
    seen += d[k];
  }
  return bounds[bounds.length - 1];
}
const series = (f) => history.map((h, i) => [h.t, f(i)]);

// ---- Charts.
// A line chart of the samples kept (up to KEEP seconds): series [{points: [[t, v]], cls}],
// y from 0.
function lineChart(parent, lines, { w = 240, h = 54, fmtY = fmt } = {}) {
  const s = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'chart' }, parent);
  const now = history.length ? history[history.length - 1].t : 0;
  const from = history.length ? history[0].t : 0, spanS = Math.max(1, now - from);
  const max = Math.max(0, ...lines.flatMap((l) => l.points.map((p) => p[1] ?? 0)));
  const top = max > 0 ? max * 1.1 : 1;
  const x = (t) => 2 + ((t - from) / spanS) * (w - 4);
  const y = (v) => h - 2 - (v / top) * (h - 14);
  svg('line', { x1: 0, y1: h - 2, x2: w, y2: h - 2, class: 'axis' }, s);
  svg('text', { x: 2, y: 9, class: 'tick' }, s, 'max ' + fmtY(max));
  svg('text', { x: w - 2, y: 9, class: 'tick', 'text-anchor': 'end' }, s, `last ${Math.round(spanS)} s`);
  lines.forEach((l, n) => {
    let d = '', pen = 'M';
    for (const [t, v] of l.points) {
      if (v == null) { pen = 'M'; continue; }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = 'L';
    }
    if (d) svg('path', { d, class: 'line ' + (l.cls || 's' + n) }, s);
  });
  return s;
}

// Rows of a value with an interval ({label, v, lo, hi}), on one scale; a dashed line at 0.
function intervalChart(parent, rows, { w = 420, zero = false, fmtX = fmt } = {}) {
  const rowH = 20, left = 110, h = rows.length * rowH + 16;
  const s = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'chart' }, parent);
  const vals = rows.flatMap((r) => [r.v, r.lo, r.hi]).filter((v) => v != null);
  if (zero) vals.push(0);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const x = (v) => left + ((v - lo) / (hi - lo)) * (w - left - 10);
  if (zero) svg('line', { x1: x(0), y1: 0, x2: x(0), y2: h - 14, class: 'zero' }, s);
  rows.forEach((r, i) => {
    const cy = i * rowH + rowH / 2;
    svg('text', { x: 2, y: cy + 4 }, s, clip(r.label, 16));
    if (r.lo != null && r.hi != null) {
      svg('line', { x1: x(r.lo), y1: cy, x2: x(r.hi), y2: cy, class: 'whisker' }, s);
      for (const e of [r.lo, r.hi]) svg('line', { x1: x(e), y1: cy - 4, x2: x(e), y2: cy + 4, class: 'whisker' }, s);
    }
    if (r.v != null) svg('circle', { cx: x(r.v), cy, r: 4, class: 'bar' }, s);
  });
  svg('text', { x: left, y: h - 2, class: 'tick' }, s, fmtX(lo));
  svg('text', { x: w - 10, y: h - 2, class: 'tick', 'text-anchor': 'end' }, s, fmtX(hi));
  return s;
}

// ---- The graph, laid out in columns: a step's column is one past its last predecessor's;
// routes and members hang under their parent, indented.
const NODE_W = 210, NODE_H = 50, GAP_X = 44, GAP_Y = 10, INDENT = 22, END_W = 80, PAD = 10;
const live = {}; // step id -> its live text
let drawnShape = '';

function kindClass(kind) {
  if (/model|python/.test(kind)) return 'model';
  return ['router', 'ensemble', 'transform'].includes(kind) ? kind : 'other';
}
function blockSize(n) {
  let h = NODE_H, w = NODE_W;
  for (const c of n.children) {
    const b = blockSize(c);
    h += GAP_Y + b.h;
    w = Math.max(w, INDENT + b.w);
  }
  return { w, h };
}
function eachNode(nodes, f, depth = 0) {
  for (const n of nodes) { f(n, depth); eachNode(n.children, f, depth + 1); }
}

function drawGraph(shape) {
  const key = JSON.stringify(shape);
  if (key === drawnShape) return;
  drawnShape = key;
  $('graph-name').textContent = shape.name;
  const col = {};
  for (const s of shape.steps) col[s.id] = 1 + Math.max(0, ...s.after.map((a) => col[a]));
  for (const s of shape.steps) if (s.on_error) col[s.on_error] = Math.max(col[s.on_error] || 0, col[s.id] + 1);
  const last = Math.max(...Object.values(col)) + 1;
  const columns = Array.from({ length: last + 1 }, () => []);
  for (const n of [...shape.steps, ...shape.handlers]) columns[col[n.id] ?? last - 1].push(n);
  const pos = {};
  let x = PAD + END_W + GAP_X, height = 0;
  const place = (n, px, py) => {
    pos[n.id] = { x: px, y: py, n };
    let cy = py + NODE_H + GAP_Y;
    for (const c of n.children) { place(c, px + INDENT, cy); cy += blockSize(c).h + GAP_Y; }
  };
  for (let c = 1; c < last; c++) {
    let y = PAD, w = 0;
    for (const n of columns[c]) {
      const b = blockSize(n);
      place(n, x, y);
      y += b.h + GAP_Y * 2;
      w = Math.max(w, b.w);
    }
    height = Math.max(height, y);
    x += w + GAP_X;
  }
  const width = x + END_W + PAD, mid = PAD + NODE_H / 2;
  const root = $('graph');
  root.replaceChildren();
  const s = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, id: 'graph-svg' }, root);
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto' }, svg('defs', {}, s));
  svg('path', { d: 'M0,0 L8,4 L0,8 z', fill: '#98a2b3' }, marker);
  const edge = (x1, y1, x2, y2, cls) => {
    const dx = Math.max(20, (x2 - x1) / 2);
    svg('path', { d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`, class: 'edge ' + (cls || ''), 'marker-end': 'url(#arrow)' }, s);
  };
  const right = (id) => [pos[id].x + NODE_W, pos[id].y + NODE_H / 2];
  const left = (id) => [pos[id].x, pos[id].y + NODE_H / 2];
  for (const st of shape.steps) {
    if (st.after.length === 0) edge(PAD + END_W, mid, ...left(st.id));
    for (const a of st.after) edge(...right(a), ...left(st.id));
    if (st.on_error) edge(...right(st.id), ...left(st.on_error), 'error');
  }
  edge(...right(shape.responder), width - PAD - END_W, mid);
  for (const [label, ex] of [['request', PAD], ['response', width - PAD - END_W]]) {
    svg('rect', { x: ex, y: mid - 14, width: END_W, height: 28, rx: 14, class: 'box end' }, s);
    svg('text', { x: ex + END_W / 2, y: mid + 4, 'text-anchor': 'middle' }, s, label);
  }
  for (const k of Object.keys(live)) delete live[k];
  for (const { x: nx, y: ny, n } of Object.values(pos)) {
    const g = svg('g', { 'data-node': n.id }, s);
    for (const c of n.children) {
      const p = pos[c.id];
      svg('path', { d: `M${nx + 10},${ny + NODE_H} V${p.y + NODE_H / 2} H${p.x}`, class: 'edge' }, g);
    }
    const caption = n.summary ? `${n.kind}: ${n.summary}` : n.kind;
    svg('title', {}, g, `${n.name}\n${caption}`);
    svg('rect', { x: nx, y: ny, width: NODE_W, height: NODE_H, rx: 5, class: 'box ' + kindClass(n.kind) }, g);
    svg('text', { x: nx + 8, y: ny + 15, class: 'name' }, g, clip(n.name, 28));
    svg('text', { x: nx + 8, y: ny + 29, class: 'kind' }, g, clip(caption, 34));
    live[n.id] = svg('text', { x: nx + 8, y: ny + 43, class: 'live' }, g, '–');
  }
}

function updateLive() {
  const i = history.length - 1;
  for (const [id, text] of Object.entries(live)) {
    const get = (h) => h.timers[id];
    if (!get(history[i])) { text.textContent = 'not timed'; continue; }
    const r = rateAt(i, get), p99 = quantileAt(i, get, 0.99);
    text.textContent = `${fmtRate(r)}/s · p99 ${fmtDur(p99)}`;
    text.parentNode.setAttribute('data-rate', r ?? 0);
  }
}

// ---- Requests and latency per step, as a table of small charts.
function trafficRow(body, label, depth, get, attrs, extra) {
  const i = history.length - 1, snap = get(history[i]);
  const tr = html('tr', attrs, body);
  html('td', { style: `padding-left:${8 + depth * 16}px` }, tr, label);
  html('td', { class: 'num total' }, tr, snap ? String(snap.count) + (extra || '') : '–');
  const rate = html('td', { class: 'num' }, tr);
  lineChart(rate, [{ points: series((k) => rateAt(k, get)) }], { fmtY: fmtRate });
  html('span', { class: 'rate' }, rate, ` ${fmtRate(rateAt(i, get))}/s`);
  const lat = html('td', { class: 'num' }, tr);
  lineChart(lat, [
    { points: series((k) => quantileAt(k, get, 0.5)) },
    { points: series((k) => quantileAt(k, get, 0.99)) },
  ], { fmtY: fmtDur });
  html('span', {}, lat, ` ${fmtDur(quantileAt(i, get, 0.5))}, ${fmtDur(quantileAt(i, get, 0.99))}`);
}

function drawTraffic(data) {
  const body = $('traffic-table').tBodies[0];
  body.replaceChildren();
  for (const r of data.requests) {
    const failed = Object.entries(r.codes).filter(([c]) => c >= 400).reduce((a, [, n]) => a + n, 0);
    trafficRow(body, `requests (${r.source})`, 0, (h) => h.requests[r.source], { 'data-source': r.source },
      failed ? ` (${failed} failed)` : '');
  }
  eachNode([...data.graph.steps, ...data.graph.handlers], (n, depth) => {
    const t = data.timers[n.id];
    const label = t && t.of !== 'step' ? `${n.name} (${t.of === 'model' ? 'model runs' : 'route'})` : n.name;
    trafficRow(body, label, depth, (h) => h.timers[n.id], { 'data-step': n.id });
  });
}

// ---- Experiments: per router, its routes' traffic and rewards; its readout when it has one.
let drawnExperiments = '';

async function experiments(routers) {
  const answers = await Promise.all(routers.map((r) => getJSON(`/v2/models/${encodeURIComponent(r)}/experiment`)));
  const key = JSON.stringify(answers);
  if (key === drawnExperiments) return;
  drawnExperiments = key;
  const root = $('experiment-panels');
  root.replaceChildren();
  if (!routers.length) html('p', { class: 'empty' }, root, 'No router learns from feedback in this graph.');
  routers.forEach((router, k) => {
    const { status, body } = answers[k];
    const panel = html('div', { class: 'panel', 'data-router': router }, root);
    if (status !== 200) {
      html('p', { class: 'alert' }, panel, `${router}: HTTP ${status} ${body && body.error ? body.error : ''}`);
      return;
    }
    html('h3', {}, panel, `${router} · ${body.policy}`);
    const table = html('table', {}, panel);
    const head = html('tr', {}, html('thead', {}, table));
    for (const c of ['route', 'requests', 'share', 'rewards', 'mean reward', 'estimate']) html('th', {}, head, c);
    const tbody = html('tbody', {}, table);
    const total = body.routes.reduce((a, r) => a + r.pulls, 0);
    for (const r of body.routes) {
      const tr = html('tr', { 'data-route': r.route, 'data-pulls': r.pulls, 'data-rewards': r.rewards }, tbody);
      html('td', {}, tr, r.route);
      html('td', { class: 'num pulls' }, tr, String(r.pulls));
      const share = total ? r.pulls / total : 0;
      const bar = svg('svg', { width: 160, height: 12 }, html('td', {}, tr));
      svg('rect', { x: 0, y: 1, width: 160, height: 10, fill: '#eef0f3' }, bar);
      svg('rect', { x: 0, y: 1, width: (160 * share).toFixed(1), height: 10, class: 'bar' }, bar);
      html('td', { class: 'num rewards' }, tr, String(r.rewards));
      html('td', { class: 'num' }, tr, r.rewards ? fmt(r.reward_mean) : '–');
      html('td', { class: 'num' }, tr, fmt(r.estimate));
    }
    if (body.shadow) {
      const sh = body.shadow;
      html('p', { class: 'note' }, panel, `shadow ${sh.route}: ${sh.sent} sent, ${sh.skipped} skipped, ${sh.failed} failed`);
    }
    if (body.readout) readout(panel, body.readout);
  });
}

function readout(panel, ro) {
  const box = html('div', { class: 'readout', 'data-verdict-ready': ro.verdict_ready }, panel);
  const method = ro.method && typeof ro.method === 'object'
    ? Object.entries(ro.method).map(([k, v]) => `${k} ${fmt(v)}`).join(', ') : fmt(ro.method);
  const p = html('p', {}, box);
  html('span', { class: 'badge ' + (ro.verdict_ready ? 'st0' : 'st-1') }, p, ro.verdict_ready ? 'verdict ready' : 'not ready yet');
  html('span', {}, p, ` control ${ro.control} · at least ${fmt(ro.min_sample)} per route · ${method}`);
  if (ro.srm) {
    const srm = html('p', { class: ro.srm.alert ? 'alert srm' : 'srm' }, box);
    srm.textContent = `${ro.srm.alert ? 'Sample ratio mismatch! ' : 'Sample ratio as planned: '}p = ${fmt(ro.srm.p)}` +
      ` (expected ${JSON.stringify(ro.srm.expected)}, observed ${JSON.stringify(ro.srm.observed)})`;
  }
  if (ro.warnings && ro.warnings.length) {
    const ul = html('ul', { class: 'warnings' }, box);
    for (const w of ro.warnings) html('li', { class: 'alert' }, ul, typeof w === 'string' ? w : JSON.stringify(w));
  }
  const routes = ro.routes || [];
  html('h3', {}, box, 'mean reward, 95% interval');
  intervalChart(box, routes.map((r) => ({ label: r.route, v: r.mean, lo: r.ci95 && r.ci95[0], hi: r.ci95 && r.ci95[1] })));
  const others = routes.filter((r) => r.route !== ro.control);
  if (others.length) {
    html('h3', {}, box, `lift over ${ro.control}, 95% confidence sequence (always valid)`);
    intervalChart(box, others.map((r) => ({ label: r.route, v: r.lift_abs, lo: r.cs95 && r.cs95[0], hi: r.cs95 && r.cs95[1] })), { zero: true });
  }
  const cols = ['route', 'n', 'rewarded', 'mean', 'lift_abs', 'lift_rel', 'p_always_valid', 'p_adjusted', 'chance_to_beat_control', 'expected_loss'];
  const table = html('table', { class: 'readout-table' }, box);
  const head = html('tr', {}, html('thead', {}, table));
  for (const c of cols) html('th', {}, head, c.replaceAll('_', ' '));
  const tbody = html('tbody', {}, table);
  for (const r of routes) {
    const tr = html('tr', { 'data-route': r.route }, tbody);
    for (const c of cols) html('td', { class: 'num', 'data-col': c }, tr, fmt(r[c]));
  }
}

// ---- Drift: per monitor and feature, the reference histogram against the last window's,
// and a statistic over the windows, coloured by status.
const STATUS = { 0: 'no drift', 1: 'potential drift', 2: 'drift detected', '-1': 'not computed' };
const STATS = ['psi', 'general_drift', 'hellinger', 'tvd', 'js', 'ks', 'ks_p', 'wasserstein', 'chi2_p'];
let drawnDrift = '';
const chosenStat = {}; // monitor's graph -> statistic shown

async function drift() {
  const { status, body } = await getJSON('/v2/monitor');
  const key = status + JSON.stringify(body) + JSON.stringify(chosenStat);
  if (key === drawnDrift) return;
  drawnDrift = key;
  const root = $('drift-panels');
  root.replaceChildren();
  const monitors = status === 200 && body && Array.isArray(body.monitors) ? body.monitors : null;
  if (status === 404 || (monitors && !monitors.length)) {
    html('p', { class: 'empty', id: 'no-monitor' }, root, 'No monitor configured: nothing to compare with a reference yet.');
    return;
  }
  if (!monitors) {
    html('p', { class: 'alert' }, root, `monitor: HTTP ${status} ${body && body.error ? body.error : ''}`);
    return;
  }
  for (const m of monitors) monitor(root, m);
}

function monitor(root, m) {
  const panel = html('div', { class: 'panel monitor', 'data-graph': m.graph }, root);
  const ref = m.reference || {};
  html('h3', {}, panel, `${m.graph} · reference ${ref.id} v${ref.version} (${fmt(ref.events)} events)`);
  const cur = m.current || {}, win = m.window || {}, ds = m.dataset || {};
  html('p', { class: 'note' }, panel, `window ${fmt(cur.index)}: ${fmt(cur.events)} of ${fmt(win.events)} events` +
    ` (at most ${fmt(win.max_age_s)} s, at least ${fmt(win.min_events)}), since ${cur.started || '–'}`);
  const features = m.features || [];
  const drifted = features.filter((f) => f.last && f.last.status === 2).length;
  html('p', { class: ds.drifted ? 'alert dataset' : 'dataset', 'data-drifted': !!ds.drifted }, panel,
    `dataset: ${drifted} of ${features.length} features drifted (share ${fmt(ds.share)}; ` +
    `the dataset drifts at ${fmt(ds.drift_share)}): ${ds.drifted ? 'DRIFT' : 'no drift'}`);
  const available = STATS.filter((s) => features.some((f) => f.history && f.history.some((h) => h.stats && h.stats[s] != null)));
  const stat = available.includes(chosenStat[m.graph]) ? chosenStat[m.graph] : available[0];
  if (available.length) {
    const label = html('label', { class: 'legend' }, panel, 'statistic over windows ');
    const select = html('select', {}, label);
    for (const s of available) html('option', { value: s }, select, s).selected = s === stat;
    select.addEventListener('change', () => { chosenStat[m.graph] = select.value; drawnDrift = ''; drift(); });
  }
  const legend = html('p', { class: 'legend' }, panel);
  for (const [cls, what] of [['ref', 'reference'], ['cur', 'last window']]) {
    html('i', { style: `background:${cls === 'ref' ? '#98a2b3' : 'var(--a)'}` }, legend);
    legend.append(what);
  }
  for (const st of [0, 1, 2, -1]) { html('i', { class: 'st' + st, style: 'background:currentColor' }, legend); legend.append(STATUS[st]); }
  const grid = html('div', { class: 'features' }, panel);
  for (const f of features) feature(grid, f, stat);
  if (m.performance) {
    const perf = html('p', { class: 'note performance' }, panel, `performance (${m.performance.task}): `);
    for (const part of ['realised', 'estimated']) {
      const v = m.performance[part];
      perf.append(`${part} ` + (v ? Object.entries(v).map(([k, x]) => `${k} ${fmt(x)}`).join(', ') : '–') + '. ');
    }
  }
}

function feature(grid, f, stat) {
  const status = f.last ? f.last.status : -1;
  const card = html('div', { class: 'feature', 'data-feature': f.name, 'data-status': status }, grid);
  const h = html('h3', {}, card, `${f.name} `);
  html('span', { class: 'badge st' + status }, h, STATUS[status] ?? String(status));
  html('div', { class: 'legend' }, card, `${f.kind} · ${f.type}` +
    (f.last && stat && f.last.stats ? ` · ${stat} ${fmt(f.last.stats[stat])}` : ''));
  const ref = f.reference || {}, edges = ref.edges || [];
  const fr = ref.fractions || [], last = f.last ? f.last.fractions : [];
  const label = (k) => ref.categories
    ? (ref.categories[k] ?? 'other')
    : k === 0 ? `< ${fmt(edges[0])}` : k >= edges.length ? `≥ ${fmt(edges[edges.length - 1])}` : `${fmt(edges[k - 1])}–${fmt(edges[k])}`;
  // Reference against last window, bin by bin.
  const w = 320, hgt = 90, n = Math.max(fr.length, last.length, 1), bw = (w - 4) / n;
  const top = Math.max(1e-9, ...fr, ...last);
  const s = svg('svg', { width: w, height: hgt + 14, viewBox: `0 0 ${w} ${hgt + 14}`, class: 'histogram' }, card);
  for (let k = 0; k < n; k++) {
    for (const [vals, cls, dx] of [[fr, 'ref', 0], [last, 'cur', bw * 0.45]]) {
      const v = vals[k];
      if (v == null) continue;
      const bh = (v / top) * (hgt - 6);
      svg('title', {}, svg('rect', { x: 2 + k * bw + dx + bw * 0.05, y: hgt - bh, width: bw * 0.4, height: bh, class: cls }, s),
        `${label(k)}: ${cls === 'ref' ? 'reference' : 'last window'} ${fmt(v)}`);
    }
  }
  svg('line', { x1: 0, y1: hgt, x2: w, y2: hgt, class: 'axis' }, s);
  const every = Math.ceil(n / 6);
  for (let k = 0; k < n; k += every) svg('text', { x: 2 + k * bw, y: hgt + 12, class: 'tick' }, s, clip(label(k), 12));
  // The statistic over the windows, each point in its status's colour.
  const hist = (f.history || []).filter((p) => p.stats && p.stats[stat] != null);
  if (!stat || !hist.length) return;
  const cw = 320, ch = 64;
  const c = svg('svg', { width: cw, height: ch, viewBox: `0 0 ${cw} ${ch}`, class: 'drift-history' }, card);
  const v = hist.map((p) => p.stats[stat]);
  const max = Math.max(...v) * 1.1 || 1, w0 = hist[0].window, w1 = hist[hist.length - 1].window;
  const x = (wi) => 6 + ((wi - w0) / Math.max(1, w1 - w0)) * (cw - 12);
  const y = (val) => ch - 12 - (val / max) * (ch - 22);
  svg('line', { x1: 0, y1: ch - 12, x2: cw, y2: ch - 12, class: 'axis' }, c);
  svg('text', { x: 2, y: 9, class: 'tick' }, c, `${stat} max ${fmt(Math.max(...v))}`);
  svg('text', { x: 2, y: ch - 1, class: 'tick' }, c, `window ${w0}`);
  svg('text', { x: cw - 2, y: ch - 1, class: 'tick', 'text-anchor': 'end' }, c, `window ${w1}`);
  svg('path', { d: hist.map((p, k) => `${k ? 'L' : 'M'}${x(p.window).toFixed(1)},${y(v[k]).toFixed(1)}`).join(''), class: 'line s0' }, c);
  hist.forEach((p, k) => svg('title', {}, svg('circle', { cx: x(p.window), cy: y(v[k]), r: 3.5, class: 'st' + p.status, 'data-window': p.window }, c),
    `window ${p.window} (${p.end}): ${stat} ${fmt(v[k])}, ${STATUS[p.status] ?? p.status}`));
}

// ---- The loop.
function setStatus(text, error) {
  const s = $('status');
  s.textContent = text;
  s.className = error ? 'error' : '';
}

async function poll() {
  try {
    const { status, body } = await getJSON('/dashboard/data');
    if (status !== 200) throw new Error(`dashboard data: HTTP ${status}${body && body.error ? ': ' + body.error : ''}`);
    ingest(body);
    drawGraph(body.graph);
    updateLive();
    drawTraffic(body);
    await Promise.all([experiments(body.routers), drift()]);
    setStatus(`updated ${new Date(body.time_ms).toLocaleTimeString()} · ${history.length} samples`);
    document.body.dataset.samples = history.length;
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
  setTimeout(poll, POLL_MS);
}
poll();
