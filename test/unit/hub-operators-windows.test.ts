/**
 * Window assigners and the keyed window operator as tables (eKuiper's RuleTest style): fixed-timestamp events and
 * watermark advances in, compact expected outputs and counters out. Every case is also run with a snapshot taken
 * after each step, restored into a fresh operator through JSON, which must give the same output as uninterrupted.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WireEvent } from '../../shared/wire.js';
import type { OperatorCounters, OperatorOutput, StreamOperator } from '../../hub/src/operators/operator.js';
import { createOperator } from '../../hub/src/operators/rules.js';
import { SessionWindows } from '../../hub/src/operators/session-window.js';
import { SlidingWindows } from '../../hub/src/operators/sliding-window.js';
import { TumblingWindows } from '../../hub/src/operators/tumbling-window.js';
import type { WindowRule } from '../../hub/src/operators/window-operator.js';

/** A telemetry reading of `key` at event time `tsMs` (the wire carries microseconds). */
function reading(key: string, tsMs: number, value: number, metric = 'temperature'): WireEvent {
  return { id: `${key}@${tsMs}`, type: 'device.telemetry', sv: 1, key, ts: tsMs * 1000, its: tsMs * 1000, src: 'test', body: { device_id: key, metric, value } };
}

type Step = WireEvent | { watermark: number };

function run(operator: StreamOperator, steps: Step[]): OperatorOutput[] {
  return steps.flatMap((step) => ('watermark' in step ? operator.onWatermark(step.watermark) : operator.onEvent(step)));
}

/** `R key start-end rN open|final {values}`, `L event-id`, `A key @ts`. */
function brief(output: OperatorOutput): string {
  switch (output.type) {
    case 'quality_minute':
      return `Q ${output.source} @${output.minuteStart}`;
    case 'window_result': {
      const replaces = output.replaces ? ` replaces ${output.replaces.map((b) => `${b.windowStart}-${b.windowEnd}`).join(',')}` : '';
      return `R ${output.key} ${output.windowStart}-${output.windowEnd} r${output.revision} ${output.final ? 'final' : 'open'} ${JSON.stringify(output.values)}${replaces}`;
    }
    case 'late_event':
      return `L ${output.event.id} wm ${output.watermark}`;
    case 'alert':
      return `A ${output.key} @${output.ts}`;
  }
}

const stats = { name: 'stats', kind: 'window', eventType: 'device.telemetry', keyBy: 'key' } as const;
const sumLast = [
  { name: 'n', fn: 'count' },
  { name: 'sum', fn: 'sum', field: 'value' },
  { name: 'last', fn: 'last', field: 'value' },
] as const;
const tumbling10s = { ...stats, window: { type: 'tumbling', sizeMs: 10_000 }, aggregates: [...sumLast], allowedLatenessMs: 5_000 } as WindowRule;
const countOnly = [{ name: 'n', fn: 'count' }] as WindowRule['aggregates'];

interface Case {
  name: string;
  rule: WindowRule;
  steps: Step[];
  expected: string[];
  counters?: Partial<OperatorCounters>;
  openWindowsAfter?: number;
}

