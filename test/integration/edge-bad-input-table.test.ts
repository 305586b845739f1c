/**
 * Every class of bad input, in one table, against the real agent and hub on the real stack, mixed with valid traffic.
 *
 * One row per class: name, transport (HTTP JSON, HTTP NDJSON, MQTT), the input (one event's JSON text or bytes, or a
 * whole request) and the expected outcome:
 *
 * - `dead`: refused with that code, field and reason, stored as a dead letter, and the valid events beside it
 *   accepted. An event-level refusal shares its array / NDJSON body / MQTT array with two valid events. A
 *   payload-level one (`alone`: the JSON text does not parse, is not UTF-8, nests too deep, is over the MQTT payload
 *   limit, or has no route) refuses its whole JSON text, so over HTTP JSON and MQTT it is sent on its own, with
 *   two valid requests or publishes in flight beside it.
 * - `refused`: a whole-request refusal (body over the limit, bad encoding, empty body) with its status and code,
 *   nothing stored, not even a dead letter; valid requests in flight beside it are accepted.
 * - `stored`: tricky but valid (ILP's special characters in symbols and strings, extreme numbers, deep but allowed
 *   nesting): accepted, and the QuestDB row holds exactly what was sent.
 *
 * Meanwhile a valid MQTT and HTTP stream runs. At the end every valid event acknowledged during the test (stream,
 * neighbours, tricky rows) is in QuestDB exactly once, no bad one is, both processes are alive and healthy, and the
 * hub dead-lettered nothing (everything the agent accepted, QuestDB took).
 *
 * Who may connect, publish and how much (credentials, topic ACLs, packet size, connections, API keys, rate limits)
 * is tested in edge-bad-input.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import mqtt, { type MqttClient } from 'mqtt';
import { decodeDeadLetters } from '../../shared/dead-letter-records.js';
import { decodeHubDeadLetter, HUB_DEAD_LETTER_PREFIX } from '../../hub/src/sinks/dead-letter-sink.js';
import { deadLetterSubject, DLQ_STREAM } from '../../shared/wire.js';
import { testStack } from '../support/env.js';
import { agentPorts, freePort, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, rowsPerEventId, waitFor } from '../support/questdb.js';
import { startValidTraffic, type ValidTraffic } from '../support/valid-traffic.js';

const stack = testStack();
const agentId = `badtab-${Date.now().toString(36)}`;
const now = Date.now();
const DEVICE = 'dev-t';
const TELEMETRY_TOPIC = `devices/${DEVICE}/telemetry`;
const STATUS_TOPIC = `devices/${DEVICE}/status`;
const LIMITS = { mqttPayload: 16384, httpBody: 262144, event: 16384 };

// --- events ------------------------------------------------------------------------------------------------------

let seq = 0;
type Json = Record<string, unknown>;
const json = (value: unknown) => JSON.stringify(value);
const reading = (id: string, extra: Json = {}): Json => ({ event_id: id, device_id: DEVICE, timestamp: now - 60_000 + seq++, metric: 'temperature', value: 21.5, ...extra });
const deviceStatus = (id: string, extra: Json = {}): Json => ({ event_id: id, device_id: DEVICE, timestamp: now - 45_000 + seq++, status: 'online', ...extra });
const appEvent = (id: string, extra: Json = {}): Json => ({
  event_id: id,
  event_type: 'video_play',
  user_id: 'user-1',
  session_id: 's-1',
  timestamp: new Date(now - 30_000 + seq++).toISOString(),
  ...extra,
});
/** `text` with the JSON number 21.5 (a reading's value) replaced by `token`, which JSON.stringify cannot write. */
const withValue = (text: string, token: string) => text.replace('"value":21.5', `"value":${token}`);
const nested = (levels: number): unknown => {
  let value: unknown = 'deep';
  for (let i = 0; i < levels; i++) value = { a: value };
  return value;
};
const bytes = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));

// Strings that are special in the line protocol: comma, equals, space (escaped in symbols), double quote (in
// strings), backslash and newline (in both), and more that must survive unchanged.
const ILP_SPECIALS = 'a,b=c d"e\\f\n'; // 12 characters: fits `unit` (SYMBOL, at most 16)
const CONTROLS = 'l1\nl2\r\tx\u0001\u007f';
const TRAILING_BACKSLASH = 'ends\\';
const UNICODE = 'Zürich 😀 \u2028\u2029 € \ufeff';
const USER_WITH_SPECIALS = 'u,=1 "x"\n\\\'y\r\t';
const STATUS_REASON = 'line 1, "quoted" = x\\y\nline 2 '.repeat(18).slice(0, 512);
const PROPERTIES_WITH_SPECIALS = { 'k,=\n "\\': 'v,=\n "\\', emoji: '😀', nested: { list: [1, 'two', null, true], 'a b': 'c=d' } };
const BIG_NUMBERS = { max: 1.7976931348623157e308, min: 5e-324, big: 12345678901234567890, neg: -1e300, zero: -0 };
const LONG_TEXT = 'Lorem, ipsum = "dolor" \\ sit\n'.repeat(430); // 12,900 characters, under maxEventBytes

// --- the table -----------------------------------------------------------------------------------------------

