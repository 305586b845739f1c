/**
 * The MQTT source's protections, in process: the real aedes broker and real loopback sockets, the real ingest
 * pipeline and validator, and an in-memory outbox that records every transaction, so "nothing was written" is
 * checked directly. (test/integration/edge-bad-input.test.ts checks the same through the whole stack.)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tcpConnect, type Socket } from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { validateConfig } from '../../shared/config.js';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import { decodeEvent } from '../../shared/wire.js';
import type { DeadLetter, Outbox, OutboxEvent } from '../../edge-agent/src/buffer/outbox.js';
import { IngestPipeline } from '../../edge-agent/src/ingest.js';
import { hashPassword } from '../../edge-agent/src/sources/mqtt-auth.js';
import { MqttFrameMeter } from '../../edge-agent/src/sources/mqtt-frame-guard.js';
import { createMqttSource, mqttSourceConfigSchema, type MqttSourceConfig } from '../../edge-agent/src/sources/mqtt-source.js';
import type { Source } from '../../edge-agent/src/sources/source.js';
import { EventValidator } from '../../edge-agent/src/validation/event-validator.js';

class RecordingOutbox {
  events: OutboxEvent[] = [];
  deadLetters: DeadLetter[] = [];
  readonly syncBeforeAck = true;
  durable(): Promise<void> {
    return Promise.resolve();
  }
  append(events: OutboxEvent[], deadLetters: DeadLetter[]): void {
    this.events.push(...events);
    this.deadLetters.push(...deadLetters);
  }
}

type MqttSourceHandle = Source & { port(): number; refusalCounts(): Record<string, number> };

const log = pino({ level: 'silent' });
const validator = new EventValidator(loadSchemaCatalog());

async function startSource(overrides: Record<string, unknown>): Promise<{ source: MqttSourceHandle; outbox: RecordingOutbox; url: string }> {
  const outbox = new RecordingOutbox();
  const ingest = new IngestPipeline(validator, outbox as unknown as Outbox, 4, log);
  const wrapper = { type: 'object', properties: { mqtt: mqttSourceConfigSchema } };
  const config = validateConfig<{ mqtt: MqttSourceConfig }>(wrapper, { mqtt: { host: '127.0.0.1', port: 0, ...overrides } }, 'mqtt').mqtt;
  const source = createMqttSource(config, { ingest, log }) as MqttSourceHandle;
  await source.start();
  return { source, outbox, url: `mqtt://127.0.0.1:${source.port()}` };
}

const reading = (device: string, i: number) => ({ event_id: `${device}-${i}`, device_id: device, timestamp: 1_700_000_000_000 + i, metric: 't', value: i });

function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => (client.connected ? client.once('close', () => resolve()) : resolve()));
}

/** The CONNACK return code (0: connected), or -1 when the connection was closed without one. */
async function refusedConnect(url: string, options: mqtt.IClientOptions): Promise<number> {
  try {
    // allowRetries false: a connection closed before CONNACK rejects instead of waiting for a reconnect.
    const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options }, false);
    await client.endAsync();
    return 0;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'number' ? code : -1; // a socket error (ECONNRESET) or close: no CONNACK
  }
}

/** A hand-made MQTT 3.1.1 CONNECT (clean session, keepalive 60 s), so raw-socket tests need no packet library. */
function connectPacket(clientId: string, username?: string, password?: string): Buffer {
  const field = (text: string) => {
    const bytes = Buffer.from(text);
    return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
  };
  const flags = 0x02 | (username !== undefined ? 0x80 : 0) | (password !== undefined ? 0x40 : 0);
  const body = Buffer.concat([
    Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, flags, 0, 60]),
    field(clientId),
    ...(username !== undefined ? [field(username)] : []),
    ...(password !== undefined ? [field(password)] : []),
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

function remainingLength(n: number): Buffer {
  const bytes: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    bytes.push(byte);
  } while (n > 0);
  return Buffer.from(bytes);
}

test('the frame meter finds each packet\'s announced length across chunk boundaries', () => {
  const meter = new MqttFrameMeter(1000);
  // PINGREQ (C0 00), then a PUBLISH of 200 bytes split over three chunks, then one announcing 1001.
  const publish = Buffer.concat([Buffer.from([0x30]), remainingLength(200), Buffer.alloc(200, 1)]);
  assert.equal(meter.feed(Buffer.from([0xc0, 0x00])), undefined);
  assert.equal(meter.feed(publish.subarray(0, 2)), undefined); // header byte and the first length byte
  assert.equal(meter.feed(publish.subarray(2, 100)), undefined);
  assert.equal(meter.feed(publish.subarray(100)), undefined);
  const big = Buffer.concat([Buffer.from([0x30]), remainingLength(1001)]);
  assert.equal(meter.feed(big.subarray(0, 2)), undefined, 'length not complete yet (2 bytes)');
  assert.equal(meter.feed(big.subarray(2)), 1001);
  assert.equal(new MqttFrameMeter(1000).feed(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), -1, 'a 5-byte length is malformed');
  assert.equal(new MqttFrameMeter(2 ** 28).feed(Buffer.concat([Buffer.from([0x30]), remainingLength(104_857_600)])), undefined, 'within a large limit');
});

