// The ember dashboard: a client of emberd's documented API (docs/api.md),
// nothing more. Every value from the daemon is shown through textContent,
// never parsed as HTML: function output is arbitrary.
'use strict';

const REFRESH_MS = 2000;
const HISTORY = 500; // invocations the percentiles and the chart cover
const SHOWN = 50; // rows of the recent-invocations table
const PALETTE = ['#d9480f', '#1971c2', '#2b8a3e', '#9c36b5', '#e67700', '#0c8599', '#c2255c', '#5c940d'];

// The token arrives in the URL's fragment (never sent to a server) and is
// kept for this tab only.
function takeToken() {
  const m = location.hash.match(/token=([0-9a-fA-F]+)/);
  if (m) {
    sessionStorage.setItem('ember-token', m[1]);
    history.replaceState(null, '', location.pathname);
  }
  return sessionStorage.getItem('ember-token') || '';
}
let token = takeToken();

class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body });
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code || 'http_' + res.status, e.message || res.statusText, data);
  }
  return data;
}

const $ = (sel) => document.querySelector(sel);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fillTable(id, rows, empty) {
  const body = $(id + ' tbody');
  const cols = $(id + ' thead tr').children.length;
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el('tr');
    const td = el('td', empty, 'empty');
    td.colSpan = cols;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = el('tr');
    for (const c of cells) {
      if (c instanceof Node) {
        const td = el('td');
        td.append(c);
        tr.append(td);
      } else if (typeof c === 'object' && c !== null) {
        tr.append(el('td', c.text, c.cls));
      } else {
        tr.append(el('td', c));
      }
    }
    body.append(tr);
  }
}

function ms(us) {
  if (us === null || us === undefined) return '–';
  const v = us / 1000;
  return v < 10 ? v.toFixed(2) + ' ms' : v < 1000 ? v.toFixed(1) + ' ms' : (v / 1000).toFixed(2) + ' s';
}