type Transport = 'http-json' | 'http-ndjson' | 'mqtt';
type Table = 'device_telemetry' | 'device_status' | 'app_events';
type Expect =
  | { dead: string; field?: string; reason: RegExp; alone?: true }
  | { refused: number; code: string; reason: RegExp }
  | { stored: Table; columns: Record<string, string | number> };

interface Row {
  name: string;
  transport: Transport;
  /** One event's JSON text or bytes, built around its id (for `refused`, the whole request body). */
  input: (id: string) => string | Buffer;
  /** MQTT topic; the device's telemetry topic when absent. */
  topic?: string;
  /** HTTP request headers. */
  headers?: Record<string, string>;
  expect: Expect;
}

const TOO_DEEP = /nests arrays\/objects deeper than 32 levels/;

const rows: Row[] = [
  // Invalid JSON
  { name: 'truncated JSON', transport: 'http-json', input: (id) => `{"event_id":"${id}","user_id":`, expect: { dead: 'EDGE_ERR_MALFORMED_JSON', reason: /^payload is not valid JSON: /, alone: true } },
  { name: 'truncated JSON line', transport: 'http-ndjson', input: (id) => `{"event_id":"${id}","user_id":`, expect: { dead: 'EDGE_ERR_MALFORMED_JSON', reason: /^line is not valid JSON: / } },
  { name: 'single quotes', transport: 'mqtt', input: (id) => `{'event_id':'${id}','device_id':'${DEVICE}'}`, expect: { dead: 'EDGE_ERR_MALFORMED_JSON', reason: /^payload is not valid JSON: /, alone: true } },
  { name: 'not an object', transport: 'http-json', input: () => '"just a string"', expect: { dead: 'EDGE_ERR_NOT_AN_OBJECT', reason: /^event must be a JSON object, got string$/ } },
  { name: 'null in an array of readings', transport: 'mqtt', input: () => 'null', expect: { dead: 'EDGE_ERR_NOT_AN_OBJECT', reason: /got null$/ } },

  // Wrong types, missing and extra fields
  { name: 'number for a string', transport: 'http-json', input: (id) => json(appEvent(id, { user_id: 42 })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/user_id', reason: /^\/user_id must be string$/ } },
  { name: 'array for an object', transport: 'http-ndjson', input: (id) => json(appEvent(id, { properties: [1, 2] })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/properties', reason: /^\/properties must be object$/ } },
  { name: 'string for a number', transport: 'mqtt', input: (id) => json(reading(id, { value: 'hot' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/value', reason: /^\/value must be number$/ } },
  { name: '"NaN" as a string', transport: 'mqtt', input: (id) => json(reading(id, { value: 'NaN' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/value', reason: /^\/value must be number$/ } },
  { name: 'number for the device id', transport: 'mqtt', input: (id) => json(reading(id, { device_id: 42 })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/device_id', reason: /^\/device_id must be string$/ } },
  { name: 'missing required field', transport: 'http-ndjson', input: (id) => json({ ...appEvent(id), user_id: undefined }), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/user_id', reason: /^\/user_id is required$/ } },
  { name: 'field not in the schema', transport: 'mqtt', input: (id) => json(reading(id, { colour: 'red' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/colour', reason: /^\/colour is not an allowed field$/ } },
  { name: 'field name with ILP specials', transport: 'mqtt', input: (id) => json(reading(id, { 'a,b=c d': 1 })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/a,b=c d', reason: /^\/a,b=c d is not an allowed field$/ } },
  { name: 'value outside the enum', transport: 'mqtt', topic: STATUS_TOPIC, input: (id) => json(deviceStatus(id, { status: 'sleepy' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/status', reason: /^\/status must be one of "online", "offline"/ } },
  { name: 'another device than the topic', transport: 'mqtt', input: (id) => json(reading(id, { device_id: 'dev-other' })), expect: { dead: 'EDGE_ERR_TOPIC_MISMATCH', field: '/device_id', reason: /^device_id "dev-other" does not match the topic's "dev-t"$/ } },

  // NaN and Infinity: JSON tokens (not JSON at all) and exponents that overflow a double
  { name: 'NaN token', transport: 'http-json', input: (id) => json(appEvent(id, { properties: { score: 1 } })).replace('"score":1', '"score":NaN'), expect: { dead: 'EDGE_ERR_MALFORMED_JSON', field: '/properties/score', reason: /^payload is not valid JSON: \/properties\/score is NaN, which JSON does not have/, alone: true } },
  { name: 'Infinity token', transport: 'http-ndjson', input: (id) => json(appEvent(id, { properties: { score: 1 } })).replace('"score":1', '"score":Infinity'), expect: { dead: 'EDGE_ERR_MALFORMED_JSON', field: '/properties/score', reason: /^line is not valid JSON: \/properties\/score is Infinity/ } },
  { name: '-Infinity token', transport: 'mqtt', input: (id) => withValue(json(reading(id)), '-Infinity'), expect: { dead: 'EDGE_ERR_MALFORMED_JSON', field: '/value', reason: /^payload is not valid JSON: \/value is -Infinity/, alone: true } },
  { name: '1e999', transport: 'http-json', input: (id) => json(appEvent(id, { properties: { n: 1 } })).replace('"n":1', '"n":1e999'), expect: { dead: 'EDGE_ERR_NUMBER_OUT_OF_RANGE', field: '/properties/n', reason: /^\/properties\/n is a number too large for a 64-bit float/ } },
  { name: '-1e999', transport: 'http-ndjson', input: (id) => json(appEvent(id, { properties: { n: 1 } })).replace('"n":1', '"n":-1e999'), expect: { dead: 'EDGE_ERR_NUMBER_OUT_OF_RANGE', field: '/properties/n', reason: /^\/properties\/n is a number too large/ } },
  { name: '1e400 as a reading', transport: 'mqtt', input: (id) => withValue(json(reading(id)), '1e400'), expect: { dead: 'EDGE_ERR_NUMBER_OUT_OF_RANGE', field: '/value', reason: /^\/value is a number too large/ } },

  // Huge numbers that are valid doubles
  { name: 'largest double', transport: 'mqtt', input: (id) => withValue(json(reading(id)), '1.7976931348623157e308'), expect: { stored: 'device_telemetry', columns: { value: 1.7976931348623157e308 } } },
  { name: 'smallest subnormal double', transport: 'mqtt', input: (id) => withValue(json(reading(id)), '5e-324'), expect: { stored: 'device_telemetry', columns: { value: 5e-324 } } },
  { name: 'integer beyond 2^53', transport: 'mqtt', input: (id) => withValue(json(reading(id)), '12345678901234567890'), expect: { stored: 'device_telemetry', columns: { value: 12345678901234567890 } } },
  { name: 'extreme numbers in a JSON column', transport: 'http-json', input: (id) => json(appEvent(id, { properties: BIG_NUMBERS })), expect: { stored: 'app_events', columns: { properties: json(BIG_NUMBERS) } } },

  // Huge strings
  { name: 'string over the schema\'s maxLength (symbol)', transport: 'mqtt', input: (id) => json(reading(id, { unit: 'u'.repeat(17) })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/unit', reason: /^\/unit must NOT have more than 16 characters$/ } },
  { name: 'string over the schema\'s maxLength', transport: 'http-json', input: (id) => json(appEvent(id, { user_id: 'u'.repeat(129) })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/user_id', reason: /^\/user_id must NOT have more than 128 characters$/ } },
  { name: 'event over maxEventBytes', transport: 'http-json', input: (id) => json(appEvent(id, { properties: { blob: 'b'.repeat(20_000) } })), expect: { dead: 'EDGE_ERR_TOO_LARGE', reason: /^event of \d+ bytes exceeds maxEventBytes 16384$/ } },
  { name: 'line over maxEventBytes', transport: 'http-ndjson', input: (id) => json(appEvent(id, { properties: { blob: 'b'.repeat(20_000) } })), expect: { dead: 'EDGE_ERR_TOO_LARGE', reason: /^line of \d+ bytes exceeds maxEventBytes 16384$/ } },
  { name: 'payload over maxPayloadBytes', transport: 'mqtt', input: (id) => json(reading(id, { unit: 'x'.repeat(20_000) })), expect: { dead: 'EDGE_ERR_TOO_LARGE', reason: /^payload of \d+ bytes exceeds maxPayloadBytes 16384$/, alone: true } },
  { name: '12,900-character string with specials', transport: 'http-json', input: (id) => json(appEvent(id, { properties: { text: LONG_TEXT } })), expect: { stored: 'app_events', columns: { properties: json({ text: LONG_TEXT }) } } },
  { name: '512-character string with specials', transport: 'mqtt', topic: STATUS_TOPIC, input: (id) => json(deviceStatus(id, { reason: STATUS_REASON })), expect: { stored: 'device_status', columns: { reason: STATUS_REASON } } },

  // Deep nesting
  { name: '40 levels', transport: 'http-json', input: (id) => json(appEvent(id, { properties: nested(40) })), expect: { dead: 'EDGE_ERR_TOO_DEEP', reason: TOO_DEEP, alone: true } },
  { name: 'nesting bomb of 100,000 levels', transport: 'http-json', input: () => '{"properties":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}', expect: { dead: 'EDGE_ERR_TOO_DEEP', reason: TOO_DEEP, alone: true } },
  // (A line over maxEventBytes is refused for its size before its depth is looked at.)
  { name: 'nesting bomb of 5,000 levels', transport: 'http-ndjson', input: () => '{"properties":' + '['.repeat(5000) + ']'.repeat(5000) + '}', expect: { dead: 'EDGE_ERR_TOO_DEEP', reason: /^line nests arrays\/objects deeper than 32 levels/ } },
  { name: 'nesting bomb', transport: 'mqtt', input: () => '['.repeat(4000) + ']'.repeat(4000), expect: { dead: 'EDGE_ERR_TOO_DEEP', reason: TOO_DEEP, alone: true } },
  { name: '30 levels (within maxJsonDepth 32)', transport: 'http-ndjson', input: (id) => json(appEvent(id, { properties: nested(30) })), expect: { stored: 'app_events', columns: { properties: json(nested(30)) } } },

  // Bytes that are not UTF-8, and strings UTF-8 or QuestDB cannot carry
  { name: 'Latin-1 byte', transport: 'mqtt', input: (id) => bytes(`{"event_id":"${id}","device_id":"${DEVICE}","timestamp":${now},"metric":"t`, [0xe9], 'mp","value":1}'), expect: { dead: 'EDGE_ERR_INVALID_UTF8', reason: /^payload is not valid UTF-8 \(byte 0xe9 at offset \d+\)$/, alone: true } },
  { name: 'overlong encoding', transport: 'http-json', input: (id) => bytes(json(appEvent(id)).slice(0, -1) + ',"properties":{"t":"', [0xc0, 0xaf], '"}}'), expect: { dead: 'EDGE_ERR_INVALID_UTF8', reason: /^payload is not valid UTF-8 \(byte 0xc0 at offset \d+\)$/, alone: true } },
  { name: '0xff byte in one line', transport: 'http-ndjson', input: (id) => bytes(json(appEvent(id)).slice(0, -1) + ',"session_id":"', [0xff], '"}'), expect: { dead: 'EDGE_ERR_INVALID_UTF8', reason: /^line is not valid UTF-8 \(byte 0xff at offset \d+\)$/ } },
  { name: 'UTF-16 surrogate encoded as UTF-8', transport: 'http-ndjson', input: (id) => bytes(json(appEvent(id)).slice(0, -1) + ',"session_id":"', [0xed, 0xa0, 0x80], '"}'), expect: { dead: 'EDGE_ERR_INVALID_UTF8', reason: /^line is not valid UTF-8 \(byte 0xed at offset \d+\)$/ } },
  { name: 'lone surrogate escape', transport: 'http-json', input: (id) => json(appEvent(id, { session_id: 'X' })).replace('"X"', '"\\udead"'), expect: { dead: 'EDGE_ERR_INVALID_UTF8', field: '/session_id', reason: /^\/session_id contains a lone surrogate escape/ } },
  { name: 'NUL in a symbol', transport: 'mqtt', input: (id) => json(reading(id, { unit: 'a\u0000b' })), expect: { dead: 'EDGE_ERR_NUL_CHARACTER', field: '/unit', reason: /^\/unit contains a NUL character/ } },
  { name: 'NUL in a symbol of a nested field', transport: 'http-ndjson', input: (id) => json(appEvent(id, { context: { location: 'x\u0000' } })), expect: { dead: 'EDGE_ERR_NUL_CHARACTER', field: '/context/location', reason: /^\/context\/location contains a NUL character/ } },

  // Strings that become ILP symbols or columns: escaped on the way, intact in QuestDB; refused where a schema's
  // pattern allows none of them
  { name: 'comma, equals, space, quote, backslash, newline in a symbol', transport: 'mqtt', input: (id) => json(reading(id, { unit: ILP_SPECIALS })), expect: { stored: 'device_telemetry', columns: { unit: ILP_SPECIALS } } },
  { name: 'CR, tab and control characters in a symbol', transport: 'mqtt', input: (id) => json(reading(id, { unit: CONTROLS })), expect: { stored: 'device_telemetry', columns: { unit: CONTROLS } } },
  { name: 'trailing backslash in a symbol', transport: 'mqtt', input: (id) => json(reading(id, { unit: TRAILING_BACKSLASH })), expect: { stored: 'device_telemetry', columns: { unit: TRAILING_BACKSLASH } } },
  {
    name: 'specials in symbols, strings, the partition key and JSON',
    transport: 'http-json',
    input: (id) => json(appEvent(id, { user_id: USER_WITH_SPECIALS, session_id: ILP_SPECIALS, context: { location: UNICODE, device_type: ILP_SPECIALS }, properties: PROPERTIES_WITH_SPECIALS })),
    expect: { stored: 'app_events', columns: { user_id: USER_WITH_SPECIALS, session_id: ILP_SPECIALS, location: UNICODE, device_type: ILP_SPECIALS, properties: json(PROPERTIES_WITH_SPECIALS) } },
  },
  {
    name: 'specials in an NDJSON line',
    transport: 'http-ndjson',
    input: (id) => json(appEvent(id, { user_id: CONTROLS, context: { location: TRAILING_BACKSLASH, device_type: UNICODE } })),
    expect: { stored: 'app_events', columns: { user_id: CONTROLS, location: TRAILING_BACKSLASH, device_type: UNICODE } },
  },
  { name: 'specials in a symbol and a string of a status', transport: 'mqtt', topic: STATUS_TOPIC, input: (id) => json(deviceStatus(id, { firmware: ILP_SPECIALS, reason: CONTROLS })), expect: { stored: 'device_status', columns: { firmware: ILP_SPECIALS, reason: CONTROLS } } },
  { name: 'specials in a symbol with a pattern', transport: 'mqtt', input: (id) => json(reading(id, { metric: 'temp,room=1' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/metric', reason: /^\/metric must match pattern/ } },
  { name: 'specials in the event id', transport: 'http-json', input: (id) => json(appEvent(`${id} x,y=z`)), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/event_id', reason: /^\/event_id must match pattern/ } },

  // Unknown event types and schema versions
  { name: 'unknown event type', transport: 'http-json', input: (id) => json({ ...appEvent(id), type: 'app.nope' }), expect: { dead: 'EDGE_ERR_UNKNOWN_TYPE', field: '/type', reason: /^unknown event type "app.nope"; known: / } },
  { name: 'unknown event type', transport: 'mqtt', input: (id) => json(reading(id, { type: 'device.nope' })), expect: { dead: 'EDGE_ERR_UNKNOWN_TYPE', field: '/type', reason: /^unknown event type "device.nope"/ } },
  { name: 'type that is not a string', transport: 'http-ndjson', input: (id) => json({ ...appEvent(id), type: 42 }), expect: { dead: 'EDGE_ERR_UNKNOWN_TYPE', field: '/type', reason: /^\/type must be a string naming the event type, got number$/ } },
  { name: 'unknown schema version', transport: 'http-json', input: (id) => json({ ...appEvent(id), schema_version: 99 }), expect: { dead: 'EDGE_ERR_UNKNOWN_TYPE', field: '/schema_version', reason: /^type "app.event" has no schema version 99; known: 1$/ } },
  { name: 'schema version as a string', transport: 'mqtt', input: (id) => json(reading(id, { schema_version: '1' })), expect: { dead: 'EDGE_ERR_UNKNOWN_TYPE', field: '/schema_version', reason: /^\/schema_version must be an integer version of "device.telemetry" \(known: 1\), got string "1"$/ } },
  { name: 'topic without a route', transport: 'mqtt', topic: `devices/${DEVICE}/nothing-here`, input: (id) => json(reading(id)), expect: { dead: 'EDGE_ERR_NO_ROUTE', reason: /^no route for topic "devices\/dev-t\/nothing-here"$/, alone: true } },

  // Future and ancient timestamps
  { name: 'date-time before 1970', transport: 'http-json', input: (id) => json(appEvent(id, { timestamp: '1900-01-01T00:00:00Z' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/timestamp', reason: /^\/timestamp 1900-01-01T00:00:00Z is before 1970-01-01T00:00:00Z, which QuestDB cannot store$/ } },
  { name: 'one second before 1970', transport: 'mqtt', input: (id) => json(reading(id, { timestamp: '1969-12-31T23:59:59Z' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/timestamp', reason: /is before 1970-01-01T00:00:00Z/ } },
  { name: 'negative epoch milliseconds', transport: 'http-json', input: (id) => json(appEvent(id, { timestamp: -1 })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/timestamp', reason: /^\/timestamp must be >= 0$/ } },
  { name: 'date-time in year 9999', transport: 'http-ndjson', input: (id) => json(appEvent(id, { timestamp: '9999-12-31T23:59:59Z' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/timestamp', reason: /^\/timestamp 9999-12-31T23:59:59Z is after 3000-01-01T00:00:00Z/ } },
  { name: 'epoch milliseconds in year 33658', transport: 'mqtt', input: (id) => json(reading(id, { timestamp: 1e15 })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/timestamp', reason: /^\/timestamp must be <= 32503680000000$/ } },
  { name: 'a year ahead of the agent clock', transport: 'http-ndjson', input: (id) => json(appEvent(id, { timestamp: new Date(Date.now() + 365 * 86_400_000).toISOString() })), expect: { dead: 'EDGE_ERR_FUTURE_TIMESTAMP', field: '/timestamp', reason: /s ahead of the agent's clock \(at most 3600 s allowed, validation.maxFutureMs\)$/ } },
  { name: 'epoch milliseconds a day ahead', transport: 'mqtt', input: (id) => json(reading(id, { timestamp: Date.now() + 86_400_000 })), expect: { dead: 'EDGE_ERR_FUTURE_TIMESTAMP', field: '/timestamp', reason: /^\/timestamp \d+ is 8640\d s ahead of the agent's clock/ } },
  { name: 'epoch with an exponent of 999', transport: 'mqtt', input: (id) => json(reading(id, { timestamp: 1 })).replace('"timestamp":1', '"timestamp":1e999'), expect: { dead: 'EDGE_ERR_NUMBER_OUT_OF_RANGE', field: '/timestamp', reason: /^\/timestamp is a number too large/ } },
  { name: 'not a date', transport: 'mqtt', input: (id) => json(reading(id, { timestamp: 'yesterday' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/timestamp', reason: /^\/timestamp must match format "date-time"$/ } },
  { name: 'February 30th', transport: 'http-ndjson', input: (id) => json(appEvent(id, { timestamp: '2026-02-30T00:00:00Z' })), expect: { dead: 'EDGE_ERR_SCHEMA_INVALID', field: '/timestamp', reason: /^\/timestamp must match format "date-time"$/ } },

  // Empty and oversize bodies, encodings: whole-request refusals
  { name: 'empty body', transport: 'http-json', input: () => '', expect: { refused: 400, code: 'EDGE_ERR_MALFORMED_JSON', reason: /^empty body/ } },
  { name: 'blank payload', transport: 'mqtt', input: () => ' \n', expect: { dead: 'EDGE_ERR_MALFORMED_JSON', reason: /^payload is empty/, alone: true } },
  { name: 'empty payload', transport: 'mqtt', input: () => '', expect: { dead: 'EDGE_ERR_MALFORMED_JSON', reason: /^payload is empty/, alone: true } },
  { name: 'body over bodyLimitBytes', transport: 'http-json', input: (id) => json([appEvent(id, { properties: { blob: 'b'.repeat(300_000) } })]), expect: { refused: 413, code: 'EDGE_ERR_TOO_LARGE', reason: /\(bodyLimitBytes 262144\)$/ } },
  { name: 'body over bodyLimitBytes', transport: 'http-ndjson', input: (id) => Array.from({ length: 2000 }, () => json(appEvent(id, { properties: { pad: 'p'.repeat(150) } }))).join('\n'), expect: { refused: 413, code: 'EDGE_ERR_TOO_LARGE', reason: /\(bodyLimitBytes 262144\)$/ } },
  { name: 'gzip bomb', transport: 'http-json', headers: { 'content-encoding': 'gzip' }, input: () => gzipSync(Buffer.alloc(5_000_000, 0x20)), expect: { refused: 413, code: 'EDGE_ERR_TOO_LARGE', reason: /\(bodyLimitBytes 262144\)$/ } },
  { name: 'body that is not gzip', transport: 'http-json', headers: { 'content-encoding': 'gzip' }, input: (id) => json(appEvent(id)), expect: { refused: 400, code: 'EDGE_ERR_BAD_CONTENT_ENCODING', reason: /^body is not valid gzip \(Content-Encoding: gzip\): / } },
  { name: 'gzip cut short', transport: 'http-ndjson', headers: { 'content-encoding': 'gzip' }, input: (id) => gzipSync(json(appEvent(id))).subarray(0, 20), expect: { refused: 400, code: 'EDGE_ERR_BAD_CONTENT_ENCODING', reason: /^body is not valid gzip/ } },
  { name: 'unsupported encoding', transport: 'http-json', headers: { 'content-encoding': 'br' }, input: (id) => json(appEvent(id)), expect: { refused: 415, code: 'EDGE_ERR_BAD_CONTENT_ENCODING', reason: /^Content-Encoding "br" is not supported/ } },
];

// --- the agent, the hub, the clients ---------------------------------------------------------------------------

let hub: ManagedProcess;
let hubPort: number;
let agent: ManagedProcess;
let ports: AgentPorts;
let dataDir: string;
let device: MqttClient;
let traffic: ValidTraffic;

/** Valid events acknowledged besides the stream: neighbours of bad rows and the tricky rows themselves. */
const accepted: Record<Table, Set<string>> = { device_telemetry: new Set(), device_status: new Set(), app_events: new Set() };
const storedRows: Array<{ id: string; row: Row }> = [];
let neighbourSeq = 0;

before(async () => {
  hubPort = await freePort();
  // Only the raw path: the rules would add CPU and nothing this test looks at.
  hub = await startHub('bad-input-table', stack.natsUrls, stack.questdbHttp, { HUB_HTTP__PORT: String(hubPort), HUB_ANALYTICS__ENABLED: 'false' });
  ports = await agentPorts();
  dataDir = mkdtempSync(join(tmpdir(), 'agent-'));
  agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, {
    EDGE_SOURCES__MQTT__MAXPAYLOADBYTES: String(LIMITS.mqttPayload),
    EDGE_SOURCES__MQTT__MAXPACKETBYTES: '65536',
    EDGE_SOURCES__HTTP__BODYLIMITBYTES: String(LIMITS.httpBody),
    EDGE_SOURCES__HTTP__MAXEVENTBYTES: String(LIMITS.event),
  });
  device = await mqtt.connectAsync(`mqtt://127.0.0.1:${ports.mqtt}`, { clientId: `${DEVICE}/table`, reconnectPeriod: 0 });
  traffic = await startValidTraffic({
    idPrefix: agentId,
    mqttUrl: `mqtt://127.0.0.1:${ports.mqtt}`,
    mqttOptions: { clientId: 'dev-bg' },
    device: 'dev-bg',
    httpUrl: eventsUrl(),
    baseMs: now,
  });
  newDeadLetters(); // opens the cursor
});

after(async () => {
  await traffic?.stop();
  await device?.endAsync();
  await agent?.stop();
  await hub?.stop();
});

function eventsUrl(): string {
  return `http://127.0.0.1:${ports.http}/v1/events`;
}

interface HttpAnswer {
  status: number;
  body: { code?: string; error?: string; accepted?: number; rejected?: Array<{ index: number; code: string; reason: string; field?: string }> };
}

async function post(body: string | Buffer, contentType: string, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  const response = await fetch(eventsUrl(), { method: 'POST', headers: { 'content-type': contentType, ...headers }, body: typeof body === 'string' ? body : new Uint8Array(body) });
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) as HttpAnswer['body'] };
  } catch {
    return { status: response.status, body: { error: `not JSON: ${text.slice(0, 200)}` } };
  }
}

function publish(topic: string, payload: string | Buffer): Promise<void> {
  return withTimeout(device.publishAsync(topic, payload, { qos: 1 }).then(() => undefined), `PUBACK on ${topic}`);
}

async function withTimeout<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A valid event of the kind the transport and topic carry, and the table it goes to. */
function neighbour(transport: Transport, topic = TELEMETRY_TOPIC): { table: Table; id: string; text: string } {
  const id = `${agentId}-ok-${neighbourSeq++}`;
  if (transport !== 'mqtt') return { table: 'app_events', id, text: json(appEvent(id)) };
  if (topic === STATUS_TOPIC) return { table: 'device_status', id, text: json(deviceStatus(id)) };
  return { table: 'device_telemetry', id, text: json(reading(id)) };
}

const bodyOf = (...parts: Array<string | Buffer>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));

/**
 * Sends one row beside two valid neighbours, checks the answers, and returns the HTTP answer about the row itself
 * (undefined over MQTT, where the only answer is the PUBACK).
 */
async function sendRow(row: Row, input: string | Buffer): Promise<HttpAnswer | undefined> {
  const expect = row.expect;
  const alone = 'refused' in expect || ('dead' in expect && expect.alone === true);
  const isHttp = row.transport !== 'mqtt';
  const contentType = row.transport === 'http-ndjson' ? 'application/x-ndjson' : 'application/json';
  const topic = row.topic ?? TELEMETRY_TOPIC;

  if (alone && (row.transport !== 'http-ndjson' || 'refused' in expect)) {
    // The row's own request or publish, with a valid one just before and just after it, all in flight together.
    const [first, second] = [neighbour(row.transport), neighbour(row.transport)];
    if (isHttp) {
      const [a, answer, b] = await Promise.all([post(first.text, contentType), post(input, contentType, row.headers), post(second.text, contentType)]);
      for (const [n, r] of [[first, a], [second, b]] as const) {
        assert.equal(r.status, 200, `neighbour ${n.id}: ${JSON.stringify(r.body)}`);
        accepted[n.table].add(n.id);
      }
      return answer;
    }
    await Promise.all([publish(TELEMETRY_TOPIC, first.text), publish(topic, input), publish(TELEMETRY_TOPIC, second.text)]);
    [first, second].forEach((n) => accepted[n.table].add(n.id));
    return undefined;
  }

  // The row between two valid events in one JSON array, NDJSON body or MQTT array.
  const [first, second] = [neighbour(row.transport, topic), neighbour(row.transport, topic)];
  if (isHttp) {
    const body = row.transport === 'http-ndjson' ? bodyOf(first.text, '\n', input, '\n', second.text, '\n') : bodyOf('[', first.text, ',', input, ',', second.text, ']');
    const answer = await post(body, contentType, row.headers);
    assert.ok(answer.status === 200 || answer.status === 207, `${answer.status} ${JSON.stringify(answer.body)}`);
    assert.equal(answer.body.accepted, 'stored' in expect ? 3 : 2, JSON.stringify(answer.body));
    [first, second].forEach((n) => accepted[n.table].add(n.id));
    if ('stored' in expect) return { status: 200, body: { accepted: 1, rejected: [] } };
    assert.deepEqual(answer.body.rejected?.map((r) => r.index), [1], 'only the row is refused');
    return { status: 400, body: { accepted: 0, rejected: answer.body.rejected!.map((r) => ({ ...r, index: 0 })) } };
  }
  await publish(topic, bodyOf('[', first.text, ',', input, ',', second.text, ']'));
  [first, second].forEach((n) => accepted[n.table].add(n.id));
  return undefined;
}

// --- dead letters, from the agent's outbox file ------------------------------------------------------------

interface DeadLetterRow {
  id: number;
  code: string;
  reason: string;
  origin: string | null;
  payload: Buffer;
}
let deadLetterCursor = 0;

function newDeadLetters(): DeadLetterRow[] {
  const db = new Database(join(dataDir, `outbox-${agentId}.db`), { readonly: true, fileMustExist: true });
  try {
    const letters = db.prepare('SELECT id, code, reason, origin, payload FROM dead_letters WHERE id > ? ORDER BY id').all(deadLetterCursor) as DeadLetterRow[];
    if (letters.length > 0) deadLetterCursor = letters.at(-1)!.id;
    return letters;
  } finally {
    db.close();
  }
}

/** Every message of the DLQ stream on `subject` so far. */
async function dlqRecords(subject: string): Promise<Uint8Array[]> {
  const nc = await connect({ servers: stack.natsUrls });
  try {
    const consumer = await jetstream(nc).consumers.get(DLQ_STREAM, { filter_subjects: [subject] });
    const records: Uint8Array[] = [];
    const pending = (await consumer.info()).num_pending;
    if (pending === 0) return records;
    for await (const message of await consumer.fetch({ max_messages: pending, expires: 2000 })) {
      records.push(message.data);
      if (records.length >= pending) break;
    }
    return records;
  } finally {
    await nc.close();
  }
}

// --- the test ---------------------------------------------------------------------------------------------------

describe('every class of bad input gets its answer while valid traffic flows', () => {
  rows.forEach((row, index) => {
    const expect = row.expect;
    const outcome = 'dead' in expect ? `dead-lettered with ${expect.dead}` : 'refused' in expect ? `refused ${expect.refused} ${expect.code}` : `stored intact in ${expect.stored}`;
    test(`${row.transport}: ${row.name} is ${outcome}`, async () => {
      const id = 'stored' in expect ? `${agentId}-tricky-${index}` : `${agentId}-bad-${index}`;
      const input = row.input(id);
      const answer = await sendRow(row, input);
      const letters = newDeadLetters();

      if ('stored' in expect) {
        assert.deepEqual(letters, [], 'no dead letter');
        if (answer) assert.equal(answer.body.accepted, 1);
        accepted[expect.stored].add(id);
        storedRows.push({ id, row });
        return;
      }
      if ('refused' in expect) {
        assert.ok(answer);
        assert.equal(answer.status, expect.refused, JSON.stringify(answer.body));
        assert.equal(answer.body.code, expect.code);
        assert.match(answer.body.error ?? '', expect.reason);
        assert.deepEqual(letters, [], 'a refused request stores nothing, not even a dead letter');
        return;
      }
      if (answer) {
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        const [rejected] = answer.body.rejected ?? [];
        assert.equal(rejected?.code, expect.dead, JSON.stringify(answer.body));
        assert.match(rejected.reason, expect.reason);
        assert.equal(rejected.field, expect.field);
      }
      assert.equal(letters.length, 1, `one dead letter: ${JSON.stringify(letters.map((l) => [l.code, l.reason]))}`);
      const [letter] = letters;
      assert.equal(letter!.code, expect.dead);
      if (expect.field === undefined) assert.match(letter!.reason, expect.reason);
      else {
        assert.ok(letter!.reason.endsWith(` (field ${expect.field})`), letter!.reason);
        assert.match(letter!.reason.slice(0, -` (field ${expect.field})`.length), expect.reason);
      }
      assert.equal(letter!.origin, row.transport === 'mqtt' ? (row.topic ?? TELEMETRY_TOPIC) : '/v1/events');
      // The dead letter keeps the refused bytes (a nesting bomb: its first 64 KiB; over maxPayloadBytes: 1 KiB).
      const raw = Buffer.isBuffer(input) ? input : Buffer.from(input);
      assert.ok(raw.subarray(0, letter!.payload.length).equals(letter!.payload) && letter!.payload.length > 0 === raw.length > 0, 'the dead letter holds the refused bytes');
    });
  });

  test('every valid event arrived exactly once, the tricky ones byte for byte; no bad one did; nothing crashed', async (t) => {
    await traffic.stop();
    assert.deepEqual(traffic.errors, [], 'the valid stream never saw an error');
    assert.equal(traffic.disconnects(), 1, 'the streaming device stayed connected until it ended');
    accepted.device_telemetry = new Set([...accepted.device_telemetry, ...traffic.telemetry]);
    accepted.app_events = new Set([...accepted.app_events, ...traffic.app]);
    t.diagnostic(`${rows.length} rows; valid events: ${Object.entries(accepted).map(([table, ids]) => `${ids.size} in ${table}`).join(', ')}`);

    for (const [table, ids] of Object.entries(accepted) as Array<[Table, Set<string>]>) {
      const stored = await waitFor(() => rowsPerEventId(stack.questdbHttp, table, agentId), (r) => r.size >= ids.size, 60_000);
      assert.deepEqual([...stored.keys()].sort(), [...ids].sort(), `${table} holds exactly the accepted events`);
      assert.ok([...stored.values()].every((n) => n === 1), `no event is stored twice in ${table}`);
    }
    for (const { id, row } of storedRows) {
      const expect = row.expect as Extract<Expect, { stored: Table }>;
      const columns = Object.keys(expect.columns);
      const [stored] = await query<Record<string, unknown>>(stack.questdbHttp, `select ${columns.join(', ')} from ${expect.stored} where event_id = '${id}'`);
      assert.deepEqual(stored, expect.columns, `${row.name}: the row holds exactly what was sent`);
    }

    // Every refused event reached the hub's DLQ stream with its code; the hub dead-lettered none of the accepted ones.
    const deadRows = rows.filter((r) => 'dead' in r.expect).map((r) => (r.expect as { dead: string }).dead);
    const agentLetters = await waitFor(
      async () => (await dlqRecords(deadLetterSubject(agentId))).flatMap((data) => decodeDeadLetters(data)),
      (r) => r.length >= deadRows.length,
      30_000,
    );
    assert.deepEqual(agentLetters.map((r) => r.code).sort(), deadRows.sort());
    const hubLetters = (await dlqRecords(`${HUB_DEAD_LETTER_PREFIX}.>`)).map(decodeHubDeadLetter).filter((r) => r.agent === agentId);
    assert.deepEqual(hubLetters.map((r) => r.detail), [], 'the hub wrote every event the agent accepted');
    const hubMetrics = await (await fetch(`http://127.0.0.1:${hubPort}/metrics`)).text();
    assert.match(hubMetrics, /^hub_flushes_total\{[^}]*result="ok"[^}]*\} [1-9]/m);
    assert.doesNotMatch(hubMetrics, /^hub_flushes_total\{[^}]*result="error"[^}]*\} [1-9]/m, 'no flush failed');

    assert.equal(agent.child.exitCode, null, 'the agent is running');
    assert.equal(hub.child.exitCode, null, 'the hub is running');
    const health = (await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { status: string };
    assert.equal(health.status, 'ok');
  });
});
