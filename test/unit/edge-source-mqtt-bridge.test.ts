/**
 * The MQTT bridge against real brokers, with an in-memory fake of the ingest pipeline: what it commits, and that a
 * message it could not commit is never acknowledged (the broker sends it again to the next session). The
 * acknowledgement tests run against aedes (in this process, nothing to install) and, when it is installed, against
 * Mosquitto with MQTT 3.1.1 and 5.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { EdgeError, EdgeErrorCode, OutboxFullError } from '../../edge-agent/src/errors.js';
import type { IngestItem, IngestPipeline, IngestResult } from '../../edge-agent/src/ingest.js';
import {
  MqttBridgeSource,
  topicMatches,
  type MqttBridgeSourceConfig,
  type MqttBridgeSubscription,
} from '../../edge-agent/src/sources/mqtt-bridge-source.js';
import { freePort } from '../../scripts/lib/processes.js';

const log = pino({ level: 'silent' });

class FakeIngest {
  readonly committed: Array<{ items: IngestItem[]; context: Record<string, unknown> }> = [];
  refuseFull = 0;
  /** Submissions committed, but the source is told the agent shuts down (as if killed right after the commit). */
  lose = 0;
  submits = 0;

  submit(items: IngestItem[], context: Record<string, unknown>): Promise<IngestResult> {
    this.submits++;
    if (this.refuseFull > 0) {
      this.refuseFull--;
      return Promise.reject(new OutboxFullError(1, 1));
    }
    this.committed.push({ items, context });
    if (this.lose > 0) {
      this.lose--;
      return Promise.reject(new EdgeError(EdgeErrorCode.SHUTTING_DOWN, 'agent is shutting down'));
    }
    return Promise.resolve({ accepted: items.length, rejected: [] });
  }

  values(): unknown[] {
    return this.committed.flatMap((c) => c.items.map((i) => ('value' in i ? i.value : { refused: i.refused.code })));
  }
}

let broker: Aedes;
let server: Server;
let port: number;
const sockets = new Set<Socket>();

async function listen(): Promise<void> {
  server = createServer(broker.handle);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
}

before(async () => {
  broker = await Aedes.createBroker();
  port = 0;
  await listen();
});

after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  await new Promise<void>((r) => broker.close(() => r()));
});

const running: MqttBridgeSource[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.stop();
});

const subscriptions: MqttBridgeSubscription[] = [
  { topic: 'sensors/+/telemetry', type: 'device.telemetry', keyLevel: 1, format: 'json', contentType: '' },
  { topic: 'logs/#', type: '', format: 'raw', contentType: '' },
];

const aedesUrl = () => `mqtt://127.0.0.1:${port}`;

function config(clientId: string, over: Partial<MqttBridgeSourceConfig> = {}): MqttBridgeSourceConfig {
  return {
    enabled: true,
    url: aedesUrl(),
    clientId,
    username: '',
    password: '',
    protocolVersion: 4,
    sessionExpirySeconds: 3600,
    keepaliveSeconds: 30,
    connectTimeoutMs: 2000,
    reconnectInitialMs: 50,
    reconnectMaxMs: 200,
    maxPayloadBytes: 1024,
    maxJsonDepth: 32,
    retryInitialMs: 10,
    retryMaxMs: 20,
    subscriptions,
    ...over,
  };
}

async function startBridge(ingest: FakeIngest, clientId: string, over: Partial<MqttBridgeSourceConfig> = {}, dataDir?: string): Promise<MqttBridgeSource> {
  const bridge = new MqttBridgeSource(config(clientId, over), { ingest: ingest as unknown as IngestPipeline, log, agentId: 'unit', ...(dataDir ? { dataDir } : {}) });
  await bridge.start();
  running.push(bridge);
  await until(() => bridge.ready, 'the bridge to subscribe');
  return bridge;
}

async function stopBridge(bridge: MqttBridgeSource): Promise<void> {
  await bridge.stop();
  running.splice(running.indexOf(bridge), 1);
}

