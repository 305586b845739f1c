/**
 * Pre-aggregation through the real stack: readings over MQTT (out of order within the lateness, one too late),
 * window results in QuestDB equal to the same computation done offline, next to the raw readings (mode both).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { testStack } from '../support/env.js';
import { agentPorts, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const agentId = `agg-${Date.now().toString(36)}`;
let hub: ManagedProcess;
let agent: ManagedProcess;
let ports: AgentPorts;

before(async () => {
  hub = await startHub('agg', stack.natsUrls, stack.questdbHttp);
  ports = await agentPorts();
  agent = await startAgent(agentId, stack.natsUrls, ports, mkdtempSync(join(tmpdir(), 'agent-')), {
    EDGE_AGGREGATION: JSON.stringify([{ type: 'device.telemetry', mode: 'both', windowMs: 10000, allowedLatenessMs: 3000, idleMs: 2000 }]),
  });
});
after(async () => {
  await agent?.stop();
  await hub?.stop();
});

test('window results in QuestDB equal an offline computation; raw readings are forwarded too', async () => {
  const base = Math.floor(Date.now() / 10000) * 10000 - 600_000;
  const device = `${agentId}-dev`;
  // [offset ms, value]; the 9 000 reading arrives after 12 000 (within lateness), the 1 000 one after 25 000 (too late).
  const readings: Array<[number, number]> = [[0, 1], [4000, 5], [12000, 7], [9000, 3], [15000, 2], [25000, 4], [1000, 100], [31000, 6]];
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${ports.mqtt}`, { clientId: device });
  for (const [i, [offset, value]] of readings.entries()) {
    await client.publishAsync(`devices/${device}/telemetry`, JSON.stringify({ event_id: `${device}-${i}`, device_id: device, timestamp: base + offset, metric: 'temperature', value }), { qos: 1 });
  }
  await client.endAsync();
  // Offline: windows of 10 s, the too-late reading excluded, the idle timeout closes the last window.
  const expected = [
    { start: base, count: 3, sum: 9, min: 1, max: 5, last: 3 },
    { start: base + 10000, count: 2, sum: 9, min: 2, max: 7, last: 2 },
    { start: base + 20000, count: 1, sum: 4, min: 4, max: 4, last: 4 },
    { start: base + 30000, count: 1, sum: 6, min: 6, max: 6, last: 6 },
  ];
  const rows = await waitFor(
    () =>
      query<{ ts: string; value_count: number; value_sum: number; value_min: number; value_max: number; value_last: number }>(
        stack.questdbHttp,
        `select ts, value_count, value_sum, value_min, value_max, value_last from device_telemetry_agg where device_id = '${device}' order by ts`,
      ),
    (r) => r.length >= expected.length,
    30000,
  );
  assert.deepEqual(
    rows.map((r) => ({ start: Date.parse(r.ts), count: Number(r.value_count), sum: r.value_sum, min: r.value_min, max: r.value_max, last: r.value_last })),
    expected,
  );
  const [raw] = await query<{ n: number }>(stack.questdbHttp, `select count() n from device_telemetry where device_id = '${device}'`);
  assert.equal(Number(raw!.n), readings.length, 'mode both forwards every raw reading, the late one included');
  const metrics = await (await fetch(`http://127.0.0.1:${ports.admin}/metrics`)).text();
  assert.match(metrics, /edge_aggregation_late_events_total\{[^}]*\} 1/);
});
