/**
 * The walking skeleton, end to end on the real stack: MQTT (QoS 1) and HTTP clients → edge agent → JetStream
 * cluster → hub worker → QuestDB. Duplicates and invalid events are mixed in; QuestDB must hold every valid
 * event exactly once and none of the invalid ones.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { testStack } from '../support/env.js';
import { agentPorts, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, rowsPerEventId, waitFor } from '../support/questdb.js';

const stack = testStack();
const agentId = `e2e-${Date.now().toString(36)}`;
const now = Date.now();

let hub: ManagedProcess;
let agent: ManagedProcess;
let ports: AgentPorts;

before(async () => {
  hub = await startHub('e2e', stack.natsUrls, stack.questdbHttp);
  ports = await agentPorts();
  agent = await startAgent(agentId, stack.natsUrls, ports, mkdtempSync(join(tmpdir(), 'agent-')));
});

after(async () => {
  await agent?.stop();
  await hub?.stop();
});

function reading(device: string, i: number, extra: Record<string, unknown> = {}) {
  return { event_id: `${agentId}-${device}-${i}`, device_id: device, timestamp: now - 60000 + i, metric: 'temperature', value: 20 + i / 10, ...extra };
}

function appEvent(i: number, extra: Record<string, unknown> = {}) {
  return {
    event_id: `${agentId}-app-${i}`,
    event_type: i % 2 ? 'video_play' : 'video_complete',
    user_id: `user-${i % 5}`,
    session_id: `s-${i % 3}`,
    timestamp: new Date(now - 30000 + i).toISOString(),
    properties: { content_id: `c-${i % 7}` },
    context: { device_type: 'tv', location: 'DE' },
    ...extra,
  };
}

describe('end to end through the real stack', () => {
  test('every valid event lands in QuestDB exactly once, invalid ones never', async () => {
    // MQTT, QoS 1: single events, an array of readings, a resent event (same id) and invalid ones.
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${ports.mqtt}`, { clientId: `${agentId}-dev-a`, clean: true });
    const validTelemetry = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const event = reading('dev-a', i);
      await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(event), { qos: 1 });
      validTelemetry.add(event.event_id);
    }
    const batch = Array.from({ length: 30 }, (_, i) => reading('dev-a', 100 + i));
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(batch), { qos: 1 });
    batch.forEach((e) => validTelemetry.add(e.event_id));
    // Duplicates: the same event and the same array sent again.
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(reading('dev-a', 3)), { qos: 1 });
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(batch), { qos: 1 });
    // Invalid: wrong type of value, missing field, malformed JSON, another device's id on this topic.
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(reading('dev-a', 900, { value: 'hot' })), { qos: 1 });
    const { metric: _dropped, ...noMetric } = reading('dev-a', 901);
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(noMetric), { qos: 1 });
    await client.publishAsync('devices/dev-a/telemetry', '{"device_id": "dev-a", ', { qos: 1 });
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(reading('dev-b', 902)), { qos: 1 });
    await client.publishAsync('devices/dev-a/status', JSON.stringify({ event_id: `${agentId}-status-1`, device_id: 'dev-a', timestamp: now, status: 'online' }), { qos: 1 });
    await client.endAsync();

    // HTTP: a JSON array with an invalid event in the middle, NDJSON with a bad line, and a duplicate.
    const validApp = new Set<string>();
    const appBatch = Array.from({ length: 40 }, (_, i) => appEvent(i));
    appBatch.forEach((e) => validApp.add(e.event_id));
    const mixed = [...appBatch.slice(0, 20), appEvent(950, { user_id: 42 }), ...appBatch.slice(20)];
    let response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(mixed) });
    assert.equal(response.status, 207);
    const result = (await response.json()) as { accepted: number; rejected: { index: number; code: string; reason: string; field?: string }[] };
    assert.equal(result.accepted, 40);
    assert.deepEqual(result.rejected.map((r) => [r.index, r.code, r.field]), [[20, 'EDGE_ERR_SCHEMA_INVALID', '/user_id']]);
    assert.match(result.rejected[0]!.reason, /user_id must be string/);

    const ndjson = [appEvent(60), appEvent(61)].map((e) => JSON.stringify(e)).join('\n') + '\n{not json}\n' + JSON.stringify(appEvent(5)) + '\n';
    validApp.add(appEvent(60).event_id).add(appEvent(61).event_id);
    response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: ndjson });
    assert.equal(response.status, 207);
    const ndResult = (await response.json()) as { accepted: number; rejected: { index: number; code: string }[] };
    assert.equal(ndResult.accepted, 3);
    assert.deepEqual(ndResult.rejected.map((r) => [r.index, r.code]), [[2, 'EDGE_ERR_MALFORMED_JSON']]);

    response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', body: JSON.stringify(appEvent(950, { timestamp: 'yesterday' })) });
    assert.equal(response.status, 400, 'a request whose only event is invalid is a 400');

    // QuestDB: exactly the valid ids, each once.
    const telemetry = await waitFor(() => rowsPerEventId(stack.questdbHttp, 'device_telemetry', agentId), (rows) => rows.size >= validTelemetry.size, 30000);
    assert.deepEqual([...telemetry.keys()].sort(), [...validTelemetry].sort());
    assert.ok([...telemetry.values()].every((n) => n === 1), 'no telemetry event is stored twice');

    const app = await waitFor(() => rowsPerEventId(stack.questdbHttp, 'app_events', agentId), (rows) => rows.size >= validApp.size, 30000);
    assert.deepEqual([...app.keys()].sort(), [...validApp].sort());
    assert.ok([...app.values()].every((n) => n === 1), 'no app event is stored twice');

    const status = await waitFor(() => rowsPerEventId(stack.questdbHttp, 'device_status', agentId), (rows) => rows.size >= 1);
    assert.deepEqual([...status.entries()], [[`${agentId}-status-1`, 1]]);

    // Columns come from the schema mapping: spot-check one row of each kind.
    const [row] = await query<{ device_id: string; metric: string; value: number; source: string }>(
      stack.questdbHttp,
      `select device_id, metric, value, source from device_telemetry where event_id = '${agentId}-dev-a-5'`,
    );
    assert.deepEqual(row, { device_id: 'dev-a', metric: 'temperature', value: 20.5, source: 'mqtt' });
    const [appRow] = await query<{ event_type: string; user_id: string; location: string; properties: string }>(
      stack.questdbHttp,
      `select event_type, user_id, location, properties from app_events where event_id = '${agentId}-app-7'`,
    );
    assert.deepEqual({ ...appRow, properties: JSON.parse(appRow!.properties) }, { event_type: 'video_play', user_id: 'user-2', location: 'DE', properties: { content_id: 'c-0' } });

    // The agent dead-lettered each invalid event with its reason.
    const health = (await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { outbox: { deadLetters: number } };
    assert.equal(health.outbox.deadLetters, 4 + 1 + 1 + 1);
  });
});
