import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import { decodeEvent, type WireEvent } from '../../shared/wire.js';
import { unpackMultiple } from 'msgpackr';
import { EventValidator } from '../../edge-agent/src/validation/event-validator.js';
import { IngestPipeline } from '../../edge-agent/src/ingest.js';
import { OutboxFullError } from '../../edge-agent/src/errors.js';
import { itemsFromNdjson } from '../../edge-agent/src/sources/http-source.js';
import { matchRoute } from '../../edge-agent/src/sources/mqtt-source.js';
import type { DeadLetter, Outbox, OutboxEvent } from '../../edge-agent/src/buffer/outbox.js';

/** In-memory outbox: records each append call (one call = one transaction). */
class RecordingOutbox {
  appends: Array<{ events: OutboxEvent[]; deadLetters: DeadLetter[] }> = [];
  full = false;
  readonly syncBeforeAck = true;
  durable(): Promise<void> {
    return Promise.resolve();
  }
  append(events: OutboxEvent[], deadLetters: DeadLetter[]): void {
    if (this.full && events.length > 0) throw new OutboxFullError(1, 1);
    this.appends.push({ events, deadLetters });
  }
}

const validator = new EventValidator(loadSchemaCatalog());
const log = pino({ level: 'silent' });
const reading = (i: number) => ({ value: { device_id: 'd1', timestamp: 1000 + i, metric: 'm', value: i } });
const mqttContext = { source: 'mqtt', defaultType: 'device.telemetry' };

test('submissions in the same turn share one outbox transaction (group commit)', async () => {
  const outbox = new RecordingOutbox();
  const ingest = new IngestPipeline(validator, outbox as unknown as Outbox, 4, log);
  const results = await Promise.all([ingest.submit([reading(1)], mqttContext), ingest.submit([reading(2), reading(3)], mqttContext)]);
  assert.deepEqual(results.map((r) => r.accepted), [1, 2]);
  assert.equal(outbox.appends.length, 1);
  // Same device, so one partition: the three events go in as one record, in order.
  assert.equal(outbox.appends[0]!.events.length, 1);
  assert.equal(outbox.appends[0]!.events[0]!.count, 3);
  assert.deepEqual((unpackMultiple(Buffer.from(outbox.appends[0]!.events[0]!.data)) as WireEvent[]).map((e) => e.body.value), [1, 2, 3]);
});

test('invalid events are dead-lettered in the same transaction and do not stop valid ones', async () => {
  const outbox = new RecordingOutbox();
  const ingest = new IngestPipeline(validator, outbox as unknown as Outbox, 4, log);
  const result = await ingest.submit([reading(1), { value: { device_id: 'd1' } }, reading(2)], { ...mqttContext, origin: 'devices/d1/telemetry' });
  assert.equal(result.accepted, 2);
  assert.deepEqual(result.rejected.map((r) => [r.index, r.code]), [[1, 'EDGE_ERR_SCHEMA_INVALID']]);
  assert.equal(outbox.appends[0]!.deadLetters.length, 1);
  assert.equal(outbox.appends[0]!.deadLetters[0]!.origin, 'devices/d1/telemetry');
  assert.match(outbox.appends[0]!.deadLetters[0]!.reason, /\/timestamp is required|is required/);
});

test('a full outbox rejects the submission, so the source does not acknowledge', async () => {
  const outbox = new RecordingOutbox();
  outbox.full = true;
  const ingest = new IngestPipeline(validator, outbox as unknown as Outbox, 4, log);
  await assert.rejects(ingest.submit([reading(1)], mqttContext), OutboxFullError);
  assert.equal(ingest.counters.refusedFull, 1);
});

test('NDJSON: blank lines are skipped and a bad line is refused on its own', () => {
  const items = itemsFromNdjson(Buffer.from('{"a":1}\n\n{bad\r\n{"b":2}'));
  assert.equal(items.length, 3);
  assert.ok('value' in items[0]! && 'refused' in items[1]! && 'value' in items[2]!);
});

test('MQTT routes match by level and take the device id from the topic', () => {
  const routes = [{ pattern: 'devices/+/telemetry', type: 'device.telemetry', keyLevel: 1 }];
  assert.deepEqual(matchRoute(routes, 'devices/d7/telemetry'), { type: 'device.telemetry', key: 'd7' });
  assert.equal(matchRoute(routes, 'devices/d7/telemetry/extra'), undefined);
  assert.equal(matchRoute(routes, 'devices/d7/status'), undefined);
});