async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function publish(messages: Array<[string, string | Buffer]>, url = aedesUrl()): Promise<void> {
  const client = await mqtt.connectAsync(url, { clientId: `pub-${Math.random().toString(36).slice(2)}` });
  for (const [topic, payload] of messages) await client.publishAsync(topic, payload, { qos: 1 });
  await client.endAsync();
}

test('topic filters: + is one level, # the rest, $share groups are stripped, $ topics need an explicit first level', () => {
  const cases: Array<[string, string, boolean]> = [
    ['a/+/c', 'a/b/c', true],
    ['a/+/c', 'a/b/d', false],
    ['a/+', 'a/b/c', false],
    ['a/#', 'a', true],
    ['a/#', 'a/b/c', true],
    ['#', 'x/y', true],
    ['#', '$SYS/x', false],
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/x', true],
    ['$share/g1/a/+', 'a/b', true],
    ['a/b', 'a/b/', false],
  ];
  for (const [filter, topic, expected] of cases) assert.equal(topicMatches(filter, topic), expected, `${filter} vs ${topic}`);
});

test('bridged messages: JSON events keep the topic\'s type and device, other payloads become raw envelopes', async () => {
  const ingest = new FakeIngest();
  await startBridge(ingest, 'bridge-a');
  await publish([
    ['sensors/dev-1/telemetry', JSON.stringify([{ n: 1 }, { n: 2 }])],
    ['logs/gw/syslog', 'kernel: eth0 link up'],
    ['logs/gw/bin', Buffer.from([0, 1, 2])],
    ['sensors/dev-1/telemetry', 'x'.repeat(2000)],
  ]);
  await until(() => ingest.committed.length === 4, 'four messages');
  const [json, text, binary, big] = ingest.committed;
  assert.deepEqual(json!.items.map((i) => 'value' in i && i.value), [{ n: 1 }, { n: 2 }]);
  assert.deepEqual(json!.context, { source: 'mqtt-bridge', origin: 'sensors/dev-1/telemetry', defaultType: 'device.telemetry', expectedKey: 'dev-1' });
  const envelope = 'value' in text!.items[0]! ? (text!.items[0].value as Record<string, unknown>) : {};
  assert.equal(envelope.type, 'raw.blob');
  assert.equal(envelope.source_id, 'logs/gw/syslog');
  assert.equal(envelope.data, 'kernel: eth0 link up');
  assert.equal(envelope.encoding, 'utf8');
  assert.equal('value' in binary!.items[0]! && (binary!.items[0].value as { encoding: string }).encoding, 'base64');
  assert.equal('refused' in big!.items[0]! && big!.items[0].refused.code, 'EDGE_ERR_TOO_LARGE');
});

test('reconnects with backoff when the broker goes away, and takes what was published meanwhile', async () => {
  const ingest = new FakeIngest();
  await startBridge(ingest, 'bridge-c');
  let acks = 0;
  const countAck = (_packet: unknown, client: { id: string } | null) => {
    if (client?.id === 'bridge-c') acks++;
  };
  broker.on('ack', countAck);
  await publish([['sensors/dev-3/telemetry', JSON.stringify({ n: 1 })]]);
  // Its PUBACK must have reached the broker, else the broker rightly sends it again after the reconnect.
  await until(() => acks === 1, 'the PUBACK of the first message');
  broker.removeListener('ack', countAck);
  await new Promise<void>((r) => {
    server.close(() => r());
    for (const s of sockets) s.destroy();
  });
  await new Promise((r) => setTimeout(r, 150));
  // The broker (and the bridge's session in it) lives on; only the listener was down.
  broker.publish({ cmd: 'publish', topic: 'sensors/dev-3/telemetry', payload: Buffer.from(JSON.stringify({ n: 2 })), qos: 1, retain: false, dup: false }, () => undefined);
  await listen();
  await until(() => ingest.values().length === 2, 'the message published while disconnected');
  assert.deepEqual(ingest.values(), [{ n: 1 }, { n: 2 }]);
});

