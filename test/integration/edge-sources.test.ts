/**
 * The pull sources end to end on the real stack: a real agent process tails NDJSON, CSV and raw log files,
 * replays a spool folder, bridges an external MQTT broker (an aedes broker in this test process, standing in for
 * Mosquitto: nothing to install) and polls a SQLite table; a real hub writes to QuestDB. SQL then shows every
 * record exactly once, also across a graceful restart (offsets and the broker session remembered, input that
 * arrived meanwhile taken) and a SIGKILL (what is read again collapses in QuestDB's dedup).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { testStack } from '../support/env.js';
import { agentPorts, freePort, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const agentId = `src-${Date.now().toString(36)}`;
const base = Date.now() - 600_000;
const work = mkdtempSync(join(tmpdir(), 'edge-sources-'));
const dataDir = join(work, 'agent');
const files = {
  ndjson: join(work, 'events.ndjson'),
  csv: join(work, 'meter.csv'),
  log: join(work, 'app.log'),
  spool: join(work, 'spool'),
  db: join(work, 'plc.db'),
};

let hub: ManagedProcess | undefined;
let agent: ManagedProcess | undefined;
let ports: AgentPorts;
let broker: Aedes;
let brokerServer: Server;
let brokerPort: number;
let db: Database.Database;

/** What the test wrote, by where it should land. */
const expected = { telemetry: new Set<string>(), raw: new Set<string>(), sqlValues: new Set<number>() };

function agentEnv(): Record<string, string> {
  return {
    EDGE_SOURCES__MQTTBRIDGE__ENABLED: 'true',
    EDGE_SOURCES__MQTTBRIDGE__URL: `mqtt://127.0.0.1:${brokerPort}`,
    EDGE_SOURCES__MQTTBRIDGE__RECONNECTINITIALMS: '100',
    EDGE_SOURCES__MQTTBRIDGE__SUBSCRIPTIONS: JSON.stringify([
      { topic: 'plant/+/telemetry', type: 'device.telemetry', keyLevel: 1, format: 'json' },
      { topic: 'plant/+/log', keyLevel: 1, format: 'raw' },
    ]),
    EDGE_SOURCES__FILE__ENABLED: 'true',
    EDGE_SOURCES__FILE__POLLINTERVALMS: '100',
    EDGE_SOURCES__FILE__MAXLINESPERSUBMIT: '50',
    EDGE_SOURCES__FILE__INPUTS: JSON.stringify([
      { path: files.ndjson, format: 'ndjson', type: 'device.telemetry' },
      { path: files.csv, format: 'csv', type: 'device.telemetry' },
      { path: files.log, format: 'raw', sourceId: 'gw-log' },
      { path: files.spool, mode: 'replay', extension: '.ndjson', format: 'ndjson', type: 'device.telemetry' },
    ]),
    EDGE_SOURCES__SQLPOLL__ENABLED: 'true',
    EDGE_SOURCES__SQLPOLL__POLLINTERVALMS: '200',
    EDGE_SOURCES__SQLPOLL__TABLES: JSON.stringify([
      {
        database: files.db,
        table: 'readings',
        positionColumn: 'id',
        type: 'device.telemetry',
        batchRows: 100,
        columns: { dev: 'device_id', ts: 'timestamp', metric: 'metric', val: 'value' },
      },
    ]),
  };
}

before(async () => {
  mkdirSync(files.spool);
  broker = await Aedes.createBroker();
  brokerPort = await freePort();
  brokerServer = createServer(broker.handle);
  await new Promise<void>((resolve) => brokerServer.listen(brokerPort, '127.0.0.1', resolve));
  db = new Database(files.db);
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE readings (id INTEGER PRIMARY KEY, dev TEXT NOT NULL, ts INTEGER NOT NULL, metric TEXT NOT NULL, val REAL NOT NULL)');
  hub = await startHub('sources', stack.natsUrls, stack.questdbHttp);
  ports = await agentPorts();
});

after(async () => {
  await agent?.stop();
  await hub?.stop();
  db?.close();
  await new Promise<void>((r) => (brokerServer ? brokerServer.close(() => r()) : r()));
  await new Promise<void>((r) => (broker ? broker.close(() => r()) : r()));
  rmSync(work, { recursive: true, force: true });
});

// --- input writers: each records what must arrive -------------------------------------------------------------

let seq = 0;
function telemetry(prefix: string, extra: Record<string, unknown> = {}) {
  const n = seq++;
  const event = { event_id: `${agentId}-${prefix}-${n}`, device_id: `${prefix}-${n % 4}`, timestamp: base + n, metric: 'temp', value: n / 10, ...extra };
  expected.telemetry.add(event.event_id);
  return event;
}

