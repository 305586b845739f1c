/**
 * Hub analytics on the real cluster and QuestDB: two workers share the partitions through leases; one is killed
 * with SIGKILL mid-stream; its partitions move to the others, which restore the last snapshot and replay from the
 * stream position it covers. The window results in QuestDB must equal an offline run of the same operators over
 * the same input: a replayed event counted twice would show as a wrong count or sum.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { WireEvent } from '../../shared/wire.js';
import { testStack } from '../support/env.js';
import { analyticsHealth, startAnalyticsHub, startRuleAndAgent, type AnalyticsHub, type RuleAndAgent } from '../support/analytics-hub.js';
import { waitFor } from '../support/questdb.js';
import { countAndSumRule, offlineWindowValues, storedWindowValues } from '../support/window-check.js';

const stack = testStack();
const run = Date.now().toString(36);
const agentId = `analytics-${run}`;
const metric = `it_${run}`;
const rule = countAndSumRule(`it-count-${run}`, metric);
const PARTITIONS = 8;
const LEASE_TTL_MS = 6000;

let rig: RuleAndAgent;
const hubs: AnalyticsHub[] = [];
/** Newest event time sent so far: a later test starts after it, or its events would be behind the watermark. */
let newestSentMs = 0;

async function hub(name: string): Promise<AnalyticsHub> {
  // Its own lease TTL (shorter than the default) and checkpoint interval; its own buckets (startAnalyticsHub).
  const started = await startAnalyticsHub(name, run, { HUB_ANALYTICS__LEASETTLMS: String(LEASE_TTL_MS), HUB_ANALYTICS__CHECKPOINTINTERVALMS: '500' });
  hubs.push(started);
  return started;
}

const owned = async (port: number): Promise<number[]> => (await analyticsHealth(port)).owned;

before(async () => {
  rig = await startRuleAndAgent(rule, agentId);
});

after(async () => {
  for (const h of hubs) await h.process.stop();
  await rig?.stop();
});

test('two workers share the partitions; after one is killed, window results equal an offline computation', async () => {
  const a = await hub('an-a');
  const b = await hub('an-b');
  const split = await waitFor(
    async () => [await owned(a.port), await owned(b.port)],
    ([x, y]) => x!.length + y!.length === PARTITIONS && x!.length > 0 && y!.length > 0,
    30_000,
  );
  assert.deepEqual([...split[0]!, ...split[1]!].sort((p, q) => p - q), [0, 1, 2, 3, 4, 5, 6, 7], 'each partition owned exactly once');

  // Event time just ahead of now (the workers start after what EVENTS held, so only these events set the watermark).
  const base = Math.ceil(Date.now() / 10_000) * 10_000 + 10_000;
  const devices = 24;
  const events: WireEvent[] = [];
  const send = async (step: number) => {
    const lines: string[] = [];
    for (let d = 0; d < devices; d++) {
      const timestamp = base + step * 1000 + d; // strictly increasing per device, 1 event per device per second
      newestSentMs = Math.max(newestSentMs, timestamp);
      const body = { event_id: `${agentId}-${step}-${d}`, device_id: `${agentId}-d${d}`, timestamp, metric, value: (step * 7 + d) % 13 };
      lines.push(JSON.stringify({ type: 'device.telemetry', ...body }));
      events.push({ id: body.event_id, type: 'device.telemetry', sv: 1, key: body.device_id, ts: timestamp * 1000, its: 0, src: 'http', body });
    }
    const response = await fetch(`http://127.0.0.1:${rig.ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') });
    assert.equal(response.status, 200);
  };
  const steps = 120;
  let killedAt = 0;
  for (let step = 0; step < steps; step++) {
    await send(step);
    if (step === 50) {
      // Let a checkpoint or two happen, then kill worker A without warning.
      await new Promise((r) => setTimeout(r, 1500));
      await a.process.kill();
      killedAt = Date.now();
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const takeover = await waitFor(() => owned(b.port), (o) => o.length === PARTITIONS, 45_000, 200);
  const takeoverMs = Date.now() - killedAt;
  process.stderr.write(`worker B owned all ${takeover.length} partitions ${(takeoverMs / 1000).toFixed(1)} s after worker A was killed (lease TTL ${LEASE_TTL_MS / 1000} s)\n`);

  const expected = offlineWindowValues(rule, events, PARTITIONS, agentId);
  assert.ok(expected.size > devices * 5, `the offline run closes windows (${expected.size})`);
  const read = () => storedWindowValues(stack.questdbHttp, rule.name, ['n', 'total']);
  const got = await waitFor(read, (m) => [...expected.keys()].every((k) => m.has(k)), 60_000, 500);
  const wrong = [...expected].filter(([k, v]) => got.get(k) !== v);
  assert.deepEqual(wrong.slice(0, 5).map(([k, v]) => `${k}: expected ${v}, got ${got.get(k)}`), [], `${wrong.length} of ${expected.size} window values differ from the offline run`);
});
