/**
 * Alerts reach a webhook on the real stack, with retry and dedup:
 *   - a CEP alert (an overheating episode planted in the data) and a pipeline alert (an agent that stops reporting:
 *     pipeline.edge_silent) are POSTed to a real HTTP receiver that fails the first two attempts of each with 503; each
 *     arrives after retries, every attempt with the same idempotency-key, and is taken exactly once;
 *   - the pipeline alert is also in the ALERTS stream and in QuestDB's alerts table, once;
 *   - when the agent reports again the alert resolves (an info alert); the receiver is down meanwhile and the hub is
 *     killed with SIGKILL: a new hub process delivers the resolution once the receiver is back (JetStream kept it).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { ALERTS_STREAM } from '../../shared/wire.js';
import { testStack } from '../support/env.js';
import { analyticsHealth, startAnalyticsHub } from '../support/analytics-hub.js';
import { agentPorts, startAgent, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const runId = Date.now().toString(36);
const agentId = `alerting-${runId}`;
const hotDevice = `alert-hot-${runId}`;
const dataDir = mkdtempSync(join(tmpdir(), 'alerting-'));

interface Attempt {
  key: string;
  status: number;
  body: { rule: string; key: string; severity: string; ts: number; message: string; details: Record<string, unknown> };
}

/** The webhook receiver: answers 503 to the first `failFirst` attempts of each idempotency key, or to all while down. */
const attempts: Attempt[] = [];
let receiverDown = false;
const failFirst = 2;
let receiver: Server;
let hub: ManagedProcess | undefined;
let agent: ManagedProcess | undefined;
let ports: AgentPorts;
let nc: NatsConnection;
let hubEnv: Record<string, string>;
let hubPort: number;

const forKey = (key: string) => attempts.filter((a) => a.key === key);
const taken = (match: (a: Attempt) => boolean) => attempts.filter((a) => a.status === 200 && match(a));

before(async () => {
  receiver = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (c: Buffer) => chunks.push(c));
    request.on('end', () => {
      const key = String(request.headers['idempotency-key'] ?? '');
      const earlier = forKey(key).length;
      const status = receiverDown || earlier < failFirst ? 503 : 200;
      attempts.push({ key, status, body: JSON.parse(Buffer.concat(chunks).toString()) as Attempt['body'] });
      response.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  hubEnv = {
    HUB_DASHBOARD__INTERVALMS: '500',
    HUB_ALERTING__PIPELINE__EDGESILENTMS: '3000',
    HUB_ALERTING__PIPELINE__FORMS: '1000',
    HUB_ALERTING__WEBHOOKS: JSON.stringify([{ name: `test-${runId}`, url, rules: ['pipeline.edge_silent', 'overheating'], backoffMs: [300, 600] }]),
  };
  // Its own analytics buckets, starting after what EVENTS holds: other tests' events neither delay nor move it.
  hub = (await startAnalyticsHub('alerting', runId, hubEnv)).process;
  hubPort = Number(new URL(hub.healthUrl).port);
  await waitFor(() => analyticsHealth(hubPort), (h) => h.owned.length === 8, 60_000);
  ports = await agentPorts();
  agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, { EDGE_NATS__STATUSINTERVALMS: '500' });
  nc = await connect({ servers: stack.natsUrls });
});

after(async () => {
  await agent?.stop();
  await hub?.stop();
  await nc?.close();
  await new Promise<void>((resolve) => receiver.close(() => resolve()));
});

describe('alerting', () => {
  test('a rule\'s alert reaches the webhook after retries, once, with one idempotency key', async () => {
    const start = Date.now() - 50_000; // the episode ends 18 s ago: behind the watermark the reading of now sets
    const hot = Array.from({ length: 8 }, (_, i) => ({ type: 'device.telemetry', event_id: `${runId}-hot-${i}`, device_id: hotDevice, timestamp: start + i * 4500, metric: 'temperature', value: 90 + i }));
    // A reading of now on the same device moves its partition's watermark past the episode, so the rule decides.
    const later = { type: 'device.telemetry', event_id: `${runId}-later`, device_id: hotDevice, timestamp: Date.now(), metric: 'temperature', value: 20 };
    const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', body: JSON.stringify([...hot, later]) });
    assert.equal(response.status, 200);
    await waitFor(async () => taken((a) => a.body.rule === 'overheating' && a.body.key === hotDevice), (t) => t.length > 0, 60_000);
    const delivered = taken((a) => a.body.rule === 'overheating' && a.body.key === hotDevice);
    assert.equal(delivered.length, 1, 'taken once');
    const tries = forKey(delivered[0]!.key);
    assert.deepEqual(tries.map((t) => t.status), [503, 503, 200], 'two failures retried, then taken');
    assert.equal(delivered[0]!.body.severity, 'critical');
  });

  test('an agent that stops reporting raises pipeline.edge_silent: webhook, ALERTS stream and QuestDB, each once', async () => {
    await agent!.stop();
    agent = undefined;
    const silent = (a: Attempt) => a.body.rule === 'pipeline.edge_silent' && a.body.key === agentId && a.body.details.state === 'firing';
    await waitFor(async () => taken(silent), (t) => t.length > 0, 30_000);
    await new Promise((r) => setTimeout(r, 2000)); // room for a duplicate to show
    const delivered = taken(silent);
    assert.equal(delivered.length, 1);
    assert.deepEqual(forKey(delivered[0]!.key).map((t) => t.status), [503, 503, 200]);
    assert.match(delivered[0]!.body.message, new RegExp(`agent ${agentId} silent for \\d+ s`));

    const rows = await waitFor(
      () => query<{ severity: string; message: string; rule_version: string }>(stack.questdbHttp, `select severity, message, rule_version from alerts where rule = 'pipeline.edge_silent' and key = '${agentId}'`),
      (r) => r.length > 0,
      15_000,
    );
    assert.equal(rows.length, 1, 'one row in QuestDB');
    assert.equal(rows[0]!.severity, 'critical');
    assert.match(rows[0]!.rule_version, /^[0-9a-f]{16}$/, 'lineage: the thresholds that raised it');
    const info = await (await jetstreamManager(nc)).streams.getMessage(ALERTS_STREAM, { last_by_subj: 'alerts.pipeline_edge_silent' });
    assert.ok(info, 'in the ALERTS stream');
    assert.equal(info!.header?.get('Nats-Msg-Id'), delivered[0]!.key, 'the webhook\'s idempotency key is the stream\'s message id');
  });

  test('the resolution waits in JetStream while the receiver is down and the hub is killed, then arrives once', async () => {
    receiverDown = true;
    agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, { EDGE_NATS__STATUSINTERVALMS: '500' });
    const resolved = (a: Attempt) => a.body.rule === 'pipeline.edge_silent' && a.body.key === agentId && a.body.details.state === 'resolved';
    await waitFor(async () => attempts.filter(resolved), (a) => a.length >= 2, 30_000);
    hub!.child.kill('SIGKILL');
    await hub!.stop();
    receiverDown = false;
    hub = (await startAnalyticsHub('alerting-2', runId, hubEnv)).process;
    await waitFor(async () => taken(resolved), (t) => t.length > 0, 60_000);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(taken(resolved).length, 1, 'taken once');
    assert.equal(new Set(attempts.filter(resolved).map((a) => a.key)).size, 1, 'every attempt with the same key');
    assert.equal(taken(resolved)[0]!.body.severity, 'info');
  });
});
