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
  ['a type that is not a string', { ...telemetry, type: 5 }, { defaultType: 'device.telemetry' }, 'EDGE_ERR_UNKNOWN_TYPE', /^\/type must be a string naming the event type, got number$/],
  ['a schema version that is not an integer', { ...telemetry, schema_version: '1' }, {}, 'EDGE_ERR_UNKNOWN_TYPE', /^\/schema_version must be an integer version of "device.telemetry" \(known: 1\), got string "1"$/],
  ['epoch milliseconds after the year 3000', { ...telemetry, timestamp: 1e15 }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/timestamp must be <= 32503680000000$/],
  ['negative epoch milliseconds', { ...telemetry, timestamp: -1 }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/timestamp must be >= 0$/],
  ['fractional epoch milliseconds', { ...telemetry, timestamp: 1.5 }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/timestamp must be an RFC 3339 date-time string or epoch milliseconds$/],
  ['a date-time before 1970', { ...telemetry, timestamp: '1969-12-31T23:59:59.999Z' }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/timestamp 1969-12-31T23:59:59.999Z is before 1970-01-01T00:00:00Z, which QuestDB cannot store$/],
  ['a date-time in year 1', { ...telemetry, timestamp: '0001-01-01T00:00:00Z' }, {}, 'EDGE_ERR_SCHEMA_INVALID', /is before 1970-01-01T00:00:00Z/],
  ['a date-time after the year 3000', { ...telemetry, timestamp: '9999-12-31T23:59:59Z' }, {}, 'EDGE_ERR_SCHEMA_INVALID', /^\/timestamp 9999-12-31T23:59:59Z is after 3000-01-01T00:00:00Z, the latest event time accepted$/],
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

test('a missing or extra field is named in `field`, not only in the reason', () => {
  const missing = validator.validate({ ...telemetry, metric: undefined }, ctx);
  const extra = validator.validate({ ...telemetry, colour: 'red' }, ctx);
  assert.ok(!missing.ok && !extra.ok);
  assert.equal(missing.rejection.field, '/metric');
  assert.equal(extra.rejection.field, '/colour');
});

test('event times from 1970-01-01 to 3000-01-01 inclusive are accepted, as a date-time or epoch milliseconds', () => {
  for (const timestamp of ['1970-01-01T00:00:00Z', '3000-01-01T00:00:00Z', 0, 32503680000000]) {
    const result = validator.validate({ ...telemetry, timestamp }, ctx);
    assert.ok(result.ok, `${timestamp}: ${JSON.stringify(result)}`);
  }
});

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

test('an event time further ahead of the agent clock than maxFutureMs is refused, naming how far; within it, accepted', () => {
  const bounded = new EventValidator(loadSchemaCatalog(), { maxFutureMs: 3_600_000 });
  const now = Date.UTC(2026, 10, 29, 12) * 1000;
  const at = (ms: number) => bounded.validate({ ...telemetry, timestamp: now / 1000 + ms }, { source: 'test', ingestTimeUs: now });
  assert.equal(at(3_600_000).ok, true, 'exactly at the bound');
  assert.equal(at(-86_400_000 * 365).ok, true, 'the past is not bounded (an agent drains hours-old events)');
  const year = at(365 * 86_400_000);
  assert.equal(year.ok, false);
  if (!year.ok) {
    assert.equal(year.rejection.code, 'EDGE_ERR_FUTURE_TIMESTAMP');
    assert.equal(year.rejection.field, '/timestamp');
    assert.match(year.rejection.reason, /is 31536000 s ahead of the agent's clock \(at most 3600 s allowed, validation.maxFutureMs\)$/);
  }
  assert.equal(validator.validate({ ...telemetry, timestamp: 32503680000000 }, ctx).ok, true, 'no bound unless configured');
});
