/**
 * Who may connect, publish and how much, against the real agent process on the real stack, while valid traffic
 * flows beside it: MQTT credentials, client ids, wills, topic ACLs, topic depth, packet size and connection limits;
 * HTTP API keys and rate limits. The agent runs with device credentials, per-device topic ACLs, named API keys and
 * small limits; a valid MQTT and HTTP stream (test/support/valid-traffic.ts) runs for the whole test. Each case
 * checks the answer the sender gets (CONNACK code, closed connection, SUBACK 0x80, HTTP status and EDGE_ERR_* code)
 * and that nothing was stored for it. At the end SQL shows that every valid event arrived exactly once and none of
 * the bad ones did, and that the valid stream never saw an error.
 *
 * Bad content (malformed JSON, wrong types, NaN, huge values, deep nesting, bad UTF-8, ILP specials, unknown types,
 * timestamps, oversize and empty bodies) is one table in edge-bad-input-table.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { hashPassword } from '../../edge-agent/src/sources/mqtt-auth.js';
import { testStack } from '../support/env.js';
import { agentPorts, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, rowsPerEventId, waitFor } from '../support/questdb.js';
import { startValidTraffic, type ValidTraffic } from '../support/valid-traffic.js';

const stack = testStack();
const agentId = `badin-${Date.now().toString(36)}`;
const now = Date.now();
const PASSWORD_A = randomBytes(12).toString('base64url');
const PASSWORD_B = randomBytes(12).toString('base64url');
const KEY_MAIN = `main-${randomBytes(16).toString('hex')}`;
const KEY_TINY = `tiny-${randomBytes(16).toString('hex')}`;

let hub: ManagedProcess;
let agent: ManagedProcess;
let ports: AgentPorts;
let dataDir: string;
let traffic: ValidTraffic;

// Ids of everything valid that was acknowledged; bad events carry `-bad-` in their id so SQL can look for them.
const validTelemetry = new Set<string>();
const validApp = new Set<string>();
let badSeq = 0;
const badId = () => `${agentId}-bad-${badSeq++}`;

function reading(device: string, id: string, extra: Record<string, unknown> = {}) {
  return { event_id: id, device_id: device, timestamp: now - 60_000 + (badSeq % 1000), metric: 'temperature', value: 21.5, ...extra };
}

function appEvent(id: string, extra: Record<string, unknown> = {}) {
  return { event_id: id, event_type: 'video_play', user_id: 'user-1', session_id: 's-1', timestamp: new Date(now - 30_000).toISOString(), ...extra };
}

// --- clients -------------------------------------------------------------------------------------------------

const mqttUrl = () => `mqtt://127.0.0.1:${ports.mqtt}`;
const deviceA = (clientId = 'dev-a', extra: IClientOptions = {}): IClientOptions => ({ clientId, username: 'dev-a', password: PASSWORD_A, reconnectPeriod: 0, ...extra });

/** CONNACK return code (0 = connected, then disconnected again), or -1 when closed without a CONNACK. */
async function connackCode(options: IClientOptions): Promise<number> {
  try {
    const client = await mqtt.connectAsync(mqttUrl(), { reconnectPeriod: 0, connectTimeout: 5000, ...options }, false);
    await client.endAsync();
    return 0;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'number' ? code : -1; // a socket error (ECONNRESET) or close: no CONNACK
  }
}

function whenClosed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()));
}

/** POSTs to /v1/events with the main client's key, another key, or none (`null`). */
async function post(body: string | Buffer, headers: Record<string, string> = {}, key: string | null = KEY_MAIN) {
  const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { 'x-api-key': key } : {}), ...headers },
    body: typeof body === 'string' ? body : new Uint8Array(body),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // not JSON; the assertion on status will say so
  }
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: json as { code?: string; error?: string; accepted?: number; rejected?: Array<{ index: number; code: string; reason: string; field?: string }> } };
}

// --- dead letters, straight from the agent's outbox file ----------------------------------------------------

interface DeadLetterRow {
  id: number;
  code: string;
  reason: string;
  origin: string | null;
}
let deadLetterCursor = 0;

