/**
 * CEP operators as tables: fixed-timestamp events and watermark advances in, alerts (and late events) out, with
 * positive and negative cases per rule. Every case is also replayed with a snapshot after each step, restored
 * into a fresh operator through JSON, which must give the same output as uninterrupted.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WireEvent } from '../../shared/wire.js';
import type { AbsenceRule } from '../../hub/src/operators/absence.js';
import type { CountInWindowRule } from '../../hub/src/operators/count-in-window.js';
import type { OperatorCounters, OperatorOutput, StreamOperator } from '../../hub/src/operators/operator.js';
import { createOperator, type Rule } from '../../hub/src/operators/rules.js';
import type { SequenceWithinRule } from '../../hub/src/operators/sequence-within.js';
import type { ThresholdDurationRule } from '../../hub/src/operators/threshold-duration.js';

function telemetry(device: string, tsMs: number, value: number, metric = 'temperature'): WireEvent {
  return { id: `${device}@${tsMs}`, type: 'device.telemetry', sv: 1, key: device, ts: tsMs * 1000, its: tsMs * 1000, src: 'test', body: { device_id: device, metric, value } };
}

function app(user: string, tsMs: number, eventType: string): WireEvent {
  return {
    id: `${user}:${eventType}@${tsMs}`,
    type: 'app.event',
    sv: 1,
    key: user,
    ts: tsMs * 1000,
    its: tsMs * 1000,
    src: 'test',
    body: { event_id: `${user}-${tsMs}`, event_type: eventType, user_id: user, timestamp: tsMs },
  };
}

type Step = WireEvent | { watermark: number };

function run(operator: StreamOperator, steps: Step[]): OperatorOutput[] {
  return steps.flatMap((step) => ('watermark' in step ? operator.onWatermark(step.watermark) : operator.onEvent(step)));
}

function brief(output: OperatorOutput): string {
  switch (output.type) {
    case 'quality_minute':
      return `Q ${output.source} @${output.minuteStart}`;
    case 'alert':
      return `A ${output.key} @${output.ts} ${output.severity}`;
    case 'late_event':
      return `L ${output.event.id}`;
    case 'window_result':
      return `R ${output.key}`;
  }
}

const overheating: ThresholdDurationRule = {
  kind: 'threshold_duration',
  name: 'overheating',
  eventType: 'device.telemetry',
  where: { metric: 'temperature' },
  keyBy: 'key',
  field: 'value',
  op: '>',
  value: 80,
  durationMs: 30_000,
  maxGapMs: 20_000,
  severity: 'critical',
};

const suspiciousLogin: SequenceWithinRule = {
  kind: 'sequence_within',
  name: 'suspicious-login',
  keyBy: 'key',
  severity: 'critical',
  steps: [
    { eventType: 'app.event', where: { event_type: 'failed_login' }, times: 3 },
    { eventType: 'app.event', where: { event_type: 'login_success' }, times: 1 },
  ],
  withinMs: 300_000,
};

const deviceSilent: AbsenceRule = { kind: 'absence', name: 'device-silent', eventType: 'device.telemetry', keyBy: 'key', silenceMs: 60_000, severity: 'warning' };

const hyperactive: CountInWindowRule = {
  kind: 'count_in_window',
  name: 'hyperactive',
  eventType: 'app.event',
  keyBy: 'key',
  windowMs: 10_000,
  threshold: 3,
  severity: 'warning',
};

const failed = (user: string, ts: number) => app(user, ts, 'failed_login');
const success = (user: string, ts: number) => app(user, ts, 'login_success');
const min = 60_000;

interface Case {
  name: string;
  rule: Rule;
  steps: Step[];
  expected: string[];
  counters?: Partial<OperatorCounters>;
}

const cases: Case[] = [
  // threshold_duration: temperature > 80 for 30 s
  {
    name: 'overheating alerts once the condition has held for 30 s, once per episode',
    rule: overheating,
    steps: [telemetry('d1', 0, 85), telemetry('d1', 10_000, 86), telemetry('d1', 20_000, 84), telemetry('d1', 30_000, 90), telemetry('d1', 40_000, 95), { watermark: 50_000 }],
    expected: ['A d1 @30000 critical'],
    counters: { alerts: 1, eventsMatched: 5 },
  },
  {
    name: 'overheating does not alert when a reading breaks the condition before 30 s',
    rule: overheating,
    steps: [telemetry('d1', 0, 85), telemetry('d1', 10_000, 86), telemetry('d1', 20_000, 80), telemetry('d1', 25_000, 85), telemetry('d1', 40_000, 85), { watermark: 50_000 }],
    expected: [],
  },
  {
    name: 'overheating re-arms after the condition breaks and alerts for the next episode',
    rule: overheating,
    steps: [
      telemetry('d1', 0, 85),
      telemetry('d1', 15_000, 85),
      telemetry('d1', 30_000, 85),
      telemetry('d1', 40_000, 70),
      telemetry('d1', 50_000, 81),
      telemetry('d1', 65_000, 82),
      telemetry('d1', 80_000, 83),
      { watermark: 90_000 },
    ],
    expected: ['A d1 @30000 critical', 'A d1 @80000 critical'],
  },
  {
    name: 'overheating ignores other metrics and keeps devices apart',
    rule: overheating,
    steps: [telemetry('d1', 0, 85), telemetry('d1', 10_000, 99, 'humidity'), telemetry('d2', 15_000, 90), telemetry('d1', 20_000, 85), telemetry('d1', 30_000, 85), { watermark: 40_000 }],
    expected: ['A d1 @30000 critical'],
  },
  {
    name: 'overheating gives the same alert when readings arrive out of order within the watermark bound',
    rule: overheating,
    steps: [telemetry('d1', 30_000, 90), telemetry('d1', 10_000, 86), telemetry('d1', 0, 85), telemetry('d1', 20_000, 84), { watermark: 30_001 }],
    expected: ['A d1 @30000 critical'],
  },
  {
    name: 'overheating restarts the episode after a gap longer than maxGapMs between readings',
    rule: overheating,
    steps: [telemetry('d1', 0, 85), telemetry('d1', 25_000, 85), telemetry('d1', 40_000, 85), { watermark: 45_000 }, telemetry('d1', 55_000, 85), { watermark: 60_000 }],
    expected: ['A d1 @55000 critical'],
  },
  {
    name: 'overheating sends a reading behind the watermark to the late-event side output',
    rule: overheating,
    steps: [telemetry('d1', 40_000, 85), { watermark: 35_000 }, telemetry('d1', 10_000, 85)],
    expected: ['L d1@10000'],
    counters: { lateEvents: 1, eventsMatched: 1 },
  },
  // sequence_within: failed_login x3 then login_success within 5 min
  {
    name: 'suspicious login alerts on 3 failures then a success within 5 min',
    rule: suspiciousLogin,
    steps: [failed('u1', 0), failed('u1', min), failed('u1', 2 * min), success('u1', 3 * min), { watermark: 3 * min + 1 }],
    expected: ['A u1 @180000 critical'],
  },
  {
    name: 'suspicious login does not alert when the sequence takes longer than 5 min',
    rule: suspiciousLogin,
    steps: [failed('u1', 0), failed('u1', 2 * min), failed('u1', 4 * min), success('u1', 5 * min + 1), { watermark: 10 * min }],
    expected: [],
  },
  {
    name: 'suspicious login does not alert on 2 failures then a success',
    rule: suspiciousLogin,
    steps: [failed('u1', 0), failed('u1', 1_000), success('u1', 2_000), { watermark: 10 * min }],
    expected: [],
  },
  {
    name: 'suspicious login: a success between the failures breaks the sequence',
    rule: suspiciousLogin,
    steps: [failed('u1', 0), failed('u1', 1_000), success('u1', 2_000), failed('u1', 3_000), success('u1', 4_000), { watermark: 10 * min }],
    expected: [],
  },
  {
    name: 'suspicious login ignores unrelated event types between the steps',
    rule: suspiciousLogin,
    steps: [failed('u1', 0), app('u1', 500, 'video_play'), failed('u1', 1_000), failed('u1', 2_000), app('u1', 2_500, 'purchase'), success('u1', 3_000), { watermark: min }],
    expected: ['A u1 @3000 critical'],
  },
  {
    name: 'suspicious login counts per user: another user\'s failures do not complete the sequence',
    rule: suspiciousLogin,
    steps: [failed('u1', 0), failed('u1', 1_000), failed('u2', 1_500), success('u1', 2_000), { watermark: min }],
    expected: [],
  },
  {
    name: 'suspicious login: more failures still match, once, and the next success alone does not alert again',
    rule: suspiciousLogin,
    steps: [failed('u1', 0), failed('u1', 1_000), failed('u1', 2_000), failed('u1', 3_000), success('u1', 4_000), success('u1', 5_000), { watermark: min }],
    expected: ['A u1 @4000 critical'],
  },
  // absence: no telemetry from a device for 60 s
  {
    name: 'device silent alerts when the watermark reaches 60 s after the last reading, once',
    rule: deviceSilent,
    steps: [telemetry('d1', 0, 20), { watermark: 59_999 }, { watermark: 60_000 }, { watermark: 120_000 }],
    expected: ['A d1 @60000 warning'],
  },
  {
    name: 'device silent re-arms with the next reading',
    rule: deviceSilent,
    steps: [telemetry('d1', 0, 20), { watermark: 60_000 }, telemetry('d1', 70_000, 20), { watermark: 129_999 }, { watermark: 130_000 }],
    expected: ['A d1 @60000 warning', 'A d1 @130000 warning'],
  },
  {
    name: 'device silent does not alert for a device reporting every 30 s, and does for the one that stops',
    rule: deviceSilent,
    steps: [
      ...[0, 30_000, 60_000, 90_000, 120_000].flatMap((ts) => [telemetry('d1', ts, 20), ...(ts <= 30_000 ? [telemetry('d2', ts, 20)] : [])]),
      { watermark: 120_001 },
    ],
    expected: ['A d2 @90000 warning'],
  },
  {
    name: 'device silent finds a silence between two readings even when the watermark jumps over it',
    rule: deviceSilent,
    steps: [telemetry('d1', 0, 20), telemetry('d1', 100_000, 20), { watermark: 100_001 }, { watermark: 160_000 }],
    expected: ['A d1 @60000 warning', 'A d1 @160000 warning'],
  },
  // count_in_window: more than 3 events per user in any 10 s
  {
    name: 'hyperactive alerts on the 4th event within 10 s, once per episode, and re-arms after a quiet window',
    rule: hyperactive,
    steps: [
      ...[0, 1_000, 2_000, 3_000, 4_000].map((ts) => app('u1', ts, 'video_play')),
      ...[20_000, 20_001, 20_002, 20_003].map((ts) => app('u1', ts, 'video_play')),
      { watermark: 30_000 },
    ],
    expected: ['A u1 @3000 warning', 'A u1 @20003 warning'],
    counters: { alerts: 2, eventsMatched: 9 },
  },
  {
    name: 'hyperactive does not alert on 3 events in any 10 s, the window being (ts - 10 s, ts]',
    rule: hyperactive,
    steps: [...[0, 1_000, 2_000, 10_000, 11_000, 12_000, 20_500].map((ts) => app('u1', ts, 'video_play')), { watermark: 30_000 }],
    expected: [],
  },
  {
    name: 'hyperactive counts per user',
    rule: hyperactive,
    steps: [...[0, 1_000].flatMap((ts) => [app('u1', ts, 'login'), app('u2', ts, 'login')]), app('u2', 2_000, 'login'), app('u2', 3_000, 'login'), { watermark: 5_000 }],
    expected: ['A u2 @3000 warning'],
  },
];

for (const { name, rule, steps, expected, counters } of cases) {
  test(name, () => {
    const operator = createOperator(rule);
    assert.deepEqual(run(operator, steps).map(brief), expected);
    if (counters) {
      const actual = operator.counters();
      for (const [counter, value] of Object.entries(counters)) assert.equal(actual[counter as keyof OperatorCounters], value, counter);
    }
  });
}

test('alerts carry the rule, a message and details', () => {
  const operator = createOperator(suspiciousLogin);
  const [alert] = run(operator, [failed('u1', 0), failed('u1', 1_000), failed('u1', 2_000), success('u1', 3_000), { watermark: 4_000 }]);
  assert.deepEqual(alert, {
    type: 'alert',
    rule: 'suspicious-login',
    key: 'u1',
    severity: 'critical',
    ts: 3_000,
    message: 'failed_login x3 then login_success within 5 min for u1',
    details: { startedAt: 0, durationMs: 3_000, events: ['u1:failed_login@0', 'u1:failed_login@1000', 'u1:failed_login@2000', 'u1:login_success@3000'] },
  });
});

test('CEP snapshot after any step, restored through JSON, continues with the same output and counters', () => {
  for (const { name, rule, steps } of cases) {
    const uninterrupted = createOperator(rule);
    const expected = run(uninterrupted, steps).map(brief);
    for (let split = 0; split <= steps.length; split++) {
      const before = createOperator(rule);
      const head = run(before, steps.slice(0, split)).map(brief);
      const after = createOperator(rule);
      after.restore(JSON.parse(JSON.stringify(before.snapshot())));
      const tail = run(after, steps.slice(split)).map(brief);
      assert.deepEqual([...head, ...tail], expected, `${name}, snapshot after step ${split}`);
      assert.deepEqual(after.counters(), uninterrupted.counters(), `${name}, counters after step ${split}`);
    }
  }
});

test('CEP operators forget keys that can no longer match, so state stays bounded', () => {
  const login = createOperator(suspiciousLogin);
  run(login, [failed('u1', 0), failed('u2', 0), { watermark: 10 * min }]);
  assert.deepEqual((login.snapshot().state as { keys: unknown[] }).keys, []);
  const rate = createOperator(hyperactive);
  run(rate, [app('u1', 0, 'login'), { watermark: 10_000 }]);
  assert.deepEqual((rate.snapshot().state as { keys: unknown[] }).keys, []);
});