/** What every broker must show: no PUBACK without a commit, and a redelivered raw message is the same event. */
function acknowledgementSuite(name: string, url: () => string, protocolVersion: 4 | 5): void {
  const id = (what: string) => `${what}-${name.replace(/\W+/g, '-')}-v${protocolVersion}`;
  const over = (): Partial<MqttBridgeSourceConfig> => ({ url: url(), protocolVersion });

  test(`${name}, MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: a message whose commit the outbox refused is not acknowledged: the broker sends it again to the next session`, async () => {
    const refusing = new FakeIngest();
    refusing.refuseFull = 1_000_000;
    const bridge = await startBridge(refusing, id('held'), over());
    await publish([['sensors/dev-2/telemetry', JSON.stringify({ n: 'held' })]], url());
    await until(() => refusing.submits >= 3, 'retries while the outbox is full');
    assert.equal(bridge.acknowledged, 0);
    await stopBridge(bridge);
    // While the agent is away, more arrives; the broker queues it for the persistent session.
    await publish([['sensors/dev-2/telemetry', JSON.stringify({ n: 'while away' })]], url());
    const ingest = new FakeIngest();
    const again = await startBridge(ingest, id('held'), over());
    await until(() => ingest.values().length === 2, 'both messages');
    assert.deepEqual(ingest.values(), [{ n: 'held' }, { n: 'while away' }]);
    assert.equal(again.acknowledged, 2);
    await stopBridge(again);
    // Acknowledged means gone: a third session gets nothing old.
    const third = new FakeIngest();
    await startBridge(third, id('held'), over());
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(third.values().length, 0);
  });

  test(`${name}, MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: a raw message sent again after a commit whose PUBACK was lost gets its first receive time back (same event id)`, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'bridge-'));
    try {
      const first = new FakeIngest();
      first.lose = 1;
      const bridge = await startBridge(first, id('raw'), over(), dataDir);
      await publish([['logs/gw/app', 'same text'], ['logs/gw/app', 'same text']], url());
      // The first is committed but not acknowledged; the second, identical one is committed and acknowledged.
      await until(() => first.committed.length === 2, 'both commits');
      await stopBridge(bridge);
      // A new process (the state file carries the receive times): the broker sends the first again.
      const second = new FakeIngest();
      await startBridge(second, id('raw'), over(), dataDir);
      await until(() => second.committed.length === 1, 'the redelivery');
      const stamp = (c: { items: IngestItem[] }) => ('value' in c.items[0]! ? (c.items[0].value as { timestamp: string }).timestamp : '');
      assert.equal(stamp(second.committed[0]!), stamp(first.committed[0]!), 'the redelivered message is the same event');
      assert.notEqual(stamp(first.committed[1]!), stamp(first.committed[0]!), 'the second, identical message is another event');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(second.committed.length, 1);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
}

acknowledgementSuite('aedes', aedesUrl, 4);

const mosquittoPath = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => spawnSync(p, ['-h']).error === undefined);
describe('against Mosquitto', { skip: mosquittoPath ? false : 'mosquitto is not installed (apt-get install -y mosquitto); the aedes runs cover the same behaviour' }, () => {
  let mosquitto: ChildProcess | undefined;
  let mosquittoPort = 0;
  let confDir = '';
  before(async () => {
    mosquittoPort = await freePort();
    confDir = mkdtempSync(join(tmpdir(), 'mosquitto-'));
    const conf = join(confDir, 'mosquitto.conf');
    writeFileSync(conf, `listener ${mosquittoPort} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n`);
    mosquitto = spawn(mosquittoPath!, ['-c', conf], { stdio: 'ignore' });
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        await (await mqtt.connectAsync(`mqtt://127.0.0.1:${mosquittoPort}`, { reconnectPeriod: 0 })).endAsync();
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });
  after(async () => {
    if (mosquitto && mosquitto.exitCode === null) {
      const exited = new Promise((r) => mosquitto!.once('exit', r));
      mosquitto.kill('SIGTERM');
      await exited;
    }
    rmSync(confDir, { recursive: true, force: true });
  });
  acknowledgementSuite('mosquitto', () => `mqtt://127.0.0.1:${mosquittoPort}`, 4);
  acknowledgementSuite('mosquitto', () => `mqtt://127.0.0.1:${mosquittoPort}`, 5);
});