/** Dead letters stored since the last call. */
function newDeadLetters(): DeadLetterRow[] {
  const db = new Database(join(dataDir, `outbox-${agentId}.db`), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('SELECT id, code, reason, origin FROM dead_letters WHERE id > ? ORDER BY id').all(deadLetterCursor) as DeadLetterRow[];
    if (rows.length > 0) deadLetterCursor = rows.at(-1)!.id;
    return rows;
  } finally {
    db.close();
  }
}

// --- setup ----------------------------------------------------------------------------------------------------

before(async () => {
  hub = await startHub('bad-input', stack.natsUrls, stack.questdbHttp);
  ports = await agentPorts();
  dataDir = mkdtempSync(join(tmpdir(), 'agent-'));
  agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, {
    EDGE_SOURCES__MQTT__AUTH: JSON.stringify({
      mode: 'credentials',
      devices: [
        { username: 'dev-a', deviceId: 'dev-a', passwordHash: await hashPassword(PASSWORD_A) },
        { username: 'dev-b', deviceId: 'dev-b', password: PASSWORD_B },
      ],
    }),
    EDGE_SOURCES__MQTT__MAXCONNECTIONS: '6',
    EDGE_SOURCES__MQTT__MAXPAYLOADBYTES: '8192',
    EDGE_SOURCES__MQTT__MAXPACKETBYTES: '65536',
    EDGE_SOURCES__MQTT__MAXTOPICLEVELS: '6',
    EDGE_SOURCES__HTTP__BODYLIMITBYTES: '262144',
    EDGE_SOURCES__HTTP__MAXEVENTBYTES: '4096',
    EDGE_SOURCES__HTTP__APIKEYS: JSON.stringify([
      { name: 'backend-main', key: KEY_MAIN },
      { name: 'tiny-quota', key: KEY_TINY, eventsPerSecond: 0.5, eventsBurst: 3 },
    ]),
  });
  traffic = await startValidTraffic({
    idPrefix: agentId,
    mqttUrl: mqttUrl(),
    mqttOptions: deviceA('dev-a/stream'),
    device: 'dev-a',
    httpUrl: `http://127.0.0.1:${ports.http}/v1/events`,
    httpHeaders: { 'x-api-key': KEY_MAIN },
    baseMs: now,
  });
  newDeadLetters(); // start the cursor (nothing yet)
});

after(async () => {
  await traffic?.stop();
  await agent?.stop();
  await hub?.stop();
});

// --- the cases -------------------------------------------------------------------------------------------------

interface HttpCase {
  name: string;
  send: () => Promise<Awaited<ReturnType<typeof post>>>;
  status: number;
  code: string;
  reason?: RegExp;
}

const httpCases: HttpCase[] = [
  { name: 'unknown API key', send: () => post(JSON.stringify(appEvent(badId())), {}, `wrong-${randomBytes(16).toString('hex')}`), status: 401, code: 'EDGE_ERR_AUTH_FAILED', reason: /unknown API key/ },
  { name: 'missing API key', send: () => post(JSON.stringify(appEvent(badId())), {}, null), status: 401, code: 'EDGE_ERR_AUTH_FAILED', reason: /missing API key/ },
];

