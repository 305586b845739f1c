/**
 * What the rules find is visible before the next checkpoint: window results (and alerts, late events) are written
 * out every `outputFlushIntervalMs` between checkpoints, since they are idempotent; only the ack waits for the
 * snapshot. With a 30 s checkpoint interval, a window closed by the watermark must be in QuestDB within a few
 * seconds, and its partition must not have checkpointed meanwhile.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { jetstreamManager } from '@nats-io/jetstream';
import { partitionOf } from '../../shared/wire.js';
import { testStack } from '../support/env.js';
import { analyticsHealth, startAnalyticsHub, startRuleAndAgent, type AnalyticsHub, type RuleAndAgent } from '../support/analytics-hub.js';
import { waitFor } from '../support/questdb.js';
import { countAndSumRule, storedWindowValues } from '../support/window-check.js';

const stack = testStack();
const run = Date.now().toString(36);
const agentId = `rules-latency-${run}`;
const metric = `latency_${run}`;
const rule = countAndSumRule(`latency-count-${run}`, metric);
const PARTITIONS = 8;

let rig: RuleAndAgent;
let hub: AnalyticsHub;

before(async () => {
  rig = await startRuleAndAgent(rule, agentId);
  hub = await startAnalyticsHub('rules-latency', run, {
    HUB_ANALYTICS__CHECKPOINTINTERVALMS: '30000',
    HUB_ANALYTICS__ACKWAITMS: '300000',
    HUB_ANALYTICS__OUTPUTFLUSHINTERVALMS: '250',
  });
});

after(async () => {
  await hub?.process.stop();
  await rig?.stop();
});

test('a closed window is in QuestDB within seconds, long before the next checkpoint', async () => {
  const device = `${agentId}-d0`;
  const partition = partitionOf(device, PARTITIONS);
  const base = Math.ceil(Date.now() / 10_000) * 10_000 + 10_000;
  const post = async (events: object[]) => {
    const body = events.map((event) => JSON.stringify({ type: 'device.telemetry', device_id: device, ...event })).join('\n');
    const response = await fetch(`http://127.0.0.1:${rig.ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    assert.equal(response.status, 200);
  };
  const consumer = `state-${run}-p${partition}-g1`;
  const jsm = await jetstreamManager(rig.nc);
  await waitFor(() => jsm.consumers.info('EVENTS', consumer).then((info) => info.num_pending, () => -1), (pending) => pending === 0, 300_000, 500);
  const checkpoints = async () => (await analyticsHealth(hub.port)).partitions.find((p) => p.partition === partition)?.checkpoints ?? 0;
  // A reading of another metric (the rule ignores it) makes the device's partition checkpoint. Checkpoints fall on
  // multiples of the interval on the clock: if the next one is close, do it again just after it.
  let before = 0;
  for (let attempt = 0; ; attempt++) {
    const previous = await checkpoints();
    await post([{ event_id: `${agentId}-primer-${attempt}`, timestamp: base - 60_000 + attempt, metric: `other_${run}`, value: 0 }]);
    before = await waitFor(checkpoints, (n) => n > previous, 60_000, 100);
    const toNextCheckpoint = 30_000 - (Date.now() % 30_000);
    if (toNextCheckpoint >= 5000) break;
    await new Promise((r) => setTimeout(r, toNextCheckpoint + 200));
  }

  // 17 readings one second apart: the watermark (newest - 5 s) passes the end of the first 10 s window.
  const sentAt = Date.now();
  await post(Array.from({ length: 17 }, (_, i) => ({ event_id: `${agentId}-${i}`, timestamp: base + i * 1000, metric, value: i })));
  // Until the first flush adds the aggregate columns the query fails, and waitFor has no value yet.
  const got = await waitFor(() => storedWindowValues(stack.questdbHttp, rule.name, ['n', 'total']), (m) => (m?.size ?? 0) > 0, 20_000, 100);
  const visibleMs = Date.now() - sentAt;
  process.stderr.write(`window result visible ${visibleMs} ms after the events were sent (checkpoint interval 30 s)\n`);
  assert.equal(got.get(`${device}|${base}|n`), 10);
  assert.equal(got.get(`${device}|${base}|total`), 45);
  assert.equal(await checkpoints(), before, 'written by an output flush, not by a checkpoint');
  assert.ok(visibleMs < 10_000, `visible after ${visibleMs} ms`);
});