function appendNdjson(count: number): void {
  appendFileSync(files.ndjson, Array.from({ length: count }, () => JSON.stringify(telemetry('nd')) + '\n').join(''));
}

function appendCsv(count: number): void {
  const rows = Array.from({ length: count }, () => {
    const e = telemetry('csv');
    return `${e.event_id},${e.device_id},${e.timestamp},${e.metric},${e.value},"C"\n`;
  });
  appendFileSync(files.csv, rows.join(''));
}

let logLine = 0;
function appendLog(count: number, path = files.log): void {
  const lines = Array.from({ length: count }, () => `${new Date().toISOString()} INFO worker ${agentId} line ${logLine++}`);
  lines.forEach((l) => expected.raw.add(l));
  appendFileSync(path, lines.map((l) => l + '\n').join(''));
}

let spoolFile = 0;
function spool(count: number): void {
  const name = `batch-${String(spoolFile++).padStart(3, '0')}.ndjson`;
  const body = Array.from({ length: count }, () => JSON.stringify(telemetry('rp')) + '\n').join('');
  // Spool folders get complete files: write, then rename into place.
  writeFileSync(join(work, name), body);
  renameSync(join(work, name), join(files.spool, name));
}

let sqlId = 1;
function insertRows(count: number): void {
  const stmt = db.prepare('INSERT INTO readings (id, dev, ts, metric, val) VALUES (?, ?, ?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < count; i++, sqlId++) {
      // No event_id: the agent derives one from the content, which differs by value.
      stmt.run(sqlId, `sql-${sqlId % 3}`, base + sqlId, 'pressure', sqlId);
      expected.sqlValues.add(sqlId);
    }
  })();
}

let mqttMessage = 0;
async function publishMqtt(messages: number): Promise<void> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${brokerPort}`, { clientId: `${agentId}-pub-${mqttMessage}` });
  for (let m = 0; m < messages; m++, mqttMessage++) {
    const device = `mq-${mqttMessage % 3}`;
    const events = [0, 1, 2].map(() => telemetry('mq', { device_id: device }));
    await client.publishAsync(`plant/${device}/telemetry`, JSON.stringify(events), { qos: 1 });
    const line = `plain text from ${device} #${mqttMessage} (not JSON)`;
    expected.raw.add(line);
    await client.publishAsync(`plant/${device}/log`, line, { qos: 1 });
  }
  await client.endAsync();
}

/** aedes keeps its connected clients in `clients` (not in its type declarations). */
function bridgeSubscribed(): boolean {
  const clients = (broker as unknown as { clients: Record<string, { subscriptions?: object } | undefined> }).clients;
  return Object.keys(clients[`${agentId}-bridge`]?.subscriptions ?? {}).length === 2;
}

function expectedCount(): number {
  return expected.telemetry.size + expected.raw.size + expected.sqlValues.size;
}

