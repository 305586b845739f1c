/**
 * The rule format: bad rules are refused with a message naming the field, defaults are filled in, every file in
 * hub/rules/ validates and builds its operators, and the ready rules behave as the mission describes them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { WireEvent } from '../../shared/wire.js';
import { OperatorErrorCode } from '../../hub/src/operators/errors.js';
import type { OperatorOutput } from '../../hub/src/operators/operator.js';
import { checkUniqueNames, createOperator, parseRuleFile, validateRule, type Rule } from '../../hub/src/operators/rules.js';

const RULES_DIR = join(import.meta.dirname, '../../hub/rules');

const window = {
  kind: 'window',
  name: 'w',
  eventType: 'device.telemetry',
  window: { type: 'tumbling', sizeMs: 10_000 },
  aggregates: [{ name: 'n', fn: 'count' }],
};
const threshold = { kind: 'threshold_duration', name: 't', eventType: 'device.telemetry', field: 'value', op: '>', value: 80, durationMs: 30_000 };

const refused: Array<{ name: string; rule: unknown; message: RegExp }> = [
  { name: 'an unknown kind, listing the kinds', rule: { ...window, kind: 'tumbling' }, message: /rule\.kind must be one of "window", "threshold_duration", "sequence_within", "absence", "count_in_window", "data_quality"/ },
  { name: 'a missing kind', rule: { name: 'x' }, message: /rule\.kind must be one of/ },
  { name: 'a missing required field', rule: { ...threshold, durationMs: undefined }, message: /rule\.durationMs is required/ },
  { name: 'an unknown field', rule: { ...threshold, duration: 30 }, message: /rule\.duration is not an allowed field/ },
  { name: 'an unknown comparison', rule: { ...threshold, op: '=>' }, message: /rule\.op must be one of ">", ">=", "<", "<=", "==", "!="/ },
  { name: 'a threshold that is not a number', rule: { ...threshold, value: '80' }, message: /rule\.value must be number/ },
  { name: 'a zero duration', rule: { ...threshold, durationMs: 0 }, message: /rule\.durationMs must be >= 1/ },
  { name: 'an unknown window type', rule: { ...window, window: { type: 'hopping', sizeMs: 10 } }, message: /rule\.window\.type must be one of "tumbling", "sliding", "session", "count"/ },
  { name: 'a sliding window without slideMs', rule: { ...window, window: { type: 'sliding', sizeMs: 10 } }, message: /rule\.window\.slideMs is required/ },
  { name: 'a slide longer than the window', rule: { ...window, window: { type: 'sliding', sizeMs: 10, slideMs: 20 } }, message: /rule\.window\.slideMs must be <= sizeMs \(10\), got 20/ },
  { name: 'an unknown aggregate function', rule: { ...window, aggregates: [{ name: 'm', fn: 'median', field: 'value' }] }, message: /rule\.aggregates\[0\]\.fn must be one of "count", "sum"/ },
  { name: 'an aggregate needing a field without one', rule: { ...window, aggregates: [{ name: 'a', fn: 'avg' }] }, message: /rule\.aggregates\[0\]\.field is required for fn "avg"/ },
  { name: 'two aggregates with one name', rule: { ...window, aggregates: [{ name: 'n', fn: 'count' }, { name: 'n', fn: 'max', field: 'value' }] }, message: /rule\.aggregates\[1\]\.name "n" is used twice/ },
  { name: 'an aggregate named like a column of every result row', rule: { ...window, aggregates: [{ name: 'Key', fn: 'count' }] }, message: /rule\.aggregates\[0\]\.name "Key" is reserved for a column of every window result \(ts, rule, key,/ },
  { name: 'having naming no aggregate', rule: { ...window, having: { aggregate: 'm', op: '>', value: 1 } }, message: /rule\.having\.aggregate must name one of the aggregates \(n\), got "m"/ },
  { name: 'an empty keyBy list', rule: { ...window, keyBy: [] }, message: /rule\.keyBy must NOT have fewer than 1 items/ },
  { name: 'a sequence step with zero repeats', rule: { kind: 'sequence_within', name: 's', withinMs: 1, steps: [{ eventType: 'a', times: 0 }] }, message: /rule\.steps\[0\]\.times must be >= 1/ },
  { name: 'a rule name with spaces', rule: { ...window, name: 'my rule' }, message: /rule\.name must match pattern/ },
];

for (const { name, rule, message } of refused) {
  test(`rule schema refuses ${name}, naming the field`, () => {
    assert.throws(
      () => validateRule(rule),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, OperatorErrorCode.RULE_INVALID);
        assert.match(error.message, message);
        return true;
      },
    );
  });
}

test('rule schema lists every bad field at once', () => {
  assert.throws(() => validateRule({ ...threshold, op: '=>', durationMs: -1 }), /invalid rule "t":\n {2}- rule\.op must be one of .*\n {2}- rule\.durationMs must be >= 1/);
});

test('rule schema fills in defaults without changing the input', () => {
  const input = { kind: 'absence', name: 'a', eventType: 'device.telemetry', silenceMs: 60_000 };
  assert.deepEqual(validateRule(input), { ...input, keyBy: 'key', severity: 'warning' });
  assert.deepEqual(validateRule(window), { ...window, keyBy: 'key', allowedLatenessMs: 0 });
  assert.equal('keyBy' in input, false);
});

test('rule file parsing names the file and the rule position, and refuses duplicate names', () => {
  assert.throws(() => parseRuleFile('rules:\n  - { kind: absence, name: a, eventType: x }\n', 'bad.yaml'), /invalid rule file bad\.yaml:\n {2}- file\.rules\[0\]\.silenceMs is required/);
  assert.throws(() => parseRuleFile('rules: [\n', 'broken.yaml'), /rule file broken\.yaml is not valid YAML/);
  const twice = 'rules:\n  - { kind: absence, name: a, eventType: x, silenceMs: 1 }\n  - { kind: absence, name: a, eventType: y, silenceMs: 1 }\n';
  assert.throws(() => parseRuleFile(twice, 'twice.yaml'), /rule name "a" is used more than once/);
});

function loadAllRules(): Rule[] {
  const files = readdirSync(RULES_DIR).filter((file) => file.endsWith('.yaml'));
  assert.ok(files.length >= 6, `expected the mission's rule files in ${RULES_DIR}`);
  return files.flatMap((file) => parseRuleFile(readFileSync(join(RULES_DIR, file), 'utf8'), file));
}

test('every file in hub/rules validates, names are unique across files, and each rule builds its operator', () => {
  const rules = loadAllRules();
  checkUniqueNames(rules, 'hub/rules');
  assert.deepEqual(rules.map((rule) => rule.name).sort(), [
    'app-events-per-device-10s',
    'binge-watching',
    'device-silent',
    'hyperactive-user',
    'overheating',
    'suspicious-login',
    'telemetry-per-device-10s',
  ]);
  for (const rule of rules) assert.equal(createOperator(rule).rule, rule.name);
});

function appEvent(user: string, tsMs: number, body: Record<string, unknown>): WireEvent {
  return { id: `${user}@${tsMs}`, type: 'app.event', sv: 1, key: user, ts: tsMs * 1000, its: tsMs * 1000, src: 'test', body: { user_id: user, timestamp: tsMs, ...body } };
}

function ruleNamed(name: string): Rule {
  const rule = loadAllRules().find((candidate) => candidate.name === name);
  assert.ok(rule, name);
  return rule;
}

test('ready rule binge-watching reports a user with 3 video completions in a 4 h window, not one with 2', () => {
  const operator = createOperator(ruleNamed('binge-watching'));
  const hour = 3_600_000;
  const events = [
    appEvent('binger', 1 * hour, { event_type: 'video_complete', session_id: 's1' }),
    appEvent('binger', 2 * hour, { event_type: 'video_complete', session_id: 's1' }),
    appEvent('binger', 2.5 * hour, { event_type: 'video_play', session_id: 's1' }),
    appEvent('binger', 3.5 * hour, { event_type: 'video_complete', session_id: 's2' }),
    appEvent('casual', 1 * hour, { event_type: 'video_complete', session_id: 's3' }),
    appEvent('casual', 3 * hour, { event_type: 'video_complete', session_id: 's3' }),
  ];
  const outputs: OperatorOutput[] = [...events.flatMap((event) => operator.onEvent(event)), ...operator.onWatermark(10 * hour)];
  // Windows [0 h, 4 h) and [1 h, 5 h) hold binger's 3 completions; no window holds 3 of casual's.
  assert.deepEqual(
    outputs.map((output) => output.type === 'window_result' && [output.key, output.windowStart / hour, output.windowEnd / hour, output.values, output.final]),
    [
      ['binger', 0, 4, { videos_completed: 3, sessions: 2 }, true],
      ['binger', 1, 5, { videos_completed: 3, sessions: 2 }, true],
    ],
  );
});

test('ready rule app-events-per-device-10s counts events and distinct users per event type and device type', () => {
  const operator = createOperator(ruleNamed('app-events-per-device-10s'));
  const events = [
    appEvent('u1', 1_000, { event_type: 'video_play', context: { device_type: 'tv' } }),
    appEvent('u1', 2_000, { event_type: 'video_play', context: { device_type: 'tv' } }),
    appEvent('u2', 3_000, { event_type: 'video_play', context: { device_type: 'tv' } }),
    appEvent('u3', 4_000, { event_type: 'video_play', context: { device_type: 'phone' } }),
  ];
  for (const event of events) operator.onEvent(event);
  const outputs = operator.onWatermark(15_000);
  assert.deepEqual(
    outputs.map((output) => output.type === 'window_result' && [output.key, output.values, output.final]),
    [
      ['video_play|phone', { events: 1, distinct_users: 1 }, true],
      ['video_play|tv', { events: 3, distinct_users: 2 }, true],
    ],
  );
});
