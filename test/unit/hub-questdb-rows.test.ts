import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SchemaVersion } from '../../shared/schema-catalog.js';
import type { WireEvent } from '../../shared/wire.js';
import { mapEvent, RowMappings, toEpochMicros, writeRow, type IlpRowWriter, type Row } from '../../hub/src/sinks/questdb-rows.js';

const appEvent: SchemaVersion = {
  type: 'app.event',
  version: 1,
  schema: {
    $id: 'app.event/v1',
    'x-partition-key': 'user_id',
    'x-questdb': {
      table: 'app_events',
      columns: [
        { name: 'event_type', field: 'event_type', type: 'SYMBOL' },
        { name: 'user_id', field: 'user_id', type: 'VARCHAR' },
        { name: 'session_id', field: 'session_id', type: 'VARCHAR' },
        { name: 'location', field: 'context.location', type: 'SYMBOL' },
        { name: 'score', field: 'metrics.score', type: 'DOUBLE' },
        { name: 'clicks', field: 'metrics.clicks', type: 'LONG' },
        { name: 'premium', field: 'premium', type: 'BOOLEAN' },
        { name: 'seen_at', field: 'seen_at', type: 'TIMESTAMP' },
        { name: 'properties', field: 'properties', type: 'JSON' },
        { name: 'context', field: 'context', type: 'JSON' },
      ],
    },
  },
};
const mappings = new RowMappings([appEvent]);
const mapping = mappings.get('app.event', 1)!;

function event(body: Record<string, unknown>, overrides: Partial<WireEvent> = {}): WireEvent {
  return { id: 'e-1', type: 'app.event', sv: 1, key: 'u1', ts: 1_700_000_000_123_456, its: 1_700_000_000_200_000, src: 'http', body, ...overrides };
}

test('maps standard columns, nested fields and JSON columns of an event', () => {
  const result = mapEvent(
    mapping,
    event({
      event_type: 'video_play',
      user_id: 'u1',
      context: { location: 'DE', device_type: 'tv' },
      metrics: { score: 0.5, clicks: 3 },
      premium: false,
      seen_at: '2026-11-22T03:00:00.123456Z',
      properties: { video_id: 'v9', tags: ['a', 'b'], nested: { x: 1 } },
    }),
    'agent-7',
  );
  assert.ok(result.ok);
  assert.equal(result.invalidColumns, undefined);
  assert.deepEqual(result.row, {
    table: 'app_events',
    ts: 1_700_000_000_123_456,
    symbols: [
      { name: 'agent_id', value: 'agent-7' },
      { name: 'source', value: 'http' },
      { name: 'event_type', value: 'video_play' },
      { name: 'location', value: 'DE' },
    ],
    fields: [
      { name: 'event_id', kind: 'string', value: 'e-1' },
      { name: 'schema_version', kind: 'long', value: 1 },
      { name: 'ingest_ts', kind: 'timestamp', value: 1_700_000_000_200_000 },
      { name: 'user_id', kind: 'string', value: 'u1' },
      { name: 'score', kind: 'double', value: 0.5 },
      { name: 'clicks', kind: 'long', value: 3 },
      { name: 'premium', kind: 'boolean', value: false },
      { name: 'seen_at', kind: 'timestamp', value: Date.UTC(2026, 10, 22, 3, 0, 0, 123) * 1000 + 456 },
      { name: 'properties', kind: 'string', value: '{"video_id":"v9","tags":["a","b"],"nested":{"x":1}}' },
      { name: 'context', kind: 'string', value: '{"location":"DE","device_type":"tv"}' },
    ],
  });
});

test('leaves missing optional fields (and null, and a missing parent object) unset', () => {
  const result = mapEvent(mapping, event({ event_type: 'login', user_id: 'u2', session_id: null }), 'a');
  assert.ok(result.ok);
  assert.equal(result.invalidColumns, undefined);
  const names = [...result.row.symbols, ...result.row.fields].map((c) => c.name);
  assert.deepEqual(names, ['agent_id', 'source', 'event_type', 'event_id', 'schema_version', 'ingest_ts', 'user_id']);
});

