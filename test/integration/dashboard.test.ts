/**
 * The hub's live dashboard on the real stack, in a real browser (Debian's headless Chromium driven by
 * playwright-core): an agent takes HTTP traffic, the hub writes it and runs the repo's rules, and the page
 *   - connects to the SSE stream and shows numbers that change from one snapshot to the next,
 *   - lists the agent with its rates and outbox (from the agent's status reports),
 *   - shows the three NATS nodes of the EVENTS stream as current, and QuestDB as up,
 *   - draws its charts, including window results of the rules, and lists the latest results,
 *   - shows an alert (an overheating episode planted in the data) and a dead letter (a bad event posted while watching),
 * and a screenshot is written to .runtime/test-artifacts/dashboard.png. The same snapshots, every second here, are
 * written to QuestDB's pipeline_metrics table: the test reads the agent's, the hub's and the nodes' back by SQL.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO_ROOT } from '../../scripts/lib/runtime.js';
import type { DashboardSnapshot } from '../../hub/src/dashboard/pipeline-observer.js';
import { testStack } from '../support/env.js';
import { analyticsHealth, startAnalyticsHub } from '../support/analytics-hub.js';
import { agentPorts, startAgent, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const CHROMIUM = process.env.PIPELINE_CHROMIUM ?? '/usr/bin/chromium';
const stack = testStack();
const runId = Date.now().toString(36);
const agentId = `dash-${runId}`;
const hotDevice = `dash-hot-${runId}`;
const artifacts = join(REPO_ROOT, '.runtime', 'test-artifacts');

let hub: ManagedProcess;
let agent: ManagedProcess;
let ports: AgentPorts;
let hubPort: number;
let browser: Browser;
let page: Page;
let loading = true;
let load: Promise<void>;

const reading = (device: string, ts: number, value: number, id: string) => ({ type: 'device.telemetry', event_id: id, device_id: device, timestamp: ts, metric: 'temperature', value });

async function post(events: object[]): Promise<{ status: number; body: { accepted: number } }> {
  const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', body: JSON.stringify(events) });
  return { status: response.status, body: (await response.json()) as { accepted: number } };
}

async function snapshot(): Promise<DashboardSnapshot | undefined> {
  const response = await fetch(`http://127.0.0.1:${hubPort}/dashboard/snapshot`);
  return response.ok ? ((await response.json()) as DashboardSnapshot) : undefined;
}

const text = (selector: string) => page.locator(selector).innerText();

before(async () => {
  assert.ok(existsSync(CHROMIUM), `the dashboard test needs Debian's chromium at ${CHROMIUM} (apt-get install chromium; .ci/run does), or PIPELINE_CHROMIUM`);
  // Its own analytics buckets, starting after what EVENTS holds: other tests' events neither delay nor move it.
  const started = await startAnalyticsHub('dash', runId, { HUB_DASHBOARD__INTERVALMS: '500', HUB_DASHBOARD__METRICSINTERVALMS: '1000', HUB_SINK__FLUSHINTERVALMS: '100' });
  hub = started.process;
  hubPort = started.port;
  await waitFor(() => analyticsHealth(hubPort), (h) => h.owned.length === 8, 60_000);
  ports = await agentPorts();
  agent = await startAgent(agentId, stack.natsUrls, ports, mkdtempSync(join(tmpdir(), 'dash-')), { EDGE_NATS__STATUSINTERVALMS: '500' });

  // An overheating episode first (temperature > 80 for 30 s of event time, in the past), before the live load
  // moves the watermarks past it.
  const start = Date.now() - 34_000;
  const hot = Array.from({ length: 8 }, (_, i) => reading(hotDevice, start + i * 4500, 90 + i, `${runId}-hot-${i}`));
  assert.equal((await post(hot)).status, 200);

  // Live load: 50 readings of 20 devices every 100 ms, with event time = now.
  let n = 0;
  load = (async () => {
    while (loading) {
      const now = Date.now();
      const batch = Array.from({ length: 50 }, () => {
        n++;
        return reading(`dash-${runId}-${n % 20}`, now, 20 + (n % 10), `${runId}-${n}`);
      });
      const result = await post(batch);
      assert.equal(result.status, 200);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 1500 } });
});

after(async () => {
  loading = false;
  await load?.catch(() => undefined);
  await browser?.close();
  await agent?.stop();
  await hub?.stop();
});

describe('live dashboard', () => {
  test('the snapshot names the agent, the three NATS nodes and QuestDB', async () => {
    const s = await waitFor(snapshot, (v) => v !== undefined && v.edges.some((e) => e.agent === agentId && e.acceptedPerSec > 0), 30_000);
    assert.ok(s);
    const edge = s.edges.find((e) => e.agent === agentId)!;
    assert.ok(edge.hubConnected, 'the agent reports its hub connection');
    assert.ok(edge.outboxRows >= 0 && edge.outboxFill >= 0 && edge.outboxFill < 1);
    assert.equal(s.stream?.nodes.length, 3, 'leader and two replicas of EVENTS');
    assert.ok(s.stream!.nodes.every((node) => node.current && !node.offline), JSON.stringify(s.stream!.nodes));
    assert.equal(s.questdb.ok, true);
    assert.ok(s.consumers && s.consumers.length > 0, 'the hub durable consumer is listed');
  });

  test('the page goes live and its numbers change with the traffic', async () => {
    await page.goto(`http://127.0.0.1:${hubPort}/dashboard`);
    await page.waitForFunction(() => document.getElementById('pill-live')?.textContent === 'live', undefined, { timeout: 15_000 });
    const first = await page.locator('#updated').getAttribute('data-at');
    await page.waitForFunction((before) => document.getElementById('updated')?.dataset.at !== before, first, { timeout: 5_000 });
    // The hub's rate is measured between two snapshots: wait for one with traffic in it, then see it move.
    await page.waitForFunction(() => Number((document.getElementById('kpi-hub-events')?.textContent ?? '0').replace(/,/g, '')) > 0, undefined, { timeout: 20_000 });
    const values = new Set<string>();
    for (let i = 0; i < 12 && values.size < 2; i++) {
      values.add(`${await text('#kpi-edge')}|${await text('#kpi-hub-events')}|${await text('#kpi-rows')}`);
      await page.waitForTimeout(600);
    }
    assert.ok(values.size >= 2, `the numbers changed: ${[...values].join(' ; ')}`);
    assert.match(await text('#edges tbody'), new RegExp(agentId));
    // A replica may fall a moment behind under load (JetStream then reports it not current); the pill shows that as
    // it is, so wait for the three to be current again rather than read one instant.
    await page.waitForFunction(() => /3\/3 nodes current/.test(document.getElementById('pill-stream')?.textContent ?? ''), undefined, { timeout: 20_000 }).catch(() => undefined);
    assert.match(await text('#pill-stream'), /3\/3 nodes current/);
    assert.match(await text('#pill-questdb'), /QuestDB: ok/);
    assert.match(await text('#kpi-latency'), /^\d[\d,.]* \/ \d[\d,.]* \/ \d[\d,.]*$/, 'end-to-end latency percentiles are shown');
    assert.ok((await page.locator('canvas').count()) >= 3, 'the uPlot charts are drawn');
  });

  test('window results, an alert and a dead letter appear on the page', async () => {
    await page.waitForFunction(() => (document.querySelector('#windows tbody')?.textContent ?? '').includes('telemetry-per-device-10s'), undefined, { timeout: 45_000 });
    await page.waitForFunction((device) => (document.querySelector('#alerts tbody')?.textContent ?? '').includes(device), hotDevice, { timeout: 30_000 });
    assert.match(await text('#alerts tbody'), /overheating/);
    // Lineage: each window result names the version of the rule that made it.
    const versions = await waitFor(
      () => query<{ rule_version: string | null }>(stack.questdbHttp, `select distinct rule_version from window_results where rule = 'telemetry-per-device-10s' and key like '%${runId}%'`),
      (v) => v.length > 0,
      15_000,
    );
    assert.ok(versions.every((v) => /^[0-9a-f]{16}$/.test(v.rule_version ?? '')), JSON.stringify(versions));
    assert.ok((await page.locator('#chart-windows canvas').count()) >= 1, 'window results are charted');

    const bad = await post([{ type: 'device.telemetry', event_id: `${runId}-bad`, device_id: 'x', timestamp: Date.now(), metric: 'temperature', value: 'hot' }]);
    assert.equal(bad.status, 400);
    await page.waitForFunction((agent) => (document.querySelector('#dead-letters tbody')?.textContent ?? '').includes(agent), agentId, { timeout: 15_000 });
    assert.match(await text('#dead-letters tbody'), /EDGE_ERR_SCHEMA_INVALID/);
    assert.match(await text('#dead-letters tbody'), /value/);

    mkdirSync(artifacts, { recursive: true });
    const file = join(artifacts, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(statSync(file).size > 20_000, 'a screenshot with content');
  });

  test('the pipeline\'s own metrics are written to QuestDB as time series', async () => {
    type Sample = { stage: string; subject: string; metric: string; samples: number; max_value: number };
    const sql =
      `select stage, subject, metric, count() samples, max(value) max_value from pipeline_metrics ` +
      `where ts > dateadd('m', -5, now()) and (subject = '${agentId}' or stage in ('hub', 'node', 'questdb')) order by stage, subject, metric`;
    const rows = await waitFor(
      () => query<Sample>(stack.questdbHttp, sql),
      (r) => r.some((x) => x.subject === agentId && x.metric === 'accepted_per_s' && x.max_value > 0) && r.some((x) => x.stage === 'hub' && x.metric === 'rows_per_s' && x.max_value > 0),
      30_000,
    );
    const find = (stage: string, metric: string, subject?: string) => rows.find((r) => r.stage === stage && r.metric === metric && (subject === undefined || r.subject === subject));
    assert.ok(find('edge', 'accepted_per_s', agentId)!.max_value > 0, 'the agent\'s ingest rate');
    assert.ok(find('edge', 'outbox_fill', agentId), 'the agent\'s outbox fill');
    assert.ok(find('edge', 'cpu_percent', agentId), 'the agent\'s CPU');
    assert.ok(find('edge', 'rss_bytes', agentId)!.max_value > 10 * 2 ** 20, 'the agent\'s memory');
    assert.ok(find('hub', 'latency_p95_ms'), 'the end-to-end latency');
    assert.ok(find('hub', 'cpu_percent') && find('hub', 'rss_bytes'), 'the hub\'s CPU and memory');
    assert.equal(new Set(rows.filter((r) => r.stage === 'node' && r.metric === 'current').map((r) => r.subject)).size, 3, 'each NATS node');
    assert.equal(find('questdb', 'up')!.max_value, 1);
    assert.ok(find('edge', 'accepted_per_s', agentId)!.samples >= 3, 'a sample every second while the test ran');
  });
});