function clock(unixMs) {
  const d = new Date(unixMs);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function ago(unixMs) {
  const s = Math.max(0, (Date.now() - unixMs) / 1000);
  if (s < 90) return Math.round(s) + ' s ago';
  if (s < 5400) return Math.round(s / 60) + ' min ago';
  if (s < 172800) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function outcomeClass(o) {
  if (o === 'ok') return 'outcome-ok';
  if (o === 'running') return 'outcome-running';
  return 'outcome-bad';
}

// Nearest-rank percentile of a sorted array.
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

const colors = new Map();
function colorOf(name) {
  if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
  return colors.get(name);
}

// Pause or resume a function (POST /v1/functions/{name}/pause|resume),
// then show the table as it now is.
async function setPaused(name, paused, button) {
  button.disabled = true;
  const verb = paused ? 'pause' : 'resume';
  try {
    await api('POST', `/v1/functions/${encodeURIComponent(name)}/${verb}`);
  } catch (e) {
    showResult(false, `${verb} ${name}: ${e.code} (${e.status}): ${e.message}`, []);
  } finally {
    refresh();
  }
}

function pauseButton(f) {
  const b = el('button', f.paused ? 'Resume' : 'Pause', 'small ' + (f.paused ? 'resume' : 'pause'));
  b.type = 'button';
  b.dataset.function = f.name;
  b.addEventListener('click', () => setPaused(f.name, !f.paused, b));
  return b;
}

function stateBadge(f) {
  const b = el('span', f.paused ? 'paused' : 'active', 'badge ' + (f.paused ? 'paused' : 'active'));
  if (f.paused && f.paused_at) b.title = 'paused ' + ago(f.paused_at);
  return b;
}

function renderFunctions(list) {
  fillTable('#functions', list.map((f) => [
    f.name, f.runtime, f.mode, f.profile, ms(f.timeout_ms * 1000),
    f.limits ? f.limits.memory_mb + ' MiB' : '–',
    { text: (f.digest || '').slice(0, 12), cls: 'mono' },
    ago(f.updated_at),
    stateBadge(f),
    pauseButton(f),
  ]), 'no functions deployed');

  const sel = $('#invoke-function');
  const keep = sel.value;
  sel.replaceChildren(...list.map((f) => el('option', f.name)));
  if (list.some((f) => f.name === keep)) sel.value = keep;
  $('#invoke-button').disabled = list.length === 0 || invoking;
}

function renderPools(list) {
  const num = (v) => ({ text: v, cls: 'num' });
  fillTable('#pools', list.map((p) => [
    p.runtime, p.backend, num(p.target), num(p.idle), num(p.bound), num(p.busy),
    num(p.creating), num(p.max),
    num(`${p.warm_starts_total} / ${p.hot_starts_total} / ${p.cold_starts_total}`),
    num(p.recycled_total),
  ]), 'no pools');
}

function finished(invs) {
  return invs.filter((i) => i.outcome !== 'running' && i.timings_us && i.timings_us.total > 0);
}

function renderPercentiles(invs) {
  const done = finished(invs);
  const byFn = new Map();
  for (const i of done) {
    if (!byFn.has(i.function)) byFn.set(i.function, []);
    byFn.get(i.function).push(i);
  }
  const row = (name, list) => {
    const t = list.map((i) => i.timings_us.total).sort((a, b) => a - b);
    const failed = list.filter((i) => i.outcome !== 'ok').length;
    const num = (v) => ({ text: v, cls: 'num' });
    return [name, num(list.length), num(failed), num(ms(percentile(t, 50))),
      num(ms(percentile(t, 90))), num(ms(percentile(t, 99))), num(ms(t[t.length - 1]))];
  };
  const rows = [...byFn.keys()].sort().map((n) => row(n, byFn.get(n)));
  if (byFn.size > 1) rows.push(row('all', done));
  fillTable('#percentiles', rows, 'no finished invocations yet');
  $('#latency-window').textContent = done.length
    ? `(total per invocation, last ${done.length} finished)` : '';
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// Latency over time: one point per invocation, a log scale because hot
// starts (ms) and cold ones (tens of ms) differ by an order of magnitude.
function renderChart(invs) {
  const done = finished(invs);
  const box = $('#chart');
  box.replaceChildren();
  const W = 640, H = 250, L = 52, R = 14, T = 12, B = 46;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, id: 'latency-chart' });
  box.append(root);
  if (done.length === 0) {
    root.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'axis' }, 'no invocations yet'));
    return;
  }
  const xs = done.map((i) => i.started_at);
  const ys = done.map((i) => i.timings_us.total / 1000);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x1 === x0) { x0 -= 1000; x1 += 1000; }
  const lo = Math.floor(Math.log10(Math.min(...ys)));
  let hi = Math.ceil(Math.log10(Math.max(...ys)));
  if (hi === lo) hi = lo + 1;
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => T + (1 - (Math.log10(y) - lo) / (hi - lo)) * (H - T - B);

  for (let d = lo; d <= hi; d++) {
    for (const m of d < hi ? [1, 2, 5] : [1]) {
      const v = m * Math.pow(10, d);
      root.append(svg('line', { x1: L, x2: W - R, y1: py(v), y2: py(v), class: 'grid' }));
      const label = v >= 1000 ? +(v / 1000).toPrecision(3) + ' s' : +v.toPrecision(3) + ' ms';
      root.append(svg('text', { x: L - 6, y: py(v) + 4, 'text-anchor': 'end', class: 'axis' }, label));
    }
  }
  const ticks = [[x0, 'start'], [(x0 + x1) / 2, 'middle'], [x1, 'end']];
  for (const [t, anchor] of ticks) {
    root.append(svg('text', { x: px(t), y: H - B + 16, 'text-anchor': anchor, class: 'axis' }, clock(t)));
  }
  // p50 and p99 of everything shown, as dashed lines.
  const sorted = [...ys].sort((a, b) => a - b);
  for (const [p, dash] of [[50, '4 3'], [99, '1 3']]) {
    const v = percentile(sorted, p);
    root.append(svg('line', {
      x1: L, x2: W - R, y1: py(v), y2: py(v), stroke: '#555', 'stroke-dasharray': dash, class: 'p' + p,
    }));
    root.append(svg('text', { x: W - R, y: py(v) - 3, 'text-anchor': 'end', class: 'axis' }, `p${p} ${ms(v * 1000)}`));
  }
  for (const i of done) {
    const c = svg('circle', {
      cx: px(i.started_at).toFixed(1), cy: py(i.timings_us.total / 1000).toFixed(1), r: 3.2,
      fill: colorOf(i.function), 'fill-opacity': i.outcome === 'ok' ? 0.8 : 0.25,
      stroke: i.outcome === 'ok' ? 'none' : colorOf(i.function), class: 'point',
    });
    c.append(svg('title', {}, `${i.function} · ${i.start || '–'} · ${i.outcome} · ${ms(i.timings_us.total)}`));
    root.append(c);
  }
  let lx = L;
  for (const name of [...new Set(done.map((i) => i.function))].sort()) {
    root.append(svg('circle', { cx: lx + 5, cy: H - 12, r: 4, fill: colorOf(name) }));
    const t = svg('text', { x: lx + 13, y: H - 8, class: 'legend' }, name);
    root.append(t);
    lx += 26 + name.length * 7;
  }
}

