// The dashboard's script: no build step, no framework. One EventSource on /dashboard/events; each `snapshot` event
// updates the numbers and tables and appends a point to the uPlot charts (the last 10 minutes are kept here).
'use strict';

const KEEP_POINTS = 600;
const $ = (id) => document.getElementById(id);
const fmt = (n, digits = 0) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US', { maximumFractionDigits: digits }));
const time = (ms) => new Date(ms).toLocaleTimeString();
const ago = (ms) => (ms < 1500 ? 'now' : ms < 120000 ? `${Math.round(ms / 1000)} s ago` : `${Math.round(ms / 60000)} min ago`);
const bytes = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows, columns, emptyText) {
  const body = $(id).querySelector('tbody');
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(emptyText, 'empty');
    td.colSpan = columns;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement('tr');
    tr.append(...cells);
    body.append(tr);
  }
}

/** A uPlot chart of several series over time, with its data kept as columns. */
function timeChart(id, names, colors) {
  const data = [[], ...names.map(() => [])];
  const width = () => Math.max(300, $(id).parentElement.clientWidth - 28);
  const plot = new uPlot(
    {
      width: width(),
      height: 220,
      series: [{}, ...names.map((label, i) => ({ label, stroke: colors[i], width: 2, spanGaps: true }))],
      axes: [{}, { size: 60 }],
      scales: { x: { time: true } },
    },
    data,
    $(id),
  );
  window.addEventListener('resize', () => plot.setSize({ width: width(), height: 220 }));
  return {
    push(t, values) {
      data[0].push(t / 1000);
      values.forEach((v, i) => data[i + 1].push(v));
      if (data[0].length > KEEP_POINTS) for (const column of data) column.shift();
      plot.setData(data);
    },
  };
}

const throughput = timeChart('chart-throughput', ['edge accepted', 'JetStream msgs', 'hub events', 'QuestDB rows'], ['#2563eb', '#9333ea', '#059669', '#d97706']);
const latency = timeChart('chart-latency', ['p50', 'p95', 'p99'], ['#059669', '#d97706', '#dc2626']);
const lag = timeChart('chart-lag', ['consumer pending', 'edge outbox'], ['#dc2626', '#2563eb']);
let windowsPlot;
let windowsRules = '';

function drawWindows(perRule) {
  const rules = perRule.map((r) => r.rule);
  const times = [...new Set(perRule.flatMap((r) => r.points.map((p) => p[0])))].sort((a, b) => a - b);
  const data = [times.map((t) => t / 1000), ...perRule.map((r) => {
    const byTime = new Map(r.points);
    return times.map((t) => byTime.get(t) ?? null);
  })];
  const palette = ['#2563eb', '#059669', '#d97706', '#dc2626', '#9333ea', '#0891b2', '#65a30d', '#be185d'];
  if (!windowsPlot || windowsRules !== rules.join()) {
    windowsPlot?.destroy();
    windowsRules = rules.join();
    $('chart-windows').replaceChildren();
    windowsPlot = new uPlot(
      {
        width: Math.max(300, $('chart-windows').parentElement.clientWidth - 28),
        height: 220,
        series: [{}, ...rules.map((label, i) => ({ label, stroke: palette[i % palette.length], width: 2, spanGaps: true }))],
        scales: { x: { time: true } },
      },
      data,
      $('chart-windows'),
    );
  } else {
    windowsPlot.setData(data);
  }
}