test('leaves a value that does not fit its column unset and names the column', () => {
  const result = mapEvent(
    mapping,
    event({ event_type: { nested: true }, user_id: 42, metrics: { score: 'high', clicks: 1.5 }, premium: 'yes', seen_at: 'not a date' }),
    'a',
  );
  assert.ok(result.ok);
  assert.deepEqual(result.invalidColumns, ['event_type', 'score', 'clicks', 'premium', 'seen_at']);
  // A number in a VARCHAR column is written as its text.
  assert.deepEqual(
    result.row.fields.find((f) => f.name === 'user_id'),
    { name: 'user_id', kind: 'string', value: '42' },
  );
});

test('strings from events are values only: a field named like a column does not create one', () => {
  const result = mapEvent(mapping, event({ event_type: 'x', user_id: 'u', 'ts=1,evil': 'v', table: 'other' }), 'a');
  assert.ok(result.ok);
  assert.equal(result.row.table, 'app_events');
  assert.ok([...result.row.symbols, ...result.row.fields].every((c) => !c.name.includes('evil')));
});

test('rejects an event without id or usable event time', () => {
  const noId = mapEvent(mapping, event({}, { id: '' }), 'a');
  assert.equal(noId.ok, false);
  const badTs = mapEvent(mapping, event({}, { ts: 1.5 }), 'a');
  assert.equal(badTs.ok, false);
  if (!badTs.ok) assert.equal(badTs.code, 'HUB_ERR_INVALID_EVENT');
});

test('unknown type or version has no mapping', () => {
  assert.equal(mappings.get('app.event', 2), undefined);
  assert.equal(mappings.get('nope', 1), undefined);
});

test('timestamps: epoch milliseconds and RFC 3339 with microseconds', () => {
  assert.equal(toEpochMicros(1_700_000_000_123), 1_700_000_000_123_000);
  assert.equal(toEpochMicros('1970-01-01T00:00:01.000001Z'), 1_000_001);
  assert.equal(toEpochMicros('1970-01-01T01:00:00+01:00'), 0);
  assert.equal(toEpochMicros(-1), undefined);
  assert.equal(toEpochMicros('yesterday'), undefined);
});

test('writes symbols before fields, then hub_ts, then the designated timestamp', () => {
  const calls: string[] = [];
  const writer: IlpRowWriter = {
    table: (n) => calls.push(`table ${n}`),
    symbol: (n, v) => calls.push(`symbol ${n}=${v}`),
    stringColumn: (n, v) => calls.push(`string ${n}=${v}`),
    floatColumn: (n, v) => calls.push(`float ${n}=${v}`),
    intColumn: (n, v) => calls.push(`int ${n}=${v}`),
    booleanColumn: (n, v) => calls.push(`bool ${n}=${v}`),
    timestampColumn: (n, v, u) => calls.push(`timestamp ${n}=${v}${u}`),
    at: (ts, u) => calls.push(`at ${ts}${u}`),
  };
  const row: Row = {
    table: 't',
    ts: 10,
    symbols: [{ name: 'agent_id', value: 'a' }],
    fields: [
      { name: 'event_id', kind: 'string', value: 'e' },
      { name: 'v', kind: 'double', value: 1.5 },
      { name: 'n', kind: 'long', value: 2 },
      { name: 'b', kind: 'boolean', value: true },
      { name: 'ingest_ts', kind: 'timestamp', value: 5 },
    ],
  };
  writeRow(writer, row, 99);
  assert.deepEqual(calls, [
    'table t',
    'symbol agent_id=a',
    'string event_id=e',
    'float v=1.5',
    'int n=2',
    'bool b=true',
    'timestamp ingest_ts=5us',
    'timestamp hub_ts=99us',
    'at 10us',
  ]);
});