function renderInvocations(invs) {
  const recent = invs.slice(-SHOWN).reverse();
  fillTable('#invocations', recent.map((i) => [
    clock(i.started_at), i.function, i.start || '–',
    { text: i.outcome, cls: outcomeClass(i.outcome) },
    { text: i.outcome === 'running' ? '…' : ms(i.timings_us && i.timings_us.total), cls: 'num' },
    i.backend || '–',
    { text: (i.sandbox || '–').replace(/^ember-[0-9a-f]+-[0-9a-f]+-/, ''), cls: 'mono' },
    { text: `${i.stdout_bytes || 0} B out, ${i.stderr_bytes || 0} B err`, cls: 'num' },
  ]), 'no invocations yet');
}

// How long until a Unix-milliseconds deadline, as `in 4 min`.
function until(unixMs) {
  const s = Math.max(0, (unixMs - Date.now()) / 1000);
  if (s < 90) return 'in ' + Math.round(s) + ' s';
  if (s < 5400) return 'in ' + Math.round(s / 60) + ' min';
  return 'in ' + Math.round(s / 3600) + ' h';
}

function mib(bytes) {
  return bytes === null || bytes === undefined ? '–' : (bytes / 1048576).toFixed(1) + ' MiB';
}

// A session id, shortened for the table; the whole one on hover.
function sessionId(s) {
  const e = el('span', s.id.slice(0, 12) + '…', 'mono');
  e.title = s.id;
  return e;
}

// End a session (DELETE /v1/sessions/{id}), then show the tables as they
// now are.
async function closeSession(s, button) {
  button.disabled = true;
  try {
    await api('DELETE', `/v1/sessions/${encodeURIComponent(s.id)}`);
  } catch (e) {
    showResult(false, `close session ${s.id}: ${e.code} (${e.status}): ${e.message}`, []);
  } finally {
    refresh();
  }
}

function closeButton(s) {
  const b = el('button', 'Close', 'small close-session');
  b.type = 'button';
  b.dataset.session = s.id;
  b.addEventListener('click', () => closeSession(s, b));
  return b;
}