const cases: Case[] = [
  {
    name: 'tumbling: emits a window when the watermark reaches its end, not before, and final once past the lateness',
    rule: tumbling10s,
    steps: [reading('d1', 1_000, 1), reading('d1', 9_000, 3), { watermark: 9_999 }, { watermark: 10_000 }, { watermark: 15_000 }],
    expected: ['R d1 0-10000 r0 open {"n":2,"sum":4,"last":3}', 'R d1 0-10000 r0 final {"n":2,"sum":4,"last":3}'],
    counters: { eventsIn: 2, eventsMatched: 2, windowResults: 1, windowUpdates: 1, lateEvents: 0 },
    openWindowsAfter: 0,
  },
  {
    name: 'tumbling: out-of-order events within the watermark bound count, and last is by event time',
    rule: tumbling10s,
    steps: [reading('d1', 5_000, 10), reading('d1', 12_000, 1), reading('d1', 2_000, 20), { watermark: 10_000 }],
    expected: ['R d1 0-10000 r0 open {"n":2,"sum":30,"last":10}'],
    openWindowsAfter: 2,
  },
  {
    name: 'tumbling: a late event within the allowed lateness re-emits the window with a higher revision',
    rule: tumbling10s,
    steps: [reading('d1', 1_000, 1), { watermark: 12_000 }, reading('d1', 3_000, 5), { watermark: 15_000 }],
    expected: [
      'R d1 0-10000 r0 open {"n":1,"sum":1,"last":1}',
      'R d1 0-10000 r1 open {"n":2,"sum":6,"last":5}',
      'R d1 0-10000 r1 final {"n":2,"sum":6,"last":5}',
    ],
    counters: { windowResults: 1, windowUpdates: 2, lateEvents: 0 },
  },
  {
    name: 'tumbling: an event beyond the allowed lateness goes to the late-event side output, not into the window',
    rule: tumbling10s,
    steps: [reading('d1', 1_000, 1), { watermark: 16_000 }, reading('d1', 2_000, 7)],
    expected: ['R d1 0-10000 r0 final {"n":1,"sum":1,"last":1}', 'L d1@2000 wm 16000'],
    counters: { eventsIn: 2, eventsMatched: 1, lateEvents: 1, windowResults: 1, windowUpdates: 0 },
    openWindowsAfter: 0,
  },
  {
    name: 'tumbling: a late event for a window that had no events yet opens it and is emitted at once',
    rule: tumbling10s,
    steps: [reading('d1', 11_000, 1), { watermark: 21_000 }, reading('d2', 17_000, 4)],
    expected: ['R d1 10000-20000 r0 open {"n":1,"sum":1,"last":1}', 'R d2 10000-20000 r0 open {"n":1,"sum":4,"last":4}'],
  },
  {
    name: 'tumbling: keys are windowed apart and results come out by window end, then key',
    rule: { ...tumbling10s, allowedLatenessMs: 0 },
    steps: [reading('d2', 1_000, 1), reading('d1', 2_000, 2), reading('d1', 12_000, 3), { watermark: 25_000 }],
    expected: ['R d1 0-10000 r0 final {"n":1,"sum":2,"last":2}', 'R d2 0-10000 r0 final {"n":1,"sum":1,"last":1}', 'R d1 10000-20000 r0 final {"n":1,"sum":3,"last":3}'],
  },
  {
    name: 'tumbling: events of other types, other filters and without a key are not counted',
    rule: { ...tumbling10s, allowedLatenessMs: 0, where: { metric: 'temperature' } },
    steps: [
      reading('d1', 1_000, 1),
      reading('d1', 2_000, 50, 'humidity'),
      { ...reading('d1', 3_000, 1), type: 'device.status' },
      { ...reading('d1', 4_000, 1), key: undefined as unknown as string },
      { watermark: 10_000 },
    ],
    expected: ['R d1 0-10000 r0 final {"n":1,"sum":1,"last":1}'],
    counters: { eventsIn: 4, eventsMatched: 1, eventsWithoutKey: 1 },
  },
  {
    name: 'sliding: an event counts in every overlapping window (size 10 s, slide 5 s)',
    rule: { ...stats, window: { type: 'sliding', sizeMs: 10_000, slideMs: 5_000 }, aggregates: countOnly, allowedLatenessMs: 0 },
    steps: [reading('d1', 7_000, 1), reading('d1', 12_000, 1), { watermark: 20_000 }],
    expected: ['R d1 0-10000 r0 final {"n":1}', 'R d1 5000-15000 r0 final {"n":2}', 'R d1 10000-20000 r0 final {"n":1}'],
    openWindowsAfter: 0,
  },
  {
    name: 'sliding: a late event still counts in its windows that are alive, and is late only if none is',
    rule: { ...stats, window: { type: 'sliding', sizeMs: 10_000, slideMs: 5_000 }, aggregates: countOnly, allowedLatenessMs: 0 },
    steps: [reading('d1', 7_000, 1), { watermark: 12_000 }, reading('d1', 8_000, 1), { watermark: 16_000 }, reading('d1', 9_000, 1)],
    expected: ['R d1 0-10000 r0 final {"n":1}', 'R d1 5000-15000 r0 final {"n":2}', 'L d1@9000 wm 16000'],
    counters: { eventsMatched: 2, lateEvents: 1 },
  },
  {
    name: 'session: events closer than the gap form one session; it closes a gap after its last event',
    rule: { ...stats, window: { type: 'session', gapMs: 5_000 }, aggregates: countOnly, allowedLatenessMs: 0 },
    steps: [reading('d1', 1_000, 1), reading('d1', 4_000, 1), reading('d1', 20_000, 1), { watermark: 9_000 }, { watermark: 25_000 }],
    expected: ['R d1 1000-9000 r0 final {"n":2}', 'R d1 20000-25000 r0 final {"n":1}'],
  },
  {
    name: 'session: an out-of-order event bridging two sessions merges them before they fire',
    rule: { ...stats, window: { type: 'session', gapMs: 5_000 }, aggregates: countOnly, allowedLatenessMs: 0 },
    steps: [reading('d1', 1_000, 1), reading('d1', 8_000, 1), reading('d1', 5_500, 1), { watermark: 13_000 }],
    expected: ['R d1 1000-13000 r0 final {"n":3}'],
  },
  {
    name: 'session: a late event bridging two emitted sessions re-emits the merged one, replacing the later',
    rule: { ...stats, window: { type: 'session', gapMs: 5_000 }, aggregates: countOnly, allowedLatenessMs: 10_000 },
    steps: [reading('d1', 1_000, 1), reading('d1', 8_000, 1), { watermark: 13_000 }, reading('d1', 5_500, 1), { watermark: 23_000 }],
    expected: [
      'R d1 1000-6000 r0 open {"n":1}',
      'R d1 8000-13000 r0 open {"n":1}',
      'R d1 1000-13000 r1 open {"n":3} replaces 8000-13000',
      'R d1 1000-13000 r1 final {"n":3}',
    ],
    counters: { windowResults: 2, windowUpdates: 2, lateEvents: 0 },
    openWindowsAfter: 0,
  },
  {
    name: 'session: an event inside a still-open session is not late even when behind the watermark by more than the gap',
    rule: { ...stats, window: { type: 'session', gapMs: 5_000 }, aggregates: countOnly, allowedLatenessMs: 0 },
    steps: [reading('d1', 1_000, 1), reading('d1', 5_000, 1), reading('d1', 9_000, 1), { watermark: 12_000 }, reading('d1', 2_000, 1), { watermark: 14_000 }],
    expected: ['R d1 1000-14000 r0 final {"n":4}'],
    counters: { lateEvents: 0 },
  },
  {
    name: 'count: every 3 events of a key form a window, emitted at once and final, whatever the watermark',
    rule: { ...stats, window: { type: 'count', size: 3 }, aggregates: [{ name: 'n', fn: 'count' }, { name: 'max', fn: 'max', field: 'value' }], allowedLatenessMs: 0 },
    steps: [reading('d1', 1_000, 4), reading('d1', 5_000, 9), reading('d2', 2_000, 1), { watermark: 100_000 }, reading('d1', 3_000, 2), reading('d1', 6_000, 1)],
    expected: ['R d1 1000-5000 r0 final {"n":3,"max":9}'],
    counters: { eventsMatched: 5, lateEvents: 0, windowResults: 1 },
    openWindowsAfter: 2,
  },
  {
    name: 'having: a window is emitted only when the condition holds, and first emitted when a late event makes it hold',
    rule: { ...tumbling10s, aggregates: countOnly, having: { aggregate: 'n', op: '>=', value: 2 } },
    steps: [reading('a', 1_000, 1), reading('a', 2_000, 1), reading('b', 3_000, 1), { watermark: 10_000 }, reading('b', 4_000, 1), { watermark: 15_000 }],
    expected: ['R a 0-10000 r0 open {"n":2}', 'R b 0-10000 r0 open {"n":2}', 'R a 0-10000 r0 final {"n":2}', 'R b 0-10000 r0 final {"n":2}'],
    counters: { windowResults: 2, windowUpdates: 2 },
  },
  {
    name: 'a watermark that does not advance changes nothing',
    rule: tumbling10s,
    steps: [reading('d1', 1_000, 1), { watermark: 10_000 }, { watermark: 9_000 }, { watermark: 10_000 }],
    expected: ['R d1 0-10000 r0 open {"n":1,"sum":1,"last":1}'],
  },
];