function render(s) {
  const edgeAccepted = s.edges.reduce((sum, e) => sum + e.acceptedPerSec, 0);
  const backlog = s.edges.reduce((sum, e) => sum + e.outboxRows, 0);
  const pending = s.consumers ? s.consumers.reduce((sum, c) => sum + c.pending + c.ackPending, 0) : null;
  $('kpi-edge').textContent = fmt(edgeAccepted);
  $('kpi-stream').textContent = s.stream ? fmt(s.stream.messagesPerSec, 1) : '–';
  $('kpi-hub-events').textContent = fmt(s.hub.eventsPerSec);
  $('kpi-rows').textContent = fmt(s.hub.rowsPerSec);
  $('kpi-latency').textContent = s.hub.latencyMs ? `${fmt(s.hub.latencyMs.p50)} / ${fmt(s.hub.latencyMs.p95)} / ${fmt(s.hub.latencyMs.p99)}` : '–';
  $('kpi-lag').textContent = fmt(pending);
  $('kpi-backlog').textContent = fmt(backlog);
  $('kpi-dead').textContent = fmt(s.deadLetters.length);
  $('updated').textContent = `updated ${time(s.at)}`;
  $('updated').dataset.at = String(s.at);

  const nodes = s.stream ? s.stream.nodes : [];
  const healthy = nodes.filter((n) => n.current && !n.offline).length;
  setPill('pill-stream', s.stream ? `stream: ${healthy}/${nodes.length || 1} nodes current` : 'stream: unknown', !s.stream ? 'bad' : healthy === nodes.length ? 'ok' : 'warn');
  setPill('pill-questdb', s.questdb.ok ? `QuestDB: ok (${fmt(s.questdb.latencyMs, 1)} ms)` : 'QuestDB: down', s.questdb.ok ? 'ok' : 'bad');
  setPill('pill-nats', s.nats.connected ? `NATS: ${s.nats.server ?? 'connected'}` : 'NATS: disconnected', s.nats.connected ? 'ok' : 'bad');

  throughput.push(s.at, [edgeAccepted, s.stream ? s.stream.messagesPerSec : null, s.hub.eventsPerSec, s.hub.rowsPerSec]);
  latency.push(s.at, s.hub.latencyMs ? [s.hub.latencyMs.p50, s.hub.latencyMs.p95, s.hub.latencyMs.p99] : [null, null, null]);
  lag.push(s.at, [pending, backlog]);
  if (s.windows) drawWindows(s.windows.perRule);

  fillTable('edges', s.edges.map((e) => [
    cell(e.agent), cell(fmt(e.acceptedPerSec)), cell(fmt(e.refusedPerSec)), cell(fmt(e.publishedPerSec)),
    cell(`${fmt(e.outboxRows)} (${bytes(e.outboxBytes)}, ${(e.outboxFill * 100).toFixed(1)}%)`, e.outboxFill > 0.5 ? 'sev-warning' : ''),
    cell(e.oldestAgeMs === null ? '–' : ago(e.oldestAgeMs)), cell(fmt(e.deadLettersUnforwarded)),
    cell(e.hubConnected ? 'connected' : 'offline', e.hubConnected ? '' : 'sev-error'), cell(ago(e.silentForMs), e.silentForMs > 30000 ? 'sev-error' : ''),
  ]), 9, 'no agent has reported yet (agents report every 5 s on status.<agent>)');
  fillTable('nodes', nodes.map((n) => [cell(n.name), cell(n.role), cell(n.offline ? 'offline' : n.current ? 'yes' : 'no', n.current && !n.offline ? '' : 'sev-error'), cell(fmt(n.lag)), cell(ago(n.activeAgoMs))]), 5, 'stream info unavailable');
  fillTable('consumers', (s.consumers ?? []).map((c) => [cell(c.name), cell(fmt(c.pending)), cell(fmt(c.ackPending)), cell(fmt(c.redelivered)), cell(fmt(c.ackedPerSec, 1))]), 5, 'no consumer');
  fillTable('windows', (s.windows ? s.windows.latest : []).map((w) => {
    const { ts, rule, key, window_end: _end, revision: _rev, stream_partition: _p, ...values } = w;
    return [cell(String(ts).replace('T', ' ').replace('Z', '')), cell(rule), cell(key), cell(JSON.stringify(values), 'reason')];
  }), 4, 'no window result in the last 10 minutes');
  // Shares in red when they look bad: the same defaults as the ready quality files' alerts (validity 99 %).
  const share = (v, bad) => cell(v === null ? '–' : `${(v * 100).toFixed(2)}%`, v !== null && bad(v) ? 'sev-warning' : '');
  fillTable('quality', (s.quality ?? []).map((q) => [
    cell(q.source), cell(q.eventType), cell(fmt(q.events)), cell(fmt(q.refused)),
    share(q.validity, (v) => v < 0.99), share(q.completeness, (v) => v < 0.95), share(q.lateShare, (v) => v > 0.01),
    share(q.futureShare, (v) => v > 0.01), share(q.duplicateShare, (v) => v > 0.01), share(q.outOfRangeShare, (v) => v > 0.01),
    cell(fmt(q.worstLagP95Ms), q.worstLagP95Ms !== null && q.worstLagP95Ms > 2000 ? 'sev-warning' : ''),
  ]), 11, 'no data-quality minute in the last 10 minutes (rows come once the watermark passes a minute)');
  fillTable('alerts', (s.alerts ?? []).map((a) => [cell(String(a.ts).replace('T', ' ').replace('Z', '')), cell(a.rule), cell(a.key), cell(a.severity, `sev-${a.severity}`), cell(a.message, 'reason')]), 5, 'no alert in the last day');
  fillTable('dead-letters', s.deadLetters.map((d) => [cell(time(d.at)), cell(d.agent), cell(d.source), cell(d.code), cell(d.reason, 'reason')]), 5, 'none since this hub started');
  const errors = Object.entries(s.errors);
  $('errors').textContent = errors.length === 0 ? 'none' : errors.map(([part, message]) => `${part}: ${message}`).join('\n');
  $('errors').className = errors.length === 0 ? 'empty' : 'errors';
}

function setPill(id, text, state) {
  $(id).textContent = text;
  $(id).className = `pill ${state}`;
}

const events = new EventSource('/dashboard/events');
events.addEventListener('snapshot', (event) => {
  setPill('pill-live', 'live', 'ok');
  render(JSON.parse(event.data));
});
events.onerror = () => setPill('pill-live', 'reconnecting…', 'warn');
