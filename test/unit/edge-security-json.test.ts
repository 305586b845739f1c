import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  findNonFiniteLiteral,
  findUnsafeValue,
  firstInvalidUtf8Offset,
  itemsFromJsonPayload,
  itemsFromNdjsonPayload,
  scanJson,
} from '../../edge-agent/src/sources/json-payload.js';
import type { IngestItem } from '../../edge-agent/src/ingest.js';

const limits = { maxDepth: 8, maxEventBytes: 1024 };
const codes = (items: IngestItem[]) => items.map((item) => ('refused' in item ? item.refused.code : 'ok'));
const refusal = (item: IngestItem) => {
  assert.ok('refused' in item, `expected a refusal, got ${JSON.stringify(item)}`);
  return item.refused;
};

test('UTF-8: the first ill-formed sequence is located; well-formed text is not flagged', () => {
  const table: Array<[string, number[], number]> = [
    ['ASCII', [0x7b, 0x7d], -1],
    ['2-byte é', [0x22, 0xc3, 0xa9, 0x22], -1],
    ['4-byte emoji', [0xf0, 0x9f, 0x98, 0x80], -1],
    ['stray continuation byte', [0x41, 0x80], 1],
    ['0xff', [0x41, 0x42, 0xff], 2],
    ['overlong "/" (C0 AF)', [0xc0, 0xaf], 0],
    ['overlong 3-byte (E0 80 80)', [0xe0, 0x80, 0x80], 0],
    ['UTF-16 surrogate D800 (ED A0 80)', [0x20, 0xed, 0xa0, 0x80], 1],
    ['above U+10FFFF (F4 90 80 80)', [0xf4, 0x90, 0x80, 0x80], 0],
    ['truncated sequence', [0x41, 0xe2, 0x82], 1],
  ];
  for (const [name, bytes, expected] of table) assert.equal(firstInvalidUtf8Offset(Uint8Array.from(bytes)), expected, name);
});

test('a payload that is not UTF-8 is refused with where, instead of being silently altered', () => {
  // {"device_id":"d\xff1"}: Buffer.toString would turn \xff into U+FFFD and store a different device id.
  const payload = Buffer.concat([Buffer.from('{"device_id":"d'), Buffer.from([0xff]), Buffer.from('1"}')]);
  assert.equal(JSON.parse(payload.toString('utf8')).device_id, 'd\ufffd1', 'what would happen without the check');
  const [item] = itemsFromJsonPayload(payload, limits);
  assert.deepEqual(refusal(item!), { code: 'EDGE_ERR_INVALID_UTF8', reason: 'payload is not valid UTF-8 (byte 0xff at offset 15)' });
});

test('a lone surrogate escape is refused; a proper escaped pair is fine', () => {
  assert.equal(codes(itemsFromJsonPayload(Buffer.from('{"a":"\\ud83d\\ude00"}'), limits))[0], 'ok');
  const [item] = itemsFromJsonPayload(Buffer.from('{"a":{"b":"x\\ud800"}}'), limits);
  assert.deepEqual(refusal(item!), {
    code: 'EDGE_ERR_INVALID_UTF8',
    reason: '/a/b contains a lone surrogate escape (\\ud800-\\udfff), which has no UTF-8 form',
    field: '/a/b',
  });
  assert.equal(refusal(itemsFromJsonPayload(Buffer.from('{"\\udc00":1}'), limits)[0]!).code, 'EDGE_ERR_INVALID_UTF8');
});

test('nesting is measured on the bytes before parsing; brackets inside strings do not count', () => {
  assert.deepEqual(scanJson(Buffer.from('[[[]]]'), 3), { ok: true, elements: [[1, 5]] });
  assert.deepEqual(scanJson(Buffer.from('[[[[]]]]'), 3), { ok: false, offset: 3 });
  assert.deepEqual(scanJson(Buffer.from('{"a":"[[[[[[\\"[[[["}'), 1), { ok: true });
  assert.deepEqual(scanJson(Buffer.from('{"a":"\\\\"}'), 1), { ok: true }, 'an escaped backslash before the closing quote');
});

