/**
 * Data quality: tables of events with known defects -> the counts and scores of their minute (operator), the rows
 * of data_quality, the quality files beside the schemas, the refusal classes, and the threshold alerts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { classifyRefusal, refusedEventType } from '../../shared/dead-letter-records.js';
import type { WireEvent } from '../../shared/wire.js';
import { OperatorSet } from '../../hub/src/analytics/operator-set.js';
import { createOperator, type DataQualityOperator, type OperatorOutput, type QualityMinute } from '../../hub/src/operators/index.js';
import { refusalRows } from '../../hub/src/quality/edge-refusals.js';
import { QualityAlertChecker, QualityAlertEvaluator, type SourceMinute } from '../../hub/src/quality/quality-alerts.js';
import type { Alert } from '../../hub/src/operators/index.js';
import { compileQualityRules, parseQualityFile, readQualityRules } from '../../hub/src/quality/quality-rules.js';
import { analyticsRows } from '../../hub/src/sinks/questdb-analytics-sink.js';

const MINUTE = 60_000;
const T0 = Date.UTC(2026, 10, 30, 12, 0, 0);

function telemetry(n: number, overrides: { ts?: number; lagMs?: number; id?: string; device?: string; value?: number; unit?: string | null; metric?: string } = {}): WireEvent {
  const ts = overrides.ts ?? T0 + n * 100;
  const body: Record<string, unknown> = { device_id: overrides.device ?? `d${n % 3}`, metric: overrides.metric ?? 'temperature', value: overrides.value ?? 20, timestamp: ts };
  if (overrides.unit !== null) body.unit = overrides.unit ?? 'C';
  return { id: overrides.id ?? `e${n}`, type: 'device.telemetry', sv: 1, key: String(body.device_id), ts: ts * 1000, its: (ts + (overrides.lagMs ?? 50)) * 1000, src: 'mqtt', body };
}

function operator(extra: Record<string, unknown> = {}): DataQualityOperator {
  return createOperator({
    kind: 'data_quality',
    name: 'quality.device.telemetry',
    eventType: 'device.telemetry',
    expectedFields: ['device_id', 'value', 'unit'],
    ranges: [{ field: 'value', where: { metric: 'temperature' }, min: -40, max: 125 }],
    drift: [{ field: 'value', keyBy: 'key', minEvents: 20, maxStdDevs: 4, recentEvents: 3, baselineEvents: 200 }],
    futureToleranceMs: 5000,
    allowedLatenessMs: 2 * MINUTE,
    ...extra,
  }) as DataQualityOperator;
}

const rows = (outputs: OperatorOutput[]) => outputs.filter((o): o is QualityMinute => o.type === 'quality_minute');

test('one minute of events with planted defects gives each count, and the row when the watermark passes', () => {
  const op = operator();
  op.onBatchStart('agent-a');
  const events: WireEvent[] = [];
  for (let n = 0; n < 100; n++) {
    // 10 without unit, 5 out of range, 4 from the future (clock 10 s ahead), 3 duplicates of earlier events.
    if (n < 10) events.push(telemetry(n, { unit: null }));
    else if (n < 15) events.push(telemetry(n, { value: 300 }));
    else if (n < 19) events.push(telemetry(n, { lagMs: -10_000 }));
    else if (n < 22) events.push(telemetry(n, { id: `e${n - 19}` }));
    else events.push(telemetry(n, { lagMs: n }));
  }
  for (const e of events) assert.deepEqual(rows(op.onEvent(e)), []);
  assert.deepEqual(op.onWatermark(T0 + MINUTE - 1), [], 'the minute is not over yet');
  const [row, ...rest] = rows(op.onWatermark(T0 + MINUTE));
  assert.equal(rest.length, 0);
  assert.ok(row);
  assert.equal(row.source, 'agent-a');
  assert.equal(row.minuteStart, T0);
  assert.equal(row.events, 100);
  assert.equal(row.complete, 90);
  assert.deepEqual(row.missing, { unit: 10 });
  assert.equal(row.outOfRange, 5);
  assert.deepEqual(row.outOfRangeByField, { value: 5 });
  assert.equal(row.future, 4);
  assert.equal(row.duplicates, 3);
  assert.equal(row.late, 0);
  assert.equal(row.revision, 0);
  assert.equal(row.final, false);
  assert.equal(row.lagMaxMs, 99);
  assert.ok(row.lagP95Ms! >= 90 && row.lagP95Ms! <= 99, `p95 ${row.lagP95Ms}`);

  const table = analyticsRows([row], { windowResults: 'wr', alerts: 'al' }, 3).rows[0]!;
  const field = (name: string) => table.fields.find((f) => f.name === name)?.value;
  assert.equal(table.table, 'data_quality');
  assert.deepEqual(table.symbols.map((s) => `${s.name}=${s.value}`), ['source=agent-a', 'event_type=device.telemetry']);
  assert.equal(field('completeness'), 0.9);
  assert.equal(field('duplicate_share'), 0.03);
  assert.equal(field('future_share'), 0.04);
  assert.equal(field('out_of_range_share'), 0.05);
  assert.equal(field('stream_partition'), 3);
  assert.equal(field('missing_by_field'), '{"unit":10}');
});

test('sources and minutes are counted apart; a late event corrects its minute with a higher revision, once the watermark moves', () => {
  const op = operator();
  op.onBatchStart('a');
  op.onEvent(telemetry(1));
  op.onEvent(telemetry(2, { ts: T0 + MINUTE + 5 }));
  op.onBatchStart('b');
  op.onEvent(telemetry(3));
  const first = rows(op.onWatermark(T0 + MINUTE + 10));
  assert.deepEqual(first.map((r) => `${r.source}@${r.minuteStart - T0}:${r.events}`).sort(), ['a@0:1', 'b@0:1']);

  op.onBatchStart('a');
  assert.deepEqual(rows(op.onEvent(telemetry(4, { ts: T0 + 30_000, unit: null }))), [], 'the correction waits for the watermark');
  const corrected = rows(op.onWatermark(T0 + MINUTE + 20));
  assert.equal(corrected.length, 1, 'only the changed minute');
  assert.equal(corrected[0]!.source, 'a');
  assert.equal(corrected[0]!.events, 2);
  assert.equal(corrected[0]!.late, 1);
  assert.equal(corrected[0]!.complete, 1);
  assert.equal(corrected[0]!.revision, 1);

  // Past the allowed lateness (2 minutes) a minute goes out one last time as final, and is forgotten.
  const brief = (list: QualityMinute[]) => list.map((r) => `${r.source}@${(r.minuteStart - T0) / MINUTE}:${r.final}`).sort();
  assert.deepEqual(brief(rows(op.onWatermark(T0 + 3 * MINUTE))), ['a@0:true', 'a@1:false', 'b@0:true']);
  op.onEvent(telemetry(5, { ts: T0 + 1000 }));
  assert.equal(op.counters().lateEvents, 1, 'too late to correct: counted, not emitted');
  assert.deepEqual(brief(rows(op.onWatermark(T0 + 4 * MINUTE))), ['a@1:true']);
  assert.deepEqual(rows(op.onWatermark(T0 + 5 * MINUTE)), []);
});

test('a snapshot restores every count, the lag sketch and the drift state; the same events then give the same row', () => {
  const events = Array.from({ length: 50 }, (_, n) => telemetry(n, { lagMs: 10 + n }));
  const straight = operator();
  straight.onBatchStart('a');
  for (const e of events) straight.onEvent(e);
  const expected = rows(straight.onWatermark(T0 + MINUTE));

  const before = operator();
  before.onBatchStart('a');
  for (const e of events.slice(0, 20)) before.onEvent(e);
  const restored = operator();
  restored.restore(JSON.parse(JSON.stringify(before.snapshot())));
  restored.onBatchStart('a');
  for (const e of events.slice(20)) restored.onEvent(e);
  assert.deepEqual(rows(restored.onWatermark(T0 + MINUTE)), expected);
});

test('drift: a device whose readings jump raises one alert per episode and counts the drifting events', () => {
  const op = operator();
  op.onBatchStart('a');
  const alerts: OperatorOutput[] = [];
  let n = 0;
  for (let i = 0; i < 50; i++) alerts.push(...op.onEvent(telemetry(n++, { device: 'd1', value: 20 + (i % 2 ? 0.5 : -0.5) })));
  assert.equal(alerts.length, 0, 'stable readings');
  for (let i = 0; i < 10; i++) alerts.push(...op.onEvent(telemetry(n++, { device: 'd1', value: 80 })));
  assert.equal(alerts.length, 1, 'one alert for the episode');
  assert.equal(alerts[0]!.type, 'alert');
  assert.equal((alerts[0] as { rule: string }).rule, 'quality.device.telemetry.drift');
  assert.equal((alerts[0] as { key: string }).key, 'd1');
  const [row] = rows(op.onWatermark(T0 + MINUTE));
  assert.ok(row!.drift >= 5 && row!.drift <= 10, `drifting events counted: ${row!.drift}`);
});

test('silence: one alert per silent key once the watermark passes its last event + afterMs (looked for every afterMs / 10), re-armed by its next event, kept across a snapshot', () => {
  const op = operator({ silence: { afterMs: MINUTE, keyBy: 'key' } });
  op.onBatchStart('a');
  op.onEvent(telemetry(1, { device: 'quiet', ts: T0 }));
  op.onEvent(telemetry(2, { device: 'busy', ts: T0 + 1000 }));
  const alerts = (outputs: OperatorOutput[]) => outputs.filter((o) => o.type === 'alert').map((a) => `${a.rule} ${a.key} @${a.ts - T0}`);
  assert.deepEqual(alerts(op.onWatermark(T0 + MINUTE - 1)), []);
  op.onEvent(telemetry(3, { device: 'busy', ts: T0 + 50_000 }));
  assert.deepEqual(alerts(op.onWatermark(T0 + MINUTE + 1000)), [], 'looked for every tenth of the silence of event time');
  assert.deepEqual(alerts(op.onWatermark(T0 + MINUTE + 6000)), ['quality.device.telemetry.silent quiet @60000'], 'with the exact time');
  assert.deepEqual(alerts(op.onWatermark(T0 + 100_000)), [], 'once per silence; busy spoke at 50 s');
  const restored = operator({ silence: { afterMs: MINUTE, keyBy: 'key' } });
  restored.restore(JSON.parse(JSON.stringify(op.snapshot())));
  assert.deepEqual(alerts(restored.onWatermark(T0 + 2 * MINUTE + 50_000)), ['quality.device.telemetry.silent busy @110000'], 'the restored state goes on');
  restored.onBatchStart('a');
  restored.onEvent(telemetry(4, { device: 'quiet', ts: T0 + 3 * MINUTE }));
  assert.deepEqual(alerts(restored.onWatermark(T0 + 4 * MINUTE)), ['quality.device.telemetry.silent quiet @240000'], 'its next event re-arms it');
  // A key silent for a day is forgotten (the state of a changing fleet stays bounded): it comes back as a new key.
  const snapshotKeys = (o: DataQualityOperator) => (o.snapshot().state as { silent: unknown[] }).silent.length;
  assert.equal(snapshotKeys(restored), 2, 'busy and quiet are marked silent');
  restored.onWatermark(T0 + 4 * MINUTE + 25 * 3_600_000);
  assert.equal(snapshotKeys(restored), 0, 'forgotten after a day of event time');
  // A gap the watermark jumped over shows with the next event.
  const jumpy = operator({ silence: { afterMs: MINUTE, keyBy: 'key' } });
  jumpy.onEvent(telemetry(5, { device: 'd', ts: T0 }));
  assert.deepEqual(alerts(jumpy.onEvent(telemetry(6, { device: 'd', ts: T0 + 2 * MINUTE }))), ['quality.device.telemetry.silent d @60000']);
});

test('the operator set tells the quality rule which agent sent each batch', () => {
  const set = new OperatorSet([operator().definition], { maxOutOfOrdernessMs: 0, idleTimeoutMs: 60_000, advanceWhenAllIdle: false });
  set.apply({ v: 1, agent: 'gw-7', partition: 0, first: 1, last: 1, events: [telemetry(1)] }, 1, T0);
  const out = set.apply({ v: 1, agent: 'gw-7', partition: 0, first: 2, last: 2, events: [telemetry(2, { ts: T0 + MINUTE + 1 })] }, 2, T0);
  const [row] = rows(out ?? []);
  assert.equal(row?.source, 'gw-7');
  assert.equal(row?.ruleVersion?.length, 16, 'stamped with the rule version');
});

test('quality files: defaults, required fields of the latest schema, silence inside the rule; bad files name the field', () => {
  const file = parseQualityFile(JSON.stringify({ expectedFields: ['unit'], silence: { afterMs: 600000 } }), 'x/quality.json');
  assert.equal(file.futureToleranceMs, 5000);
  assert.equal(file.alerts.forMinutes, 5);
  const rules = compileQualityRules('device.telemetry', file, ['device_id', 'value']);
  assert.deepEqual(rules.map((r) => `${r.kind}:${r.name}`), ['data_quality:quality.device.telemetry']);
  assert.deepEqual((rules[0] as { silence?: unknown }).silence, { afterMs: 600000, keyBy: 'key' });
  assert.deepEqual((rules[0] as { expectedFields: string[] }).expectedFields, ['device_id', 'value', 'unit']);

  assert.throws(() => parseQualityFile('{"ranges":[{"field":"v","min":"cold"}]}', 'f'), /quality\.ranges\.0\.min must be number/);
  assert.throws(() => parseQualityFile('{"ranges":[{"field":"v"}]}', 'f'), /ranges\[0\] needs min, max or both/);
  assert.throws(() => parseQualityFile('{"expected":["a"]}', 'f'), /quality\.expected is not an allowed field/);
  assert.throws(() => parseQualityFile('{', 'f'), /f: not JSON/);

  const dir = mkdtempSync(join(tmpdir(), 'quality-'));
  mkdirSync(join(dir, 'good.type'));
  writeFileSync(join(dir, 'good.type', 'v1.json'), JSON.stringify({ $id: 'good.type/v1', type: 'object', required: ['id'], properties: { id: { type: 'string' } }, 'x-partition-key': 'id', 'x-questdb': { table: 'good', columns: [] } }));
  writeFileSync(join(dir, 'good.type', 'quality.json'), '{"expectedFields":["name"]}');
  mkdirSync(join(dir, 'bad.type'));
  writeFileSync(join(dir, 'bad.type', 'quality.json'), '{"futureToleranceMs":-1}');
  const set = readQualityRules(dir);
  assert.deepEqual(set.rules.map((r) => r.rule.name), ['quality.good.type']);
  assert.deepEqual((set.rules[0]!.rule as { expectedFields: string[] }).expectedFields, ['id', 'name']);
  assert.equal(set.problems.length, 1);
  assert.match(set.problems[0]!.error, /bad\.type\/quality\.json: quality\.futureToleranceMs must be >= 0/);
  writeFileSync(join(dir, 'good.type', 'quality.json'), '{"expectedFields":["other"]}');
  assert.notEqual(readQualityRules(dir).fingerprint, set.fingerprint, 'an edit changes the fingerprint');

  assert.deepEqual(readQualityRules(join(import.meta.dirname, '../../schemas')).problems, [], "the repo's quality files are valid");
});

test('refusals: each reason the edge writes falls into its class; the event type comes from the payload or the source', () => {
  const cases: Array<[string, string, string]> = [
    ['EDGE_ERR_SCHEMA_INVALID', '/value must be number (field /value)', 'type'],
    ['EDGE_ERR_SCHEMA_INVALID', '/value must be <= 125 (field /value)', 'range'],
    ['EDGE_ERR_SCHEMA_INVALID', '/status must be one of "online", "offline" (field /status)', 'enum'],
    ['EDGE_ERR_SCHEMA_INVALID', '/device_id must match pattern "^[A-Za-z0-9._:-]+$" (field /device_id)', 'format'],
    ['EDGE_ERR_SCHEMA_INVALID', '/timestamp must be an RFC 3339 date-time string or epoch milliseconds (field /timestamp)', 'format'],
    ['EDGE_ERR_SCHEMA_INVALID', '/unit must NOT have more than 16 characters (field /unit)', 'size'],
    ['EDGE_ERR_SCHEMA_INVALID', '/timestamp is required (field /timestamp)', 'missing'],
    ['EDGE_ERR_SCHEMA_INVALID', '/colour is not an allowed field (field /colour)', 'unexpected_field'],
    ['EDGE_ERR_MALFORMED_JSON', 'Unexpected end of JSON input', 'malformed'],
    ['EDGE_ERR_TOO_LARGE', 'event of 2 MB over the limit', 'size'],
    ['EDGE_ERR_UNKNOWN_TYPE', 'unknown event type "x"', 'unknown_type'],
    ['EDGE_ERR_FUTURE_TIMESTAMP', 'too far ahead', 'future'],
  ];
  for (const [code, reason, expected] of cases) assert.equal(classifyRefusal(code, reason), expected, `${code}: ${reason}`);

  const payload = (text: string) => new Uint8Array(Buffer.from(text));
  assert.equal(refusedEventType({ payload: payload('{"type":"device.status","status":1}') }), 'device.status');
  assert.equal(refusedEventType({ payload: payload('{"value":"x"'), defaultType: 'device.telemetry' }), 'device.telemetry');
  assert.equal(refusedEventType({ payload: payload('garbage') }), 'unknown');

  const [row] = refusalRows([{ agent: 'gw-1', id: 42, at: T0, source: 'mqtt', code: 'EDGE_ERR_SCHEMA_INVALID', reason: '/value must be number', payload: payload('{"value":"x"}'), bytes: 13, defaultType: 'device.telemetry' }]);
  assert.equal(row!.ts, T0 * 1000);
  assert.deepEqual(row!.symbols.map((s) => `${s.name}=${s.value}`), ['source=gw-1', 'event_type=device.telemetry', 'check=type', 'code=EDGE_ERR_SCHEMA_INVALID', 'ingest=mqtt']);
  assert.equal(row!.id, refusalRows([{ agent: 'gw-1', id: 42, at: T0, source: 'http', code: 'c', reason: 'r', payload: payload(''), bytes: 0 }])[0]!.id, 'the same letter is the same row');
});

test('thresholds: raised when every one of the last forMinutes consecutive minutes breaches, once, and resolved after', () => {
  const minute = (i: number, events: number, refusals: number, lag = 100): SourceMinute => ({ ts: T0 + i * MINUTE, source: 'gw-1', events, complete: events, duplicates: 0, future: 0, outOfRange: 0, lagP95Ms: lag, refusals });
  const evaluator = new QualityAlertEvaluator();
  const thresholds = { forMinutes: 3, validityBelow: 0.99, lagP95AboveMs: 2000 };
  const minutes = [minute(0, 100, 0), minute(1, 95, 5), minute(2, 95, 5)];
  assert.deepEqual(evaluator.evaluate('device.telemetry', minutes, thresholds), [], 'two bad minutes of three');
  minutes.push(minute(3, 90, 10));
  const [raised, ...others] = evaluator.evaluate('device.telemetry', minutes, thresholds);
  assert.equal(others.length, 0, 'only validity; lag is fine');
  assert.equal(raised!.rule, 'quality.device.telemetry.validity');
  assert.equal(raised!.key, 'gw-1');
  assert.equal(raised!.ts, T0 + MINUTE, 'its time is the first bad minute');
  assert.match(raised!.message, /validity 90\.00 % below 99\.00 % for 3 minutes/);
  minutes.push(minute(4, 90, 10));
  assert.deepEqual(evaluator.evaluate('device.telemetry', minutes, thresholds), [], 'raised once per episode');
  minutes.push(minute(5, 100, 0));
  const [resolved] = evaluator.evaluate('device.telemetry', minutes, thresholds);
  assert.equal(resolved!.details.state, 'resolved');
  assert.equal(resolved!.severity, 'info');
  assert.equal(resolved!.ts, T0 + 5 * MINUTE, 'resolved at the first fine minute');
  // Another checker (another hub) that looks one minute later resolves it with the same time, so the same message id.
  const late = new QualityAlertEvaluator();
  late.evaluate('device.telemetry', minutes.slice(0, 5), thresholds);
  const [sameResolution] = late.evaluate('device.telemetry', [...minutes, minute(6, 100, 0)], thresholds);
  assert.equal(sameResolution!.ts, resolved!.ts);

  // A gap in the minutes breaks the run.
  const gappy = [minute(0, 50, 50), minute(1, 50, 50), minute(3, 50, 50)];
  assert.deepEqual(new QualityAlertEvaluator().evaluate('t', gappy, thresholds), []);
});

test('the checker adds refusals to closed minutes only: the refusals of minutes the watermark has not closed yet wait', async () => {
  const iso = (ms: number) => new Date(ms).toISOString().replace('Z', '000Z');
  const sqls: string[] = [];
  const rest = {
    exec: async (sql: string) => {
      sqls.push(sql);
      if (sql.startsWith('SELECT max(ts)')) return { dataset: [[iso(T0 + MINUTE)]] };
      if (sql.includes('FROM data_quality')) {
        return { dataset: [0, 1].map((i) => [iso(T0 + i * MINUTE), 'gw-1', 98, 98, 0, 0, 0, 100]) };
      }
      // Two refusals in each closed minute (98 %), and many in the two minutes still open.
      return { dataset: [0, 1, 2, 3].map((i) => [iso(T0 + i * MINUTE), 'gw-1', i < 2 ? 2 : 50]) };
    },
  };
  const raised: Alert[] = [];
  const checker = new QualityAlertChecker({
    rest,
    thresholds: () => new Map([['device.telemetry', { forMinutes: 2, validityBelow: 0.99, completenessBelow: 0.95 }]]),
    raise: (alerts) => raised.push(...alerts),
    evaluateIntervalMs: 1000,
    log: { warn: () => undefined } as never,
  });
  await checker.check();
  assert.deepEqual(raised.map((a) => `${a.rule} ${a.ts - T0} ${a.details.value}`), ['quality.device.telemetry.validity 0 0.98'], 'validity of the closed minutes; completeness is fine');
  assert.ok(sqls.every((sql) => !/dateadd\('m', -\d+, \(SELECT/.test(sql)), 'no sub-query as a function argument (QuestDB refuses it)');
});