describe('mqtt broker with device credentials', () => {
  let source: MqttSourceHandle;
  let outbox: RecordingOutbox;
  let url: string;

  before(async () => {
    ({ source, outbox, url } = await startSource({
      maxConnections: 4,
      maxTopicLevels: 6,
      maxClientIdLength: 40,
      maxPacketBytes: 65536,
      maxPayloadBytes: 4096,
      auth: {
        mode: 'credentials',
        devices: [
          { username: 'dev-a', deviceId: 'dev-a', passwordHash: await hashPassword('pw-a', { N: 1024, r: 8, p: 1 }) },
          { username: 'dev-b', deviceId: 'dev-b', password: 'pw-b' },
        ],
      },
    }));
  });
  after(() => source.stop());

  test('wrong, unknown and missing credentials get CONNACK 4 or 5; the right ones connect', async () => {
    assert.equal(await refusedConnect(url, { clientId: 'dev-a', username: 'dev-a', password: 'nope' }), 4);
    assert.equal(await refusedConnect(url, { clientId: 'dev-a', username: 'mallory', password: 'pw-a' }), 4);
    assert.equal(await refusedConnect(url, { clientId: 'dev-a' }), 5);
    assert.equal(await refusedConnect(url, { clientId: 'dev-a', username: 'dev-a', password: 'pw-a' }), 0);
    assert.equal(await refusedConnect(url, { clientId: 'dev-b/second', username: 'dev-b', password: 'pw-b' }), 0);
    assert.ok((source.refusalCounts().EDGE_ERR_AUTH_FAILED ?? 0) >= 3);
  });

  test('a client id of another device, or a too long one, gets CONNACK 2', async () => {
    assert.equal(await refusedConnect(url, { clientId: 'dev-b', username: 'dev-a', password: 'pw-a' }), 2);
    assert.equal(await refusedConnect(url, { clientId: `dev-a/${'x'.repeat(40)}`, username: 'dev-a', password: 'pw-a' }), 2);
    assert.equal(await refusedConnect(url, { clientId: '', username: 'dev-a', password: 'pw-a', clean: true }), 0, 'an empty id gets a random one');
  });

  test('a will on another device\'s topic gets CONNACK 5', async () => {
    const will = { topic: 'devices/dev-b/status', payload: Buffer.from('{}'), qos: 1 as const, retain: false };
    assert.equal(await refusedConnect(url, { clientId: 'dev-a', username: 'dev-a', password: 'pw-a', will }), 5);
  });

  test('publishing on another device\'s topic closes the connection and writes nothing', async () => {
    const before = { events: outbox.events.length, deadLetters: outbox.deadLetters.length };
    const client = await mqtt.connectAsync(url, { clientId: 'dev-a', username: 'dev-a', password: 'pw-a', reconnectPeriod: 0 });
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify(reading('dev-a', 1)), { qos: 1 });
    const gone = closed(client);
    client.publish('devices/dev-b/telemetry', JSON.stringify(reading('dev-b', 1)), { qos: 1 });
    await gone;
    client.end(true);
    assert.equal(outbox.events.length, before.events + 1, 'only the own-topic reading was stored');
    assert.equal(decodeEvent(outbox.events.at(-1)!.data).key, 'dev-a');
    assert.equal(outbox.deadLetters.length, before.deadLetters, 'not even a dead letter');
    assert.ok((source.refusalCounts().EDGE_ERR_NOT_AUTHORIZED ?? 0) >= 1);
  });

  test('subscribing to another device\'s topics is refused with SUBACK 0x80, own topics are granted', async () => {
    const client = await mqtt.connectAsync(url, { clientId: 'dev-a/sub', username: 'dev-a', password: 'pw-a', reconnectPeriod: 0 });
    const filters = ['devices/dev-a/commands', 'devices/dev-b/#', '#', 'devices/+/telemetry', '$SYS/#'];
    // mqtt.js rejects when any filter failed; the SUBACK it carries has the return code of each.
    const error = await client.subscribeAsync(Object.fromEntries(filters.map((f) => [f, { qos: 1 as const }]))).then(
      () => assert.fail('expected a SUBACK with failures'),
      (e: { packet?: { granted?: number[] } }) => e,
    );
    assert.deepEqual(error.packet?.granted, [1, 128, 128, 128, 128]);
    assert.ok(client.connected, 'a refused subscription does not close the connection');
    await client.endAsync();
  });

  test('a topic deeper than maxTopicLevels closes the connection and writes nothing', async () => {
    const before = outbox.events.length + outbox.deadLetters.length;
    const client = await mqtt.connectAsync(url, { clientId: 'dev-a', username: 'dev-a', password: 'pw-a', reconnectPeriod: 0 });
    const gone = closed(client);
    client.publish('devices/dev-a/a/b/c/d/e', JSON.stringify(reading('dev-a', 2)), { qos: 1 });
    await gone;
    client.end(true);
    assert.equal(outbox.events.length + outbox.deadLetters.length, before);
    assert.ok((source.refusalCounts().EDGE_ERR_TOPIC_TOO_DEEP ?? 0) >= 1);
  });

  test('bad content on an allowed topic is acknowledged and dead-lettered with its code', async () => {
    const client = await mqtt.connectAsync(url, { clientId: 'dev-a', username: 'dev-a', password: 'pw-a', reconnectPeriod: 0 });
    const start = outbox.deadLetters.length;
    await client.publishAsync('devices/dev-a/telemetry', Buffer.concat([Buffer.from('{"device_id":"dev-a","metric":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), { qos: 1 });
    await client.publishAsync('devices/dev-a/telemetry', '['.repeat(100) + ']'.repeat(100), { qos: 1 });
    await client.publishAsync('devices/dev-a/telemetry', JSON.stringify({ ...reading('dev-a', 3), value: 0 }).replace('"value":0', '"value":1e999'), { qos: 1 });
    await client.publishAsync('devices/dev-a/telemetry', Buffer.alloc(5000, 0x20), { qos: 1 });
    await client.publishAsync('devices/dev-a/unknown', JSON.stringify(reading('dev-a', 4)), { qos: 1 });
    await client.endAsync();
    assert.deepEqual(outbox.deadLetters.slice(start).map((d) => d.code), [
      'EDGE_ERR_INVALID_UTF8',
      'EDGE_ERR_TOO_DEEP',
      'EDGE_ERR_NUMBER_OUT_OF_RANGE',
      'EDGE_ERR_TOO_LARGE',
      'EDGE_ERR_NO_ROUTE',
    ]);
  });

  test('a packet announcing 100 MB is cut off at its header, before its body is buffered', async () => {
    const tooLargeBefore = source.refusalCounts().EDGE_ERR_TOO_LARGE ?? 0;
    const socket: Socket = tcpConnect(source.port(), '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const connack = new Promise<Buffer>((resolve) => socket.once('data', resolve));
    const closedAt = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())));
    socket.write(connectPacket('dev-a', 'dev-a', 'pw-a'));
    assert.deepEqual([...(await connack)], [0x20, 0x02, 0x00, 0x00], 'logged in (CONNACK accepted)');
    const started = performance.now();
    // PUBLISH QoS 0 announcing 100 MiB, then keep sending: the server must close long before 100 MiB.
    socket.write(Buffer.concat([Buffer.from([0x30]), remainingLength(100 * 1024 * 1024), Buffer.from([0, 23]), Buffer.from('devices/dev-a/telemetry')]));
    const chunk = Buffer.alloc(65536, 0x20);
    let sent = 0;
    while (!socket.destroyed && sent < 32 * 1024 * 1024) {
      if (!socket.write(chunk)) await new Promise((r) => setTimeout(r, 2));
      sent += chunk.length;
    }
    const at = await closedAt;
    assert.ok(at - started < 2000, `closed after ${Math.round(at - started)} ms`);
    assert.ok(sent < 32 * 1024 * 1024, `closed while sending (${sent} bytes sent)`);
    assert.equal(source.refusalCounts().EDGE_ERR_TOO_LARGE, tooLargeBefore + 1);
  });

  test('connections beyond maxConnections are refused, and accepted again once there is room', async () => {
    await new Promise((r) => setTimeout(r, 100)); // let the server see the previous tests' sockets close
    const clients = [];
    for (let i = 0; i < 4; i++) clients.push(await mqtt.connectAsync(url, { clientId: `dev-a/c${i}`, username: 'dev-a', password: 'pw-a', reconnectPeriod: 0 }));
    const refused = await refusedConnect(url, { clientId: 'dev-a/c4', username: 'dev-a', password: 'pw-a', connectTimeout: 2000 });
    assert.equal(refused, -1, 'the fifth connection is closed without CONNACK');
    assert.ok((source.refusalCounts().EDGE_ERR_TOO_MANY_CONNECTIONS ?? 0) >= 1);
    await Promise.all(clients.map((c) => c.endAsync()));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await refusedConnect(url, { clientId: 'dev-a/c5', username: 'dev-a', password: 'pw-a' }), 0);
  });
});

describe('mqtt broker without authentication (the demo default)', () => {
  test('any client connects and publishes; the payload checks still apply', async () => {
    const { source, outbox, url } = await startSource({});
    try {
      const client = await mqtt.connectAsync(url, { clientId: 'anything', reconnectPeriod: 0 });
      await client.publishAsync('devices/dev-z/telemetry', JSON.stringify(reading('dev-z', 1)), { qos: 1 });
      await client.publishAsync('devices/dev-z/telemetry', '{"value": NaN}', { qos: 1 });
      const granted = await client.subscribeAsync('#');
      assert.equal(granted[0]!.qos, 0);
      await client.endAsync();
      assert.equal(outbox.events.length, 1);
      assert.deepEqual(outbox.deadLetters.map((d) => d.code), ['EDGE_ERR_MALFORMED_JSON']);
    } finally {
      await source.stop();
    }
  });
});