// Open sessions (GET /v1/sessions?ended=true lists them first), then the
// most recently ended ones with why they ended.
function renderSessions(list) {
  const num = (v) => ({ text: v, cls: 'num' });
  const open = list.filter((s) => s.open);
  const ended = list.filter((s) => !s.open).slice(0, 20);
  fillTable('#sessions', open.map((s) => [
    sessionId(s), s.function,
    { text: s.busy ? 'busy' : 'open', cls: s.busy ? 'outcome-running' : 'outcome-ok' },
    num(s.invocations),
    s.busy ? 'running' : ago(s.last_used_at),
    num(mib(s.memory_bytes)),
    s.expires_at ? until(s.expires_at) : '–',
    closeButton(s),
  ]), 'no open sessions');
  fillTable('#sessions-ended', ended.map((s) => [
    sessionId(s), s.function, num(s.invocations), ago(s.created_at),
    s.ended_at ? ago(s.ended_at) : '–',
    { text: s.end_reason || '–', cls: s.end_reason === 'failed' ? 'outcome-bad' : '' },
    s.end_message || '',
  ]), 'no ended sessions');
  $('#sessions-count').textContent = `(${open.length} open)`;
}

function showAuth(needed) {
  $('#auth').hidden = !needed;
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const [health, fns, pools, invs, sessions] = await Promise.all([
      api('GET', '/v1/health'),
      api('GET', '/v1/functions'),
      api('GET', '/v1/pools'),
      api('GET', `/v1/invocations?limit=${HISTORY}&output=false`),
      api('GET', '/v1/sessions?ended=true'),
    ]);
    showAuth(false);
    const st = $('#status');
    st.textContent = health.status;
    st.className = 'badge ' + health.status;
    $('#instance').textContent = `instance ${health.instance} · v${health.version} · ${health.backends.join(', ')}`;
    $('#updated').textContent = 'updated ' + clock(Date.now());
    renderFunctions(fns.functions);
    renderPools(pools.pools);
    renderSessions(sessions.sessions);
    renderPercentiles(invs.invocations);
    renderChart(invs.invocations);
    renderInvocations(invs.invocations);
  } catch (e) {
    const st = $('#status');
    st.className = 'badge error';
    if (e instanceof ApiError && e.status === 401) {
      st.textContent = 'no token';
      showAuth(true);
    } else {
      st.textContent = 'unreachable';
      $('#updated').textContent = String(e.message || e);
    }
  } finally {
    refreshing = false;
  }
}

let invoking = false;
function showResult(ok, line, blocks) {
  const box = $('#invoke-result');
  box.className = 'result ' + (ok ? 'ok' : 'error');
  box.replaceChildren(el('div', line, 'line'));
  for (const [label, text] of blocks) {
    if (text === undefined || text === null || text === '') continue;
    box.append(el('div', label));
    box.append(el('pre', text));
  }
}

async function invoke(ev) {
  ev.preventDefault();
  const name = $('#invoke-function').value;
  const text = $('#invoke-event').value.trim() || '{}';
  try {
    JSON.parse(text);
  } catch (e) {
    showResult(false, 'event is not valid JSON: ' + e.message, []);
    return;
  }
  invoking = true;
  $('#invoke-button').disabled = true;
  $('#invoke-result').textContent = `invoking ${name}…`;
  try {
    const r = await api('POST', `/v1/functions/${encodeURIComponent(name)}/invoke`, text);
    showResult(true, `${name}: ${r.outcome} · ${r.start} start · ${ms(r.timings_us.total)} · ${r.sandbox}`, [
      ['result', JSON.stringify(r.result, null, 2)],
      ['stdout', r.stdout],
      ['stderr', r.stderr],
    ]);
  } catch (e) {
    const inv = e.body && e.body.invocation;
    const err = (e.body && e.body.error) || {};
    showResult(false, `${name}: ${e.code} (${e.status}): ${e.message}`, [
      ['traceback', err.traceback],
      ['stdout', inv && inv.stdout],
      ['stderr', inv && inv.stderr],
    ]);
  } finally {
    invoking = false;
    $('#invoke-button').disabled = false;
    refresh();
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('#invoke-form').addEventListener('submit', invoke);
  $('#auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('#auth-token').value.trim();
    sessionStorage.setItem('ember-token', token);
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
