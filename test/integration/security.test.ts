/**
 * The secure stack, for real: a 3-node NATS cluster with TLS (clients and routes) and nkey users, and QuestDB with
 * passwords and a read-only analyst, all made by deploy/security/make-security.ts. An edge agent and a hub worker
 * run over TLS with their own users and events arrive in QuestDB. Then every kind of unauthorized access is tried:
 * each is refused, logged by the server, and writes nothing (checked in QuestDB and in the streams).
 *
 * It starts its own stack (on free ports, in a temporary folder), so the shared test stack keeps running plain.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { createUser } from '@nats-io/nkeys';
import { connect, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import pg from 'pg';
import { makeSecurity, readQuestDbCredentials, type SecurityPaths } from '../../deploy/security/make-security.js';
import { questdbAuthHeaders, startStack, type StackHandle } from '../../scripts/lib/stack.js';
import { DLQ_STREAM, EVENTS_STREAM } from '../../shared/wire.js';
import { agentPorts, freePort, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const root = mkdtempSync(join(tmpdir(), 'secure-stack-'));
const run = Date.now().toString(36);
const edgeA = `sec-a-${run}`;
const edgeB = `sec-b-${run}`;
const EVENTS = 40;

let secrets: SecurityPaths;
let stack: StackHandle;
let hub: ManagedProcess;
let agent: ManagedProcess;
let ports: AgentPorts;
let hubNc: NatsConnection;
let auth: Record<string, string>;

const seed = (file: string): Uint8Array => new TextEncoder().encode(readFileSync(file, 'utf8').trim());
const natsLogs = (): string => ['nats-1', 'nats-2', 'nats-3'].map((n) => readFileSync(join(stack.dir, 'logs', `${n}.log`), 'utf8')).join('\n');
const edgeConnect = (agentId: string): Promise<NatsConnection> =>
  connect({
    servers: stack.natsUrls,
    tls: { caFile: secrets.caFile },
    authenticator: nkeyAuthenticator(seed(secrets.edgeSeedFile(agentId))),
    inboxPrefix: `_INBOX_${agentId}`,
    name: `attacker-as-${agentId}`,
  });
const rowsOf = async (agentId: string): Promise<number> =>
  Number((await query<{ n: number }>(stack.questdbHttpUrl, `select count() n from app_events where agent_id = '${agentId}'`, auth))[0]?.n ?? 0);

function appEvent(i: number) {
  return {
    event_id: `${edgeA}-${i}`,
    event_type: 'video_play',
    user_id: `user-${i % 5}`,
    session_id: 's-1',
    timestamp: new Date(Date.now() - 10_000 + i).toISOString(),
    properties: { content_id: `c-${i % 7}` },
    context: { device_type: 'tv', location: 'DE' },
  };
}

before(async () => {
  secrets = makeSecurity({ out: join(root, 'secrets'), hosts: ['127.0.0.1', 'localhost'], edges: [edgeA, edgeB], schemaBucket: 'schemas', days: 2 });
  const p = async (): Promise<[number, number, number]> => [await freePort(), await freePort(), await freePort()];
  stack = await startStack({
    dir: join(root, 'stack'),
    security: secrets.dir,
    ports: { natsClient: await p(), natsCluster: await p(), natsMonitor: await p(), questdbHttp: await freePort(), questdbPg: await freePort() },
  });
  auth = questdbAuthHeaders(secrets.dir);
  const credentials = readQuestDbCredentials(secrets.dir);
  hub = await startHub('secure', stack.natsUrls, stack.questdbHttpUrl, {
    HUB_NATS__NKEY_SEED_FILE: secrets.hubSeedFile,
    HUB_NATS__TLS__CA_FILE: secrets.caFile,
    HUB_QUESTDB__USERNAME: credentials.hub.user,
    HUB_QUESTDB__PASSWORD: credentials.hub.password,
  });
  ports = await agentPorts();
  agent = await startAgent(edgeA, stack.natsUrls, ports, join(root, 'agent'), {
    EDGE_NATS__NKEY_SEED_FILE: secrets.edgeSeedFile(edgeA),
    EDGE_NATS__TLS__CA_FILE: secrets.caFile,
  });
  hubNc = await connect({ servers: stack.natsUrls, tls: { caFile: secrets.caFile }, authenticator: nkeyAuthenticator(seed(secrets.hubSeedFile)) });
});

after(async () => {
  await hubNc?.close();
  await agent?.stop();
  await hub?.stop();
  await stack?.stop();
  if (!process.env.KEEP_SECURE_STACK) rmSync(root, { recursive: true, force: true });
});

describe('secure stack: TLS, per-edge NATS users, QuestDB users', () => {
  test('an edge agent and a hub with their own users move events over TLS into QuestDB', async () => {
    const body = Array.from({ length: EVENTS }, (_, i) => JSON.stringify(appEvent(i))).join('\n');
    const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    assert.equal(response.status, 200, await response.text());
    const rows = await waitFor(() => rowsOf(edgeA), (n) => n === EVENTS, 60_000);
    assert.equal(rows, EVENTS, 'every event the agent accepted is in QuestDB');
    const health = (await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { publisher?: { messagesPublished?: number } };
    assert.ok((health.publisher?.messagesPublished ?? 0) > 0, 'the agent published over TLS');
    // A refused event travels as a dead letter on the agent's own DLQ subject, which its user may publish to.
    const bad = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...appEvent(999), user_id: 42 }) });
    assert.equal(bad.status, 400);
    const jsm = await jetstreamManager(hubNc);
    const letters = await waitFor(
      async () => (await jsm.streams.info(DLQ_STREAM, { subjects_filter: `dlq.${edgeA}` })).state.subjects?.[`dlq.${edgeA}`] ?? 0,
      (n) => n >= 1,
      30_000,
    );
    assert.equal(letters, 1, 'the dead letter reached the DLQ stream');
  });

  test('NATS refuses a connection without credentials, with an unknown key, or without TLS', async () => {
    await assert.rejects(connect({ servers: stack.natsUrls, tls: { caFile: secrets.caFile }, maxReconnectAttempts: 0 }), /authorization/i);
    const stranger = createUser();
    await assert.rejects(
      connect({ servers: stack.natsUrls, tls: { caFile: secrets.caFile }, authenticator: nkeyAuthenticator(stranger.getSeed()), maxReconnectAttempts: 0 }),
      /authorization/i,
    );
    // Plain TCP with a valid-looking publish: the server demands TLS and closes the connection.
    const port = Number(new URL(stack.natsUrls[0]!).port);
    const reply = await new Promise<string>((resolve) => {
      let text = '';
      const socket = tcpConnect({ host: '127.0.0.1', port }, () => {
        socket.write(`CONNECT {"verbose":false,"pedantic":false}\r\nPUB events.${edgeA}.0 2\r\nhi\r\n`);
      });
      socket.on('data', (d) => (text += d.toString()));
      socket.on('close', () => resolve(text));
      socket.on('error', () => undefined);
      setTimeout(() => socket.destroy(), 5000);
    });
    assert.match(reply, /"tls_required":true/, 'the server announces that TLS is required');
    assert.doesNotMatch(reply, /\+OK|PONG|MSG/, 'nothing but the greeting in plain text');
    const log = await waitFor(async () => natsLogs(), (l) => l.includes(`authentication error - Nkey "${stranger.getPublicKey()}"`), 10_000);
    assert.ok(log.includes(`authentication error - Nkey "${stranger.getPublicKey()}"`), 'a refused key is logged with the key');
    assert.match(log, /authentication error\n/, 'a refused anonymous login is logged');
    assert.match(log, /TLS required for client connections/);
  });

  test('an edge user may publish only its own subjects and cannot touch the streams', async () => {
    const nc = await edgeConnect(edgeA);
    const errors: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'error') errors.push(String(s.error));
    })();
    try {
      const js = jetstream(nc, { timeout: 2000 });
      const stolen = new TextEncoder().encode(JSON.stringify({ forged: true }));
      // Another edge's subject (it would be read as that edge's events), the hub's DLQ, and the JetStream API.
      await assert.rejects(js.publish(`events.${edgeB}.0`, stolen, { msgID: `forged-${run}` }), 'publish to another edge');
      await assert.rejects(js.publish(`dlq.hub.invalid_event`, stolen), 'publish to the hub DLQ');
      await assert.rejects(nc.request(`$JS.API.STREAM.DELETE.${EVENTS_STREAM}`, undefined, { timeout: 2000 }), 'delete EVENTS');
      await assert.rejects(nc.request(`$JS.API.STREAM.PURGE.${EVENTS_STREAM}`, undefined, { timeout: 2000 }), 'purge EVENTS');
      await assert.rejects(
        nc.request(`$JS.API.CONSUMER.CREATE.${EVENTS_STREAM}`, JSON.stringify({ stream_name: EVENTS_STREAM, config: { ack_policy: 'none' } }), { timeout: 2000 }),
        'read EVENTS through a consumer',
      );
      await assert.rejects(nc.request('$KV.schemas.telemetry', stolen, { timeout: 2000 }), 'write the schema registry');
      // Subscribing to everyone's events is refused by the server (the subscription closes with an error).
      const sub = nc.subscribe('events.>');
      await assert.rejects(sub.closed.then(() => Promise.reject(new Error('closed'))), 'subscribe to all events');
      // Its own subject still works (the user is restricted, not broken).
      const ack = await js.publish(`events.${edgeA}.0`, new Uint8Array(0), { msgID: `probe-${run}` });
      assert.ok(ack.seq > 0, 'own subject is allowed and stored');
    } finally {
      await nc.close();
    }
    // Logged with the client's name and the user's key: `"v3.4.0:nats.js:attacker-as-<id>" - "$G/nkey:U..." - Publish Violation - Subject "..."`.
    const logged = (kind: string, subject: string): boolean => natsLogs().includes(`${kind} Violation - Subject "${subject}"`);
    await waitFor(async () => logged('Subscription', 'events.>'), (ok) => ok, 10_000);
    const forbidden = [`events.${edgeB}.0`, 'dlq.hub.invalid_event', `$JS.API.STREAM.DELETE.${EVENTS_STREAM}`, `$JS.API.STREAM.PURGE.${EVENTS_STREAM}`, `$JS.API.CONSUMER.CREATE.${EVENTS_STREAM}`, '$KV.schemas.telemetry'];
    for (const subject of forbidden) assert.ok(logged('Publish', subject), `the server logs the refused publish to ${subject}`);
    assert.ok(logged('Subscription', 'events.>'), 'the server logs the refused subscription');
    assert.match(natsLogs(), new RegExp(`attacker-as-${edgeA}" - "\\$G/nkey:U[A-Z2-7]+" - Publish Violation`), 'with who it was');
    assert.ok(errors.some((e) => /permissions violation/i.test(e)), `the client is told: ${errors.join('; ')}`);

    // Nothing was written: the streams are there, nothing arrived as edge B or in the hub's DLQ, no row in QuestDB.
    const jsm = await jetstreamManager(hubNc);
    const events = await jsm.streams.info(EVENTS_STREAM, { subjects_filter: `events.${edgeB}.>` });
    assert.deepEqual(Object.keys(events.state.subjects ?? {}), [], 'no message on edge B subjects');
    const dlq = await jsm.streams.info(DLQ_STREAM, { subjects_filter: 'dlq.hub.>' });
    assert.deepEqual(Object.keys(dlq.state.subjects ?? {}), [], 'no forged hub dead letter');
    await new Promise((r) => setTimeout(r, 1500)); // a forged batch would have reached QuestDB by now
    assert.equal(await rowsOf(edgeB), 0, 'no row as edge B');
    assert.equal(await rowsOf(edgeA), EVENTS, 'the real rows are untouched');
  });

  test('QuestDB: the hub needs its password, analysts read but cannot write', async () => {
    const anonymous = await fetch(`${stack.questdbHttpUrl}/exec?query=${encodeURIComponent('select count() from app_events')}`);
    assert.equal(anonymous.status, 401, 'REST without credentials');
    const ilp = await fetch(`${stack.questdbHttpUrl}/write`, { method: 'POST', body: 'app_events,agent_id=intruder value=1\n' });
    assert.equal(ilp.status, 401, 'ILP without credentials');

    const { analyst, hub: hubUser } = readQuestDbCredentials(secrets.dir);
    const analystClient = new pg.Client({ host: '127.0.0.1', port: stack.questdbPgPort, user: analyst.user, password: analyst.password, database: 'qdb' });
    await analystClient.connect();
    try {
      const rows = await analystClient.query(`select count() n from app_events where agent_id = '${edgeA}'`);
      assert.equal(Number(rows.rows[0]?.n), EVENTS, 'the analyst reads');
      for (const sql of [
        `insert into app_events (ts) values (now())`,
        'create table intruder (x int)',
        'drop table app_events',
        `truncate table app_events`,
      ]) {
        await assert.rejects(analystClient.query(sql), /permission denied/i, sql);
      }
    } finally {
      await analystClient.end();
    }
    const wrong = new pg.Client({ host: '127.0.0.1', port: stack.questdbPgPort, user: hubUser.user, password: 'not-the-password', database: 'qdb' });
    await assert.rejects(wrong.connect(), /invalid username\/password/i);
    await wrong.end().catch(() => undefined);
    assert.equal(await rowsOf('intruder'), 0, 'nothing was written by the refused attempts');
    assert.equal(await rowsOf(edgeA), EVENTS);
  });
});
