import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  csvRecordToItem,
  csvValue,
  findRecordEnd,
  itemsFromPayload,
  parseCsvHeader,
  parseCsvRecord,
  splitRecords,
} from '../../edge-agent/src/sources/payload-formats.js';
import { isoMicros, isPlainText, MonotonicMicros, RAW_MAX_BYTES, wrapRaw } from '../../edge-agent/src/sources/raw-envelope.js';
import { toMicros } from '../../edge-agent/src/validation/event-validator.js';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import { EventValidator } from '../../edge-agent/src/validation/event-validator.js';

const csv = { delimiter: ',', stringFields: [] as string[] };
const limits = { maxDepth: 4, maxEventBytes: 1024 };

test('CSV records split into fields as RFC 4180 says', () => {
  const cases: Array<[string, string[] | RegExp]> = [
    ['a,b,c', ['a', 'b', 'c']],
    ['a,,c', ['a', '', 'c']],
    ['a,b,', ['a', 'b', '']],
    ['', ['']],
    ['"a,b",c', ['a,b', 'c']],
    ['"say ""hi""",x', ['say "hi"', 'x']],
    ['"line1\nline2",2', ['line1\nline2', '2']],
    ['"",x', ['', 'x']],
    ['"open,x', /unterminated quoted field 1/],
    ['"a"b,c', /field 1: text after the closing quote/],
  ];
  for (const [input, expected] of cases) {
    const parsed = parseCsvRecord(input);
    if (expected instanceof RegExp) {
      assert.equal(parsed.ok, false, input);
      assert.match((parsed as { reason: string }).reason, expected);
    } else {
      assert.ok(parsed.ok, input);
      assert.deepEqual(parsed.fields.map((f) => f.text), expected, input);
    }
  }
  assert.deepEqual((parseCsvRecord('a;"b;c"', ';') as { fields: { text: string }[] }).fields.map((f) => f.text), ['a', 'b;c']);
});

test('CSV values: unquoted JSON numbers and booleans are parsed, quoted fields and string fields stay text, empty is absent', () => {
  const cases: Array<[string, boolean, unknown]> = [
    ['42', false, 42],
    ['-1.5e3', false, -1500],
    ['007', false, '007'],
    ['1,5', false, '1,5'],
    ['true', false, true],
    ['false', false, false],
    ['', false, undefined],
    ['  ', false, undefined],
    ['NaN', false, 'NaN'],
    ['0x10', false, '0x10'],
  ];
  for (const [text, quoted, expected] of cases) assert.deepEqual(csvValue({ text, quoted }, false), expected, text);
  assert.equal(csvValue({ text: '42', quoted: true }, false), '42');
  assert.equal(csvValue({ text: '42', quoted: false }, true), '42');
  assert.equal(csvValue({ text: '', quoted: true }, false), '');
});

test('a CSV row becomes an object named by the header; a row of the wrong width is refused', () => {
  const header = parseCsvHeader('\uFEFFdevice_id, timestamp ,metric,value,unit', csv);
  assert.ok(header.ok);
  assert.deepEqual(header.names, ['device_id', 'timestamp', 'metric', 'value', 'unit']);
  const item = csvRecordToItem(header.names, Buffer.from('d-1,1700000000000,temp,21.5,'), { delimiter: ',', stringFields: [] });
  assert.deepEqual('value' in item && item.value, { device_id: 'd-1', timestamp: 1700000000000, metric: 'temp', value: 21.5 });
  const id = csvRecordToItem(header.names, Buffer.from('42,1700000000000,temp,1,C'), { delimiter: ',', stringFields: ['device_id'] });
  assert.equal('value' in id && (id.value as { device_id: unknown }).device_id, '42');
  const short = csvRecordToItem(header.names, Buffer.from('d-1,1'), csv);
  assert.ok('refused' in short);
  assert.equal(short.refused.code, 'EDGE_ERR_MALFORMED_CSV');
  assert.match(short.refused.reason, /record has 2 fields, the header 5/);
  assert.deepEqual(parseCsvHeader('a,,b', csv), { ok: false, reason: 'header row: column 2 has no name' });
  assert.deepEqual(parseCsvHeader('a,b,a', csv), { ok: false, reason: 'header row: column "a" appears twice' });
  const proto = csvRecordToItem(['__proto__'], Buffer.from('x'), csv);
  assert.ok('value' in proto && Object.hasOwn(proto.value as object, '__proto__'), '__proto__ is an own field, not the prototype');
});

test('record ends: LF, and for CSV only outside quotes; CRLF and blank lines are handled', () => {
  const buf = Buffer.from('a,"x\ny",1\nb,2\n');
  assert.equal(findRecordEnd(buf, 0, false), 4);
  assert.equal(findRecordEnd(buf, 0, true), 9);
  assert.equal(findRecordEnd(Buffer.from('no end'), 0, true), -1);
  assert.deepEqual(splitRecords(Buffer.from('one\r\n\r\n  \ntwo'), false).map(String), ['one', 'two']);
});

