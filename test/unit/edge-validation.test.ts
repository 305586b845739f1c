import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import { EventValidator, toMicros } from '../../edge-agent/src/validation/event-validator.js';

const validator = new EventValidator(loadSchemaCatalog());
const ctx = { source: 'test', ingestTimeUs: 42 };
const telemetry = { type: 'device.telemetry', device_id: 'd1', timestamp: 1700000000000, metric: 'temp', value: 21.5 };
const app = { event_id: 'e1', event_type: 'video_play', user_id: 'u1', session_id: 's1', timestamp: '2026-11-22T03:00:00.123456Z', properties: { content_id: 'c1' }, context: { location: 'DE' } };

const rejections: Array<[string, unknown, Partial<typeof ctx> & { defaultType?: string; expectedKey?: string }, string, RegExp]> = [
  ['a number is not an event', 42, {}, 'EDGE_ERR_NOT_AN_OBJECT', /must be a JSON object, got number/],
  ['an array is not one event', [telemetry], {}, 'EDGE_ERR_NOT_AN_OBJECT', /got an array/],
  ['no type and no default', { ...telemetry, type: undefined }, {}, 'EDGE_ERR_UNKNOWN_TYPE', /no "type" field/],
  ['unknown type', { ...telemetry, type: 'device.nope' }, {}, 'EDGE_ERR_UNKNOWN_TYPE', /unknown event type "device.nope"/],
  ['unknown schema version', { ...telemetry, schema_version: 9 }, {}, 'EDGE_ERR_UNKNOWN_TYPE', /no schema version 9/],
  ['wrong value type', { ...telemetry, value: 'hot' }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/value must be number$/],
  ['missing field', { ...telemetry, metric: undefined }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/metric is required$/],
  ['extra field', { ...telemetry, colour: 'red' }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/colour is not an allowed field$/],
  ['bad timestamp', { ...telemetry, timestamp: 'yesterday' }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/timestamp must match format "date-time"$/],
  ['bad enum', { type: 'device.status', device_id: 'd1', timestamp: 1, status: 'sleepy' }, {}, 'EDGE_ERR_SCHEMA_INVALID', /status must be one of "online"/],
  ['device of another topic', telemetry, { expectedKey: 'd2' }, 'EDGE_ERR_TOPIC_MISMATCH', /device_id "d1" does not match the topic's "d2"/],
  ['app event with a numeric user', { ...app, user_id: 7 }, { defaultType: 'app.event' }, 'EDGE_ERR_SCHEMA_INVALID', /user_id must be string/],
];

for (const [name, input, extra, code, reason] of rejections) {
  test(`refuses: ${name}`, () => {
    const result = validator.validate(JSON.parse(JSON.stringify(input)) as unknown, { ...ctx, ...extra });
    assert.equal(result.ok, false);
    if (!result.ok) {
      assert.equal(result.rejection.code, code);
      assert.match(result.rejection.reason, reason);
    }
  });
}

test('accepts a telemetry reading and derives a stable id when it has none', () => {
  const first = validator.validate(telemetry, ctx);
  const second = validator.validate({ ...telemetry }, ctx);
  const other = validator.validate({ ...telemetry, value: 22 }, ctx);
  assert.ok(first.ok && second.ok && other.ok);
  assert.equal(first.event.id, second.event.id);
  assert.notEqual(first.event.id, other.event.id);
  assert.deepEqual({ ...first.event, id: undefined }, { id: undefined, type: 'device.telemetry', sv: 1, key: 'd1', ts: 1700000000000000, its: 42, src: 'test', body: telemetry });
});

test('an HTTP event without a type is an app event keyed by user, with microsecond time', () => {
  const result = validator.validate(app, { ...ctx, defaultType: 'app.event' });
  assert.ok(result.ok);
  assert.equal(result.event.type, 'app.event');
  assert.equal(result.event.key, 'u1');
  assert.equal(result.event.id, 'e1');
  assert.equal(result.event.ts, Date.parse('2026-11-22T03:00:00.123Z') * 1000 + 456);
});

test('toMicros reads RFC 3339 with offsets and epoch milliseconds', () => {
  assert.equal(toMicros(1000), 1_000_000);
  assert.equal(toMicros('1970-01-01T01:00:00.5+01:00'), 500_000);
  assert.equal(toMicros('nonsense'), undefined);
});
