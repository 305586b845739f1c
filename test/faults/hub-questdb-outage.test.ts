/**
 * QuestDB stopped for 30 s while events keep coming (issue 4): the hub (raw path and rules in one process) cannot
 * flush, so it acks nothing, says so on /healthz, and holds or leaves the messages in JetStream; when QuestDB is back
 * it resumes by itself. Then every event the agent acknowledged is in QuestDB exactly once, and the window results
 * equal an offline run of the same operators over the same input (a replayed event counted twice would show).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { stackFromEnv } from '../../scripts/lib/stack.js';
import type { WireEvent } from '../../shared/wire.js';
import { testStack } from '../support/env.js';
import { analyticsHealth, startAnalyticsHub, startRuleAndAgent, type AnalyticsHub, type RuleAndAgent } from '../support/analytics-hub.js';
import { query, waitFor } from '../support/questdb.js';
import { countAndSumRule, offlineWindowValues, storedWindowValues } from '../support/window-check.js';

const stack = testStack();
const run = Date.now().toString(36);
const agentId = `qdb-outage-${run}`;
const metric = `outage_${run}`;
const rule = countAndSumRule(`outage-count-${run}`, metric);
const PARTITIONS = 8;
const OUTAGE_MS = 30_000;
const DEVICES = 24;

let rig: RuleAndAgent;
let hub: AnalyticsHub;

before(async () => {
  rig = await startRuleAndAgent(rule, agentId);
  hub = await startAnalyticsHub('qdb-outage', run, { HUB_ANALYTICS__CHECKPOINTINTERVALMS: '500' });
});

after(async () => {
  await stackFromEnv().startQuestdb().catch(() => undefined); // never leave the shared stack without QuestDB
  await hub?.process.stop();
  await rig?.stop();
});

test('QuestDB stopped for 30 s under load: the hub resumes by itself, nothing lost, nothing twice, windows exact', async () => {
  const base = Math.ceil(Date.now() / 10_000) * 10_000 + 10_000;
  const events: WireEvent[] = [];
  const send = async (step: number) => {
    const lines: string[] = [];
    for (let d = 0; d < DEVICES; d++) {
      const timestamp = base + step * 1000 + d;
      const body = { event_id: `${agentId}-${step}-${d}`, device_id: `${agentId}-d${d}`, timestamp, metric, value: (step * 7 + d) % 13 };
      lines.push(JSON.stringify({ type: 'device.telemetry', ...body }));
      events.push({ id: body.event_id, type: 'device.telemetry', sv: 1, key: body.device_id, ts: timestamp * 1000, its: 0, src: 'http', body });
    }
    const response = await fetch(`http://127.0.0.1:${rig.ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') });
    assert.equal(response.status, 200, 'the agent acknowledges whatever QuestDB does');
  };
  const hubHealth = async () =>
    fetch(`http://127.0.0.1:${hub.port}/healthz`)
      .then(async (r) => (await r.json()) as { status: string })
      .catch(() => ({ status: 'no answer' }));

  // Every partition claimed first: with freshStart=new a partition claimed later would start after these events.
  await waitFor(() => analyticsHealth(hub.port), (health) => health.owned.length === PARTITIONS, 60_000, 200);
  let step = 0;
  const sendFor = async (ms: number, onTick?: () => Promise<void>) => {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      await send(step++);
      await onTick?.();
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await sendFor(5000);
  const cluster = stackFromEnv();
  await cluster.stopQuestdb();
  const seenDuringOutage = new Set<string>();
  await sendFor(OUTAGE_MS, async () => {
    if (step % 10 === 0) seenDuringOutage.add((await hubHealth()).status);
  });
  assert.ok(seenDuringOutage.has('unavailable'), `the hub reported its failing writes on /healthz (saw ${[...seenDuringOutage].join(', ')})`);
  const restarted = Date.now();
  await cluster.startQuestdb();
  await sendFor(5000);

  const rows = await waitFor(
    () => query<{ n: number; ids: number }>(stack.questdbHttp, `select count() n, count_distinct(event_id) ids from device_telemetry where agent_id = '${agentId}'`),
    (r) => Number(r[0]?.n ?? 0) >= events.length,
    120_000,
    500,
  );
  process.stderr.write(`${events.length} events, ${step} requests; all raw rows in QuestDB ${((Date.now() - restarted) / 1000).toFixed(1)} s after it was started again\n`);
  assert.equal(Number(rows[0]!.n), events.length, 'every acknowledged event is in QuestDB, none twice');
  assert.equal(Number(rows[0]!.ids), events.length);

  const expected = offlineWindowValues(rule, events, PARTITIONS, agentId);
  assert.ok(expected.size > DEVICES * 2 * 3, `the offline run closes windows (${expected.size / 2})`);
  const read = () => storedWindowValues(stack.questdbHttp, rule.name, ['n', 'total']);
  const got = await waitFor(read, (m) => [...expected.keys()].every((k) => m.has(k)), 60_000, 500);
  const wrong = [...expected].filter(([k, v]) => got.get(k) !== v);
  assert.deepEqual(wrong.slice(0, 5).map(([k, v]) => `${k}: expected ${v}, got ${got.get(k)}`), [], `${wrong.length} of ${expected.size} window values differ from the offline run`);
});
