/**
 * Data quality on the real stack: two edge agents over HTTP, one clean (plus a device that goes silent) and one
 * with planted defects at exact rates (simulators/quality-defects.ts): 10 % without `unit`, 5 % out of range, 4 %
 * duplicates, 3 % from a clock 8 s ahead, 2 % three minutes late, 2 % of submissions invalid (refused at the edge),
 * and every event stamped 3 s before it is sent. The hub runs the quality rules of a schemas folder of its own and
 * checks its thresholds every 2 s. By SQL, each score in data_quality (and validity from edge_refusals) must match
 * the planted rate within 1 percentage point; the expected alerts must fire, and no other quality alert; an edited
 * quality.json must take effect without a restart.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CLEAN, DefectPlanter, type PlantedCounts } from '../../simulators/quality-defects.js';
import { testStack } from '../support/env.js';
import { agentPorts, freePort, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const run = Date.now().toString(36);
const goodSource = `dq-good-${run}`;
const badSource = `dq-bad-${run}`;
const silentDevice = `${goodSource}-silent`;
const repoSchemas = join(import.meta.dirname, '../../schemas');

const qualityFile = (alerts: Record<string, number>) =>
  JSON.stringify({
    expectedFields: ['event_id', 'unit'],
    ranges: [{ field: 'value', where: { metric: 'temperature' }, min: -40, max: 125 }],
    futureToleranceMs: 5000,
    silence: { afterMs: 60_000 },
    alerts: { forMinutes: 2, validityBelow: 0.99, completenessBelow: 0.95, lagP95AboveMs: 2000, futureShareAbove: 0.01, outOfRangeShareAbove: 0.02, duplicateShareAbove: 0.05, ...alerts },
  });

let schemasDir: string;
let hub: ManagedProcess | undefined;
let hubPort = 0;
const agents: ManagedProcess[] = [];
let goodPorts: AgentPorts;
let badPorts: AgentPorts;

before(async () => {
  schemasDir = mkdtempSync(join(tmpdir(), 'dq-schemas-'));
  cpSync(repoSchemas, schemasDir, { recursive: true });
  for (const type of ['app.event', 'device.status']) rmSync(join(schemasDir, type, 'quality.json'), { force: true });
  writeFileSync(join(schemasDir, 'device.telemetry', 'quality.json'), qualityFile({}));
  const noRules = mkdtempSync(join(tmpdir(), 'dq-rules-'));
  mkdirSync(noRules, { recursive: true });
  goodPorts = await agentPorts();
  badPorts = await agentPorts();
  agents.push(await startAgent(goodSource, stack.natsUrls, goodPorts, mkdtempSync(join(tmpdir(), 'agent-'))));
  agents.push(await startAgent(badSource, stack.natsUrls, badPorts, mkdtempSync(join(tmpdir(), 'agent-'))));
  hubPort = await freePort();
  hub = await startHub('dq', stack.natsUrls, stack.questdbHttp, {
    HUB_HTTP__PORT: String(hubPort),
    HUB_SCHEMASDIR: schemasDir,
    HUB_ANALYTICS__RULESDIR: noRules,
    HUB_ANALYTICS__RULESBUCKET: `dq-rules-${run}`,
    HUB_ANALYTICS__WORKERID: `dq-${run}`,
    HUB_ANALYTICS__LEASESBUCKET: `dq-leases-${run}`,
    HUB_ANALYTICS__STATEBUCKET: `dq-state-${run}`,
    HUB_ANALYTICS__FRESHSTART: 'new',
    // A clock 8 s ahead must not make the other events late: out-of-orderness above it.
    HUB_ANALYTICS__WATERMARK__MAXOUTOFORDERNESSMS: '15000',
    // Once the traffic stops, event time moves on with the clock, so the last minutes close.
    HUB_ANALYTICS__WATERMARK__IDLETIMEOUTMS: '5000',
    HUB_ANALYTICS__WATERMARK__ADVANCEWHENALLIDLE: 'true',
    HUB_QUALITY__ALERTS__EVALUATEINTERVALMS: '2000',
    HUB_QUALITY__RELOADINTERVALMS: '1000',
  });
});

after(async () => {
  await hub?.stop();
  for (const agent of agents) await agent.stop();
  if (schemasDir) rmSync(schemasDir, { recursive: true, force: true });
});

interface AlertRow extends Record<string, unknown> {
  rule: string;
  key: string;
  message: string;
}

const qualityAlerts = () =>
  query<AlertRow>(stack.questdbHttp, `select rule, key, message from alerts where rule like 'quality.%' and (key like '${goodSource}%' or key like '${badSource}%') and message not like 'resolved:%'`);

test('planted defects show in data_quality at their rates, the expected alerts fire and no others, and a threshold edit needs no restart', { timeout: 420_000 }, async () => {
  const good = new DefectPlanter(goodSource, 4, CLEAN);
  const bad = new DefectPlanter(badSource, 4, { missingUnit: 0.1, outOfRange: 0.05, duplicate: 0.04, future: 0.03, late: 0.02, invalid: 0.02 }, { lagMs: 3000, futureByMs: 8000, lateByMs: 180_000 });
  const post = async (ports: AgentPorts, lines: string[]) => {
    const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') });
    await response.arrayBuffer();
    assert.ok(response.status < 500, `agent answered ${response.status}`);
  };
  const expected = [
    `quality.device.telemetry.completeness ${badSource}`,
    `quality.device.telemetry.future ${badSource}`,
    `quality.device.telemetry.lag ${badSource}`,
    `quality.device.telemetry.out_of_range ${badSource}`,
    `quality.device.telemetry.silent ${silentDevice}`,
    `quality.device.telemetry.validity ${badSource}`,
  ];
  const seen = async () => new Set((await qualityAlerts()).map((a) => `${a.rule} ${a.key}`));

  const started = Date.now();
  let silentSent = 0;
  let edited = false;
  let found = new Set<string>();
  let lastCheck = started;
  // Sends 8 readings per agent every 200 ms until the alerts are in (at most 4 minutes: two closed minutes are needed).
  while (Date.now() - started < 240_000) {
    const now = Date.now();
    const goodLines = good.tick(now);
    if (now - started < 10_000) {
      goodLines.push(JSON.stringify({ type: 'device.telemetry', event_id: `${silentDevice}-${silentSent++}`, device_id: silentDevice, timestamp: now, metric: 'temperature', value: 21, unit: 'C' }));
    }
    await Promise.all([post(goodPorts, goodLines), post(badPorts, bad.tick(now))]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    if (now - lastCheck >= 3000) {
      lastCheck = now;
      found = await seen();
      if (!edited && expected.every((alert) => found.has(alert))) {
        // Reload without restart: a lower duplicates threshold (4 % are planted) must raise a new alert.
        writeFileSync(join(schemasDir, 'device.telemetry', 'quality.json'), qualityFile({ duplicateShareAbove: 0.03 }));
        edited = true;
        process.stderr.write(`[quality] expected alerts after ${((Date.now() - started) / 1000).toFixed(0)} s; threshold edited\n`);
      }
      if (edited && found.has(`quality.device.telemetry.duplicates ${badSource}`)) break;
    }
  }
  const sendingSeconds = (Date.now() - started) / 1000;
  process.stderr.write(`[quality] sent for ${sendingSeconds.toFixed(0)} s: clean ${JSON.stringify(good.planted)}, defects ${JSON.stringify(bad.planted)}\n`);
  assert.deepEqual([...found].filter((a) => !a.endsWith('duplicates ' + badSource)).sort(), expected, 'the expected alerts, and no others');
  assert.ok(found.has(`quality.device.telemetry.duplicates ${badSource}`), 'the edited threshold (duplicates above 3 %) took effect without a restart');

  // Every minute closes once the traffic stops (event time advances with the clock); then all events are counted.
  const totals = async () =>
    query<{ source: string; events: number; complete: number; duplicates: number; future: number; late: number; out_of_range: number; lag_p95: number } & Record<string, unknown>>(
      stack.questdbHttp,
      `select source, sum(events) events, sum(complete) complete, sum(duplicates) duplicates, sum(future) future, sum(late) late, sum(out_of_range) out_of_range, max(lag_p95_ms) lag_p95 ` +
        `from data_quality where source in ('${goodSource}', '${badSource}') and event_type = 'device.telemetry'`,
    );
  const silentEvents = silentSent;
  const rows = await waitFor(
    totals,
    (r) => r.find((x) => x.source === badSource)?.events === bad.planted.accepted && r.find((x) => x.source === goodSource)?.events === good.planted.accepted + silentEvents,
    150_000,
    1000,
  );
  const badRow = rows.find((x) => x.source === badSource)!;
  const goodRow = rows.find((x) => x.source === goodSource)!;
  const refusals = await waitFor(
    () => query<{ source: string; check: string; n: number } & Record<string, unknown>>(stack.questdbHttp, `select source, check, count() n from edge_refusals where source in ('${goodSource}', '${badSource}') group by source, check`),
    (r) => r.reduce((sum, x) => sum + Number(x.n), 0) >= bad.planted.invalid,
    30_000,
    500,
  );
  const refused = (source: string) => refusals.filter((r) => r.source === source).reduce((sum, r) => sum + Number(r.n), 0);
  assert.deepEqual(refusals.map((r) => r.check), ['type'], 'a string where a number belongs is a type failure');

  const within = (name: string, measured: number, planted: number) => {
    process.stderr.write(`[quality] ${name}: measured ${(measured * 100).toFixed(2)} %, planted ${(planted * 100).toFixed(2)} %\n`);
    assert.ok(Math.abs(measured - planted) <= 0.01, `${name}: measured ${(measured * 100).toFixed(2)} %, planted ${(planted * 100).toFixed(2)} %`);
  };
  const p: PlantedCounts = bad.planted;
  within('completeness', badRow.complete / badRow.events, 1 - p.missingUnit / p.accepted);
  within('out of range', badRow.out_of_range / badRow.events, p.outOfRange / p.accepted);
  within('duplicates', badRow.duplicates / badRow.events, p.duplicate / p.accepted);
  within('future', badRow.future / badRow.events, p.future / p.accepted);
  within('late', badRow.late / badRow.events, p.late / p.accepted);
  within('validity', badRow.events / (badRow.events + refused(badSource)), p.accepted / (p.accepted + p.invalid));
  assert.equal(refused(badSource), p.invalid, 'each refused event is one row of edge_refusals');
  assert.ok(badRow.lag_p95 >= 2900 && badRow.lag_p95 <= 190_000, `ingest lag p95 of the late source: ${badRow.lag_p95} ms`);

  assert.equal(goodRow.complete, goodRow.events, 'the clean source is complete');
  for (const measure of ['duplicates', 'future', 'late', 'out_of_range'] as const) assert.equal(goodRow[measure], 0, `the clean source has no ${measure}`);
  assert.equal(refused(goodSource), 0);
  assert.ok(goodRow.lag_p95 < 2000, `ingest lag p95 of the clean source: ${goodRow.lag_p95} ms`);
  assert.ok(readFileSync(join(schemasDir, 'device.telemetry', 'quality.json'), 'utf8').includes('0.03'));

  // The dashboard's quality panel: both sources, the bad one below 99 % validity, the clean one at 100 %.
  type Quality = { source: string; eventType: string; validity: number | null; completeness: number | null };
  const panel = await waitFor(
    async () => ((await (await fetch(`http://127.0.0.1:${hubPort}/dashboard/snapshot`)).json()) as { quality: Quality[] | null }).quality ?? [],
    (q) => q.some((x) => x.source === badSource && x.validity !== null) && q.some((x) => x.source === goodSource),
    30_000,
    1000,
  );
  const badPanel = panel.find((x) => x.source === badSource)!;
  assert.ok(badPanel.validity! < 0.99 && badPanel.completeness! < 0.95, JSON.stringify(badPanel));
  assert.equal(panel.find((x) => x.source === goodSource)!.validity, 1);
});