test('a nesting bomb is refused without parsing it and does not crash', () => {
  const bomb = Buffer.from('['.repeat(1_000_000) + ']'.repeat(1_000_000));
  const started = performance.now();
  const [item] = itemsFromJsonPayload(bomb, { maxDepth: 32, maxEventBytes: 1e7 });
  assert.deepEqual(refusal(item!), { code: 'EDGE_ERR_TOO_DEEP', reason: 'payload nests arrays/objects deeper than 32 levels (at offset 32)' });
  assert.ok(performance.now() - started < 1000);
  assert.ok('refused' in item! && item.raw.length <= 65536, 'the dead letter keeps only the start of it');
  const deepObject = Buffer.from('{"event_id":"x","properties":' + '{"a":'.repeat(20) + '1' + '}'.repeat(20) + '}');
  assert.equal(refusal(itemsFromJsonPayload(deepObject, limits)[0]!).code, 'EDGE_ERR_TOO_DEEP');
});

test('numbers that overflow a double are refused with the field; NaN and Infinity are not JSON at all', () => {
  const [item] = itemsFromJsonPayload(Buffer.from('{"device_id":"d1","value":1e400}'), limits);
  assert.deepEqual(refusal(item!), {
    code: 'EDGE_ERR_NUMBER_OUT_OF_RANGE',
    reason: '/value is a number too large for a 64-bit float (it overflows to Infinity)',
    field: '/value',
  });
  assert.equal(refusal(itemsFromJsonPayload(Buffer.from('{"v":[1,-1e999]}'), limits)[0]!).field, '/v/1');
  assert.equal(codes(itemsFromJsonPayload(Buffer.from('{"v":1.7976931348623157e308,"w":5e-324,"x":-0}'), limits))[0], 'ok');
  for (const literal of ['NaN', 'Infinity', '-Infinity']) {
    const [bad] = itemsFromJsonPayload(Buffer.from(`{"value":${literal}}`), limits);
    assert.equal(refusal(bad!).code, 'EDGE_ERR_MALFORMED_JSON', literal);
    assert.equal(refusal(bad!).reason, `payload is not valid JSON: /value is ${literal}, which JSON does not have (RFC 8259 §6: numbers are finite); send null or leave the field out`);
    assert.equal(refusal(bad!).field, '/value');
  }
});

test('the field holding a NaN or Infinity literal is found past strings, nested objects and arrays', () => {
  const cases: Array<[string, string | undefined]> = [
    ['{"a":"NaN, [Infinity] {\\"","b":{"c":[1,{"d":2}],"e/f~":[0,-Infinity]}}', '/b/e~1f~0/1'],
    ['[{"v":1},{"v":2,"w":"x"},{"v":NaN}]', '/2/v'],
    ['{"k\\u00e9\\"y":Infinity}', '/k\u00e9"y'],
    ['NaN', '/'],
    ['{"a":"unterminated NaN', undefined],
    ['{"a":nope}', undefined],
  ];
  for (const [text, field] of cases) assert.equal(findNonFiniteLiteral(text)?.field, field, text);
  const [line] = itemsFromNdjsonPayload(Buffer.from('{"ok":1}\n{"temp":[20.5,NaN]}'), limits).slice(1);
  assert.equal(refusal(line!).field, '/temp/1');
  assert.match(refusal(line!).reason, /^line is not valid JSON: \/temp\/1 is NaN/);
});

test('an empty or blank payload is refused as such', () => {
  for (const text of ['', ' \r\n\t']) {
    assert.deepEqual(refusal(itemsFromJsonPayload(Buffer.from(text), limits)[0]!), { code: 'EDGE_ERR_MALFORMED_JSON', reason: 'payload is empty: send a JSON event or an array of events' });
  }
});