test('payload formats: json arrays, ndjson lines, csv with its header, raw envelopes', () => {
  const meta = { sourceId: 'dev-1', timestampUs: 1_700_000_000_000_123 };
  assert.equal(itemsFromPayload('json', Buffer.from('[{"a":1},{"a":2}]'), meta, csv, limits).length, 2);
  const nd = itemsFromPayload('ndjson', Buffer.from('{"a":1}\n{bad\n\n{"a":3}\n'), meta, csv, limits);
  assert.deepEqual(nd.map((i) => ('refused' in i ? i.refused.code : 'ok')), ['ok', 'EDGE_ERR_MALFORMED_JSON', 'ok']);
  const rows = itemsFromPayload('csv', Buffer.from('k,v\nx,1\ny,2\n'), meta, csv, limits);
  assert.deepEqual(rows.map((i) => 'value' in i && i.value), [{ k: 'x', v: 1 }, { k: 'y', v: 2 }]);
  // The same checks as the HTTP and MQTT sources: nesting depth, UTF-8.
  const deep = itemsFromPayload('json', Buffer.from('{"a":[[[[[1]]]]]}'), meta, csv, limits);
  assert.deepEqual(deep.map((i) => 'refused' in i && i.refused.code), ['EDGE_ERR_TOO_DEEP']);
  const deepLine = itemsFromPayload('ndjson', Buffer.from('{"a":1}\n[[[[[[1]]]]]]\n'), meta, csv, limits);
  assert.deepEqual(deepLine.map((i) => ('refused' in i ? i.refused.code : 'ok')), ['ok', 'EDGE_ERR_TOO_DEEP']);
  const latin1 = itemsFromPayload('csv', Buffer.concat([Buffer.from('k\n'), Buffer.from([0x63, 0x61, 0x66, 0xe9])]), meta, csv, limits);
  assert.deepEqual(latin1.map((i) => 'refused' in i && i.refused.code), ['EDGE_ERR_INVALID_UTF8']);
  const raw = itemsFromPayload('raw', Buffer.from('not json at all'), meta, csv, limits);
  assert.equal(raw.length, 1);
  assert.deepEqual('value' in raw[0]! && raw[0].value, {
    type: 'raw.blob',
    source_id: 'dev-1',
    timestamp: '2023-11-14T22:13:20.000123Z',
    content_type: 'text/plain; charset=utf-8',
    size: 15,
    encoding: 'utf8',
    data: 'not json at all',
  });
});

test('raw envelopes: UTF-8 text stays text, binary and control characters become base64, too large is refused', () => {
  assert.equal(isPlainText(Buffer.from('héllo\tworld\r\n')), true);
  assert.equal(isPlainText(Buffer.from([0x68, 0x00, 0x69])), false);
  assert.equal(isPlainText(Buffer.from([0xff, 0xfe])), false);
  assert.equal(isPlainText(Buffer.from('\u001b[31mred')), false);
  const binary = Buffer.from([0, 1, 2, 255]);
  const item = wrapRaw(binary, { sourceId: 'x', timestampUs: 1, origin: 'logs/x', contentType: '' });
  assert.ok('value' in item);
  assert.deepEqual(item.value, {
    type: 'raw.blob',
    source_id: 'x',
    timestamp: '1970-01-01T00:00:00.000001Z',
    content_type: 'application/octet-stream',
    size: 4,
    encoding: 'base64',
    data: 'AAEC/w==',
    origin: 'logs/x',
  });
  const big = wrapRaw(Buffer.alloc(RAW_MAX_BYTES + 1, 0x61), { sourceId: 'x', timestampUs: 1 });
  assert.ok('refused' in big);
  assert.equal(big.refused.code, 'EDGE_ERR_TOO_LARGE');
  assert.equal(big.raw.byteLength, 1024);
  const long = wrapRaw(Buffer.from('x'), { sourceId: 's'.repeat(1000), timestampUs: 1, contentType: 'text/x-log' });
  assert.ok('value' in long);
  assert.equal((long.value as { source_id: string }).source_id.length, 256);
  assert.equal((long.value as { content_type: string }).content_type, 'text/x-log');
});

test('raw envelopes validate against schemas/raw.blob/v1.json, with their microseconds kept and the largest payload allowed', () => {
  const validator = new EventValidator(loadSchemaCatalog());
  for (const payload of [Buffer.from('a log line'), Buffer.alloc(RAW_MAX_BYTES, 0xfe)]) {
    const item = wrapRaw(payload, { sourceId: 'gw/logs', timestampUs: 1_700_000_000_000_321, origin: 'gw/logs' });
    assert.ok('value' in item);
    const result = validator.validate(item.value, { source: 'file', ingestTimeUs: 1 });
    assert.ok(result.ok, JSON.stringify(!result.ok && result.rejection));
    assert.equal(result.event.type, 'raw.blob');
    assert.equal(result.event.key, 'gw/logs');
    assert.equal(result.event.ts, 1_700_000_000_000_321);
  }
});

test('timestamps: isoMicros round-trips through the validator, the monotonic clock never repeats', () => {
  for (const us of [0, 1, 999, 1_700_000_000_123_456]) assert.equal(toMicros(isoMicros(us)), us);
  const clock = new MonotonicMicros(() => 5);
  assert.deepEqual([clock.next(), clock.next(), clock.reserve(3), clock.next()], [5000, 5001, 5002, 5005]);
  let now = 5;
  const moving = new MonotonicMicros(() => now);
  moving.next();
  now = 10;
  assert.equal(moving.next(), 10000);
});