/** The agent's own counters (its /healthz). */
async function agentCounters(): Promise<{ accepted: number; rejected: number }> {
  const health = (await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { ingest: { accepted: number; rejected: number } };
  return { accepted: health.ingest.accepted, rejected: health.ingest.rejected };
}

// --- assertions by SQL ---------------------------------------------------------------------------------------------

async function telemetryCounts(): Promise<Map<string, number>> {
  const rows = await query<{ event_id: string; n: number }>(
    stack.questdbHttp,
    `select event_id, count() n from device_telemetry where agent_id = '${agentId}' and device_id not like 'sql-%' group by event_id`,
  );
  return new Map(rows.map((r) => [r.event_id, Number(r.n)]));
}

async function rawCounts(): Promise<Map<string, number>> {
  const rows = await query<{ data: string; n: number }>(stack.questdbHttp, `select data, count() n from raw_blobs where agent_id = '${agentId}' group by data`);
  return new Map(rows.map((r) => [r.data, Number(r.n)]));
}

async function sqlCounts(): Promise<Map<number, number>> {
  const rows = await query<{ value: number; n: number }>(
    stack.questdbHttp,
    `select value, count() n from device_telemetry where agent_id = '${agentId}' and device_id like 'sql-%' group by value`,
  );
  return new Map(rows.map((r) => [Number(r.value), Number(r.n)]));
}

/** Waits until QuestDB holds every expected record, then checks: each exactly once, nothing else. */
async function assertExactlyOnce(phase: string): Promise<void> {
  const rowsOf = (m: Map<unknown, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  await waitFor(telemetryCounts, (m) => rowsOf(m) >= expected.telemetry.size, 90000);
  await waitFor(rawCounts, (m) => rowsOf(m) >= expected.raw.size, 30000);
  await waitFor(sqlCounts, (m) => rowsOf(m) >= expected.sqlValues.size, 30000);
  // Late duplicates would need another moment to show.
  await new Promise((r) => setTimeout(r, 1500));
  const [t, r, s] = await Promise.all([telemetryCounts(), rawCounts(), sqlCounts()]);
  assert.deepEqual([...t.keys()].sort(), [...expected.telemetry].sort(), `${phase}: the telemetry events from files, CSV, spool and MQTT`);
  assert.deepEqual([...t.entries()].filter(([, n]) => n !== 1), [], `${phase}: no telemetry event twice`);
  assert.deepEqual([...r.keys()].sort(), [...expected.raw].sort(), `${phase}: the raw log lines and MQTT text payloads`);
  assert.deepEqual([...r.entries()].filter(([, n]) => n !== 1), [], `${phase}: no raw payload twice`);
  assert.deepEqual([...s.keys()].sort((a, b) => a - b), [...expected.sqlValues].sort((a, b) => a - b), `${phase}: the polled rows`);
  assert.deepEqual([...s.entries()].filter(([, n]) => n !== 1), [], `${phase}: no polled row twice`);
}

test('files, CSV, a spool folder, an external MQTT broker and a SQLite table arrive exactly once, across restarts', async () => {
  // Before the first start: there is a backlog in every input.
  appendNdjson(40);
  writeFileSync(files.csv, 'event_id,device_id,timestamp,metric,value,unit\n');
  appendCsv(30);
  appendLog(20);
  appendFileSync(files.log, '\n'); // blank lines are skipped
  spool(15);
  spool(15);
  insertRows(50);
  agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, agentEnv());
  // While it runs: more of everything. MQTT once the bridge has subscribed: before that, the broker has nobody
  // to keep a message for.
  await waitFor(async () => bridgeSubscribed(), (ok) => ok, 30000);
  await waitFor(async () => (await telemetryCounts()).size, (n) => n > 0, 30000);
  appendNdjson(20);
  appendCsv(10);
  appendLog(10);
  await publishMqtt(10);
  insertRows(25);
  await assertExactlyOnce('first run');

  const [sample] = await query<{ source: string; data: string; encoding: string; size: number; source_id: string }>(
    stack.questdbHttp,
    `select source, data, encoding, size, source_id from raw_blobs where agent_id = '${agentId}' and origin = '${files.log}' limit 1`,
  );
  assert.equal(sample?.source, 'file');
  assert.equal(sample?.encoding, 'utf8');
  assert.equal(sample?.source_id, 'gw-log');
  assert.equal(sample?.size, Buffer.byteLength(sample!.data));
  const [bridged] = await query<{ source: string; source_id: string }>(
    stack.questdbHttp,
    `select source, source_id from raw_blobs where agent_id = '${agentId}' and origin like 'plant/%' limit 1`,
  );
  assert.equal(bridged?.source, 'mqtt-bridge');
  assert.match(bridged?.source_id ?? '', /^mq-\d$/, 'a bridged raw payload is keyed by the topic level of the device');

  // Graceful restart: input that arrives while the agent is down is taken after it, nothing read before again.
  assert.equal(await agent.stop(), 0, 'the agent stops cleanly (every source finished its commit)');
  const before = expectedCount();
  appendNdjson(10);
  appendCsv(10);
  appendLog(5);
  renameSync(files.log, `${files.log}.1`); // rotated while the agent is down
  appendLog(5);
  spool(10);
  insertRows(25);
  await publishMqtt(10); // queued by the broker for the bridge's persistent session
  agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, agentEnv());
  await assertExactlyOnce('after a graceful restart');
  // Not only deduplicated in QuestDB: the restarted agent read exactly the new input, none of the old.
  assert.deepEqual(await agentCounters(), { accepted: expectedCount() - before, rejected: 0 }, 'events the restarted agent committed');

  // SIGKILL while every source is busy: what was committed but not yet remembered is read again and collapses.
  appendNdjson(200);
  appendLog(200);
  insertRows(200);
  const publishing = publishMqtt(20);
  await new Promise((r) => setTimeout(r, 150));
  await agent.kill();
  await publishing;
  agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, agentEnv());
  await assertExactlyOnce('after SIGKILL');
});