describe('clients that may not send, or not that much, are refused with a clear reason while valid traffic flows', () => {
  test('mqtt: wrong, unknown and missing credentials get CONNACK 4 / 5', async () => {
    assert.equal(await connackCode({ clientId: 'dev-a', username: 'dev-a', password: 'not-the-password' }), 4);
    assert.equal(await connackCode({ clientId: 'dev-a', username: 'mallory', password: PASSWORD_A }), 4);
    assert.equal(await connackCode({ clientId: 'dev-b', username: 'dev-b', password: PASSWORD_A }), 4);
    assert.equal(await connackCode({ clientId: 'dev-a' }), 5);
  });

  test('mqtt: a client id belonging to another device gets CONNACK 2', async () => {
    assert.equal(await connackCode(deviceA('dev-b')), 2);
    assert.equal(await connackCode(deviceA('dev-a/stream-but-longer-than-it-should-be-'.padEnd(200, 'x'))), 2);
  });

  test('mqtt: a will on another device\'s topic gets CONNACK 5', async () => {
    const will = { topic: 'devices/dev-b/status', payload: Buffer.from(JSON.stringify({ device_id: 'dev-b', timestamp: now, status: 'offline', event_id: badId() })), qos: 1 as const, retain: false };
    assert.equal(await connackCode(deviceA('dev-a/will', { will })), 5);
  });

  test('mqtt: publishing on another device\'s topic closes the connection and stores nothing', async () => {
    newDeadLetters();
    const client = await mqtt.connectAsync(mqttUrl(), deviceA('dev-a/acl'));
    const ok = `${agentId}-mqtt-acl-ok`;
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(reading('dev-a', ok)), { qos: 1 });
    validTelemetry.add(ok);
    const closed = whenClosed(client);
    client.publish('devices/dev-b/telemetry', JSON.stringify(reading('dev-b', badId())), { qos: 1 });
    await closed;
    client.end(true);
    assert.deepEqual(newDeadLetters(), [], 'not even a dead letter');
  });

  test('mqtt: subscribing to other devices\' topics gets SUBACK 0x80, its own topics are granted', async () => {
    const client = await mqtt.connectAsync(mqttUrl(), deviceA('dev-a/sub'));
    const refused = await client.subscribeAsync({ 'devices/dev-a/commands': { qos: 1 }, 'devices/+/telemetry': { qos: 1 }, '#': { qos: 0 } }).then(
      () => undefined,
      (error: { packet?: { granted?: number[] } }) => error.packet?.granted,
    );
    assert.deepEqual(refused, [1, 128, 128]);
    assert.ok(client.connected);
    await client.endAsync();
  });

  test('mqtt: a topic deeper than maxTopicLevels closes the connection and stores nothing', async () => {
    newDeadLetters();
    const client = await mqtt.connectAsync(mqttUrl(), deviceA('dev-a/deep'));
    const closed = whenClosed(client);
    client.publish('devices/dev-a/telemetry/a/b/c/d', JSON.stringify(reading('dev-a', badId())), { qos: 1 });
    await closed;
    client.end(true);
    assert.deepEqual(newDeadLetters(), []);
  });

  test('mqtt: a packet over maxPacketBytes closes the connection before it is read, and stores nothing', async () => {
    newDeadLetters();
    const client = await mqtt.connectAsync(mqttUrl(), deviceA('dev-a/big'));
    const closed = whenClosed(client);
    client.publish('devices/dev-a/telemetry', JSON.stringify(reading('dev-a', badId(), { unit: 'x'.repeat(200_000) })), { qos: 1 });
    await closed;
    client.end(true);
    assert.deepEqual(newDeadLetters(), []);
  });

  test('mqtt: connections beyond maxConnections are refused; valid devices connect again once there is room', async () => {
    await new Promise((r) => setTimeout(r, 300)); // the previous cases' sockets are closed on the server side
    const open: MqttClient[] = [];
    try {
      // The stream holds one of the 6 slots.
      for (let i = 0; i < 5; i++) open.push(await mqtt.connectAsync(mqttUrl(), deviceA(`dev-a/slot-${i}`)));
      assert.equal(await connackCode(deviceA('dev-a/one-too-many')), -1, 'closed without CONNACK');
    } finally {
      await Promise.all(open.map((c) => c.endAsync()));
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await connackCode(deviceA('dev-a/after')), 0);
  });

  for (const c of httpCases) {
    test(`http: ${c.name} gets ${c.status} ${c.code}`, async () => {
      const response = await c.send();
      assert.equal(response.status, c.status, JSON.stringify(response.body));
      const code = response.body.code ?? response.body.rejected?.[0]?.code;
      assert.equal(code, c.code, JSON.stringify(response.body));
      if (c.reason) assert.match(response.body.error ?? response.body.rejected?.[0]?.reason ?? '', c.reason);
      if (response.body.rejected) assert.equal(response.body.accepted, 0);
    });
  }

  test('http: over its event rate a client gets 429 with Retry-After and nothing is stored; other clients are not slowed', async () => {
    const first = [0, 1, 2].map((i) => `${agentId}-http-tiny-${i}`);
    const accepted = await post(first.map((id) => JSON.stringify(appEvent(id))).join('\n'), { 'content-type': 'application/x-ndjson' }, KEY_TINY);
    assert.equal(accepted.status, 200, 'the burst of 3 passes');
    first.forEach((id) => validApp.add(id));
    const refused = await post([badId(), badId()].map((id) => JSON.stringify(appEvent(id))).join('\n'), { 'content-type': 'application/x-ndjson' }, KEY_TINY);
    assert.equal(refused.status, 429);
    assert.equal(refused.body.code, 'EDGE_ERR_RATE_LIMITED');
    assert.match(refused.body.error ?? '', /tiny-quota exceeded 0.5 events\/s .*nothing was stored/);
    // Two events missing at 0.5/s: 4 s, minus whatever refilled between the two requests.
    assert.ok(['3', '4'].includes(refused.retryAfter ?? ''), `Retry-After ${refused.retryAfter}`);
    // The main client at the same moment:
    const other = `${agentId}-http-other`;
    assert.equal((await post(JSON.stringify(appEvent(other)))).status, 200);
    validApp.add(other);
  });

  test('the agent logged the refusals with their codes', () => {
    const log = readFileSync(agent.logFile, 'utf8');
    for (const code of ['EDGE_ERR_AUTH_FAILED', 'EDGE_ERR_CLIENT_ID_REJECTED', 'EDGE_ERR_NOT_AUTHORIZED', 'EDGE_ERR_TOPIC_TOO_DEEP', 'EDGE_ERR_TOO_LARGE', 'EDGE_ERR_TOO_MANY_CONNECTIONS', 'EDGE_ERR_RATE_LIMITED']) {
      assert.ok(log.includes(`"code":"${code}"`), `a log line with ${code}`);
    }
    assert.match(log, /"client":"tiny-quota"/, 'HTTP logs name the API key');
  });

  test('every valid event arrived exactly once, no bad one did, and the valid stream never saw an error', async (t) => {
    // A real stream ran beside every case: at least 50 of each acknowledged before it stops.
    await waitFor(async () => Math.min(traffic.telemetry.size, traffic.app.size), (n) => n >= 50, 20_000);
    await traffic.stop();
    traffic.telemetry.forEach((id) => validTelemetry.add(id));
    traffic.app.forEach((id) => validApp.add(id));
    t.diagnostic(`valid: ${validTelemetry.size} MQTT readings, ${validApp.size} HTTP app events; bad sent: ${badSeq} with -bad- ids`);
    assert.deepEqual(traffic.errors, []);
    assert.equal(traffic.disconnects(), 1, 'the streaming device stayed connected until it ended (one close, at the end)');
    assert.ok(validTelemetry.size >= 50 && validApp.size >= 50, `a real stream ran (${validTelemetry.size} readings, ${validApp.size} app events)`);

    const telemetry = await waitFor(() => rowsPerEventId(stack.questdbHttp, 'device_telemetry', agentId), (rows) => rows.size >= validTelemetry.size, 60000);
    assert.deepEqual([...telemetry.keys()].sort(), [...validTelemetry].sort());
    assert.ok([...telemetry.values()].every((n) => n === 1), 'no reading is stored twice');

    const app = await waitFor(() => rowsPerEventId(stack.questdbHttp, 'app_events', agentId), (rows) => rows.size >= validApp.size, 60000);
    assert.deepEqual([...app.keys()].sort(), [...validApp].sort());
    assert.ok([...app.values()].every((n) => n === 1), 'no app event is stored twice');

    for (const table of ['device_telemetry', 'device_status', 'app_events']) {
      const bad = await query<{ n: number }>(stack.questdbHttp, `select count() n from ${table} where agent_id = '${agentId}' and event_id like '%-bad-%'`).catch(() => [{ n: 0 }]);
      assert.equal(Number(bad[0]?.n ?? 0), 0, `no bad event in ${table}`);
    }
    const health = (await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { status: string };
    assert.equal(health.status, 'ok', 'the agent is healthy after all of it');
  });
});
