import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchMessageId, decodeBatch, encodeBatch, encodeBatchFromEncoded, encodeEvent, partitionOf, type WireEvent } from '../../shared/wire.js';

const event = (i: number): WireEvent => ({ id: `e${i}`, type: 'device.telemetry', sv: 1, key: `d${i}`, ts: 1_700_000_000_000_000 + i, its: 1, src: 'mqtt', body: { value: i, nested: { a: [1, 'x'] } } });

test('a batch built from pre-encoded events decodes to the same events', () => {
  const header = { v: 1 as const, agent: 'a1', partition: 3, first: 10, last: 12 };
  const events = [event(1), event(2), event(3)];
  const decoded = decodeBatch(encodeBatchFromEncoded(header, events.map(encodeEvent)));
  assert.deepEqual(decoded, { ...header, events });
  assert.deepEqual(decodeBatch(encodeBatch({ ...header, events })), decoded);
});

test('decodeBatch refuses what is not a batch', () => {
  assert.throws(() => decodeBatch(encodeEvent(event(1))), /not an event batch/);
});

test('message ids and partitions are deterministic', () => {
  assert.equal(batchMessageId('a1', 10, 12, 3), 'a1:10-12:3');
  assert.equal(partitionOf('device-42', 8), partitionOf('device-42', 8));
  const spread = new Set(Array.from({ length: 200 }, (_, i) => partitionOf(`device-${i}`, 8)));
  assert.equal(spread.size, 8, 'keys spread over every partition');
});