test('a NUL character in a string is refused with the field (QuestDB refuses it in a symbol); other control characters are fine', () => {
  const [item] = itemsFromJsonPayload(Buffer.from('[{"unit":"a\\u0000b"},{"unit":"\\u0001\\t\\u001f\\u007f"}]'), limits);
  assert.deepEqual(refusal(item!), { code: 'EDGE_ERR_NUL_CHARACTER', reason: '/unit contains a NUL character (\\u0000), which QuestDB cannot store in a symbol column', field: '/unit' });
  assert.deepEqual(codes(itemsFromJsonPayload(Buffer.from('[{"unit":"a\\u0000b"},{"unit":"\\u0001\\t\\u001f\\u007f"}]'), limits)), ['EDGE_ERR_NUL_CHARACTER', 'ok']);
});

test('an array refuses only its bad elements, each with its own bytes as the dead-letter payload', () => {
  const payload = Buffer.from(' [ {"a":1} , {"a":1e400},"x", [[[[[[[[]]]]]]]] ,\n{"b":"' + 'y'.repeat(2000) + '"} ] ');
  const items = itemsFromJsonPayload(payload, limits);
  assert.deepEqual(codes(items), ['EDGE_ERR_TOO_DEEP']); // depth is a payload-level refusal
  const shallow = Buffer.from(' [ {"a":1} , {"a":1e400},"x",\n{"b":"' + 'y'.repeat(2000) + '"} ] ');
  const parts = itemsFromJsonPayload(shallow, limits);
  assert.deepEqual(codes(parts), ['ok', 'EDGE_ERR_NUMBER_OUT_OF_RANGE', 'ok', 'EDGE_ERR_TOO_LARGE']);
  assert.deepEqual(parts.map((p) => Buffer.from(p.raw!).toString().slice(0, 10)), ['{"a":1}', '{"a":1e400', '"x"', '{"b":"yyyy']);
  assert.match(refusal(parts[3]!).reason, /^event of 2008 bytes exceeds maxEventBytes 1024$/);
});

test('malformed JSON is refused with the parser message', () => {
  const [item] = itemsFromJsonPayload(Buffer.from('{"device_id": "dev-a", '), limits);
  assert.equal(refusal(item!).code, 'EDGE_ERR_MALFORMED_JSON');
  assert.deepEqual(codes(itemsFromJsonPayload(Buffer.from('[]'), limits)), []);
  assert.deepEqual(codes(itemsFromJsonPayload(Buffer.from('"just a string"'), limits)), ['ok'], 'not an object: the validator says so');
});

test('NDJSON: each line is checked on its own, so one bad line does not take the others with it', () => {
  const body = Buffer.concat([
    Buffer.from('{"a":1}\r\n\n  \n'),
    Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xfe, 0x22, 0x7d, 0x0a]), // {"a":"\xfe"}
    Buffer.from('[[[[[[[[[1]]]]]]]]]\n{"a":1e400}\n{bad\n{"big":"' + 'z'.repeat(1100) + '"}\n{"b":2}'),
  ]);
  const items = itemsFromNdjsonPayload(body, limits);
  assert.deepEqual(codes(items), ['ok', 'EDGE_ERR_INVALID_UTF8', 'EDGE_ERR_TOO_DEEP', 'EDGE_ERR_NUMBER_OUT_OF_RANGE', 'EDGE_ERR_MALFORMED_JSON', 'EDGE_ERR_TOO_LARGE', 'ok']);
  assert.equal(refusal(items[1]!).reason, 'line is not valid UTF-8 (byte 0xfe at offset 6)');
  assert.equal(Buffer.from(items[0]!.raw!).toString(), '{"a":1}');
});

test('findUnsafeValue walks deep values without recursion', () => {
  let deep: unknown = 1e400;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  const found = findUnsafeValue(deep);
  assert.equal(found?.code, 'EDGE_ERR_NUMBER_OUT_OF_RANGE');
  assert.equal(findUnsafeValue({ a: [1, 'x', null, true, { b: -2.5 }] }), undefined);
  assert.equal(findUnsafeValue(Infinity)?.field, '/');
});