for (const { name, rule, steps, expected, counters, openWindowsAfter } of cases) {
  test(`window ${name}`, () => {
    const operator = createOperator(rule);
    assert.deepEqual(run(operator, steps).map(brief), expected);
    if (counters) assert.deepEqual(pick(operator.counters(), Object.keys(counters) as Array<keyof OperatorCounters>), counters);
    if (openWindowsAfter !== undefined) assert.equal((operator as unknown as { openWindows(): number }).openWindows(), openWindowsAfter);
  });
}

test('window snapshot after any step, restored through JSON, continues with the same output and counters', () => {
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

test('window restore refuses a snapshot of another rule', () => {
  const snapshot = createOperator(tumbling10s).snapshot();
  assert.throws(() => createOperator({ ...tumbling10s, name: 'other' }).restore(snapshot), /snapshot of window rule "stats".*cannot restore window rule "other"/);
});

test('telemetry p95 and avg per window come from the sketches and accumulators', () => {
  const operator = createOperator({
    ...stats,
    window: { type: 'tumbling', sizeMs: 10_000 },
    aggregates: [
      { name: 'avg', fn: 'avg', field: 'value' },
      { name: 'p95', fn: 'p95', field: 'value' },
      { name: 'devices', fn: 'distinct_count', field: 'device_id' },
    ],
    keyBy: 'metric',
    allowedLatenessMs: 0,
  });
  const steps: Step[] = Array.from({ length: 100 }, (_, i) => reading(`d${i % 7}`, i * 50, i + 1));
  const [result] = run(operator, [...steps, { watermark: 10_000 }]);
  assert.ok(result?.type === 'window_result');
  assert.equal(result.key, 'temperature');
  assert.equal(result.values.avg, 50.5);
  assert.ok(Math.abs((result.values.p95 as number) - 95) <= 0.95, `p95 ${result.values.p95}`);
  assert.equal(result.values.devices, 7);
});

const assigners: Array<{ name: string; assign: (ts: number) => Array<{ windowStart: number; windowEnd: number }>; ts: number; expected: Array<[number, number]> }> = [
  { name: 'tumbling puts an event in the one epoch-aligned window', assign: (ts) => new TumblingWindows(10_000).assign(ts), ts: 12_345, expected: [[10_000, 20_000]] },
  { name: 'tumbling puts an event on a boundary in the window it starts', assign: (ts) => new TumblingWindows(10_000).assign(ts), ts: 20_000, expected: [[20_000, 30_000]] },
  { name: 'tumbling aligns times before 1970 too', assign: (ts) => new TumblingWindows(10_000).assign(ts), ts: -1, expected: [[-10_000, 0]] },
  {
    name: 'sliding puts an event in size / slide windows, by ascending start',
    assign: (ts) => new SlidingWindows(4 * 3_600_000, 3_600_000).assign(ts),
    ts: 5 * 3_600_000 + 1,
    expected: [2, 3, 4, 5].map((h) => [h * 3_600_000, (h + 4) * 3_600_000] as [number, number]),
  },
  { name: 'session opens [ts, ts + gap)', assign: (ts) => new SessionWindows(30_000).assign(ts), ts: 1_000, expected: [[1_000, 31_000]] },
];

for (const { name, assign, ts, expected } of assigners) {
  test(`assigner ${name}`, () => {
    assert.deepEqual(assign(ts).map((w) => [w.windowStart, w.windowEnd]), expected);
  });
}

function pick<T extends object, K extends keyof T>(object: T, keys: K[]): Pick<T, K> {
  return Object.fromEntries(keys.map((key) => [key, object[key]])) as Pick<T, K>;
}
