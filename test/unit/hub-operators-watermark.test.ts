/**
 * Partition watermarks as tables: observe(partition, event time, processing time) steps and the combined
 * watermark expected at given processing times.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PartitionedWatermark, type WatermarkSettings } from '../../hub/src/operators/watermark.js';

type Step = { observe: [partition: string, eventTimeMs: number, nowMs: number] } | { at: number; expect: number | null };

const settings: WatermarkSettings = { maxOutOfOrdernessMs: 2_000, idleTimeoutMs: 10_000, advanceWhenAllIdle: false };

const cases: Array<{ name: string; settings?: Partial<WatermarkSettings>; steps: Step[] }> = [
  {
    name: 'is null before any event',
    steps: [{ at: 0, expect: null }],
  },
  {
    name: 'is the newest event time minus the out-of-orderness bound, and an older event does not lower it',
    steps: [
      { observe: ['p0', 5_000, 0] },
      { at: 0, expect: 3_000 },
      { observe: ['p0', 4_000, 1] },
      { at: 1, expect: 3_000 },
      { observe: ['p0', 9_000, 2] },
      { at: 2, expect: 7_000 },
    ],
  },
  {
    name: 'is the minimum over active partitions',
    steps: [
      { observe: ['p0', 10_000, 0] },
      { observe: ['p1', 5_000, 0] },
      { at: 0, expect: 3_000 },
    ],
  },
  {
    name: 'an idle partition stops holding the watermark back',
    steps: [
      { observe: ['p0', 10_000, 0] },
      { observe: ['p1', 5_000, 0] },
      { observe: ['p0', 20_000, 5_000] },
      { at: 9_999, expect: 3_000 }, // p1 silent for 9 999 ms: still active
      { at: 10_000, expect: 18_000 }, // p1 idle: p0 alone decides
    ],
  },
  {
    name: 'a partition back from idle does not move the watermark back',
    steps: [
      { observe: ['p0', 10_000, 0] },
      { observe: ['p1', 5_000, 0] },
      { observe: ['p0', 20_000, 5_000] },
      { at: 10_000, expect: 18_000 },
      { observe: ['p1', 6_000, 11_000] }, // active again, 14 s behind: its events are late for the operators
      { at: 11_000, expect: 18_000 },
      { observe: ['p1', 30_000, 12_000] },
      { at: 12_000, expect: 18_000 }, // both active again: min(p0 18 000, p1 28 000)
    ],
  },
  {
    name: 'with every partition idle it holds at the most advanced partition',
    steps: [
      { observe: ['p0', 10_000, 0] },
      { observe: ['p1', 5_000, 0] },
      { at: 50_000, expect: 8_000 },
    ],
  },
  {
    name: 'with every partition idle and advanceWhenAllIdle it advances with processing time',
    settings: { advanceWhenAllIdle: true },
    steps: [
      { observe: ['p0', 10_000, 0] },
      { observe: ['p1', 5_000, 1_000] },
      { at: 5_000, expect: 3_000 },
      { at: 50_000, expect: 8_000 + 49_000 }, // 49 s of processing time since the last event
    ],
  },
];

for (const { name, settings: overrides, steps } of cases) {
  test(`watermark ${name}`, () => {
    const watermark = new PartitionedWatermark({ ...settings, ...overrides });
    for (const step of steps) {
      if ('observe' in step) watermark.observe(...step.observe);
      else assert.equal(watermark.current(step.at), step.expect, `at ${step.at}`);
    }
  });
}

test('watermark snapshot and restore continue with the same partitions and the same combined value', () => {
  const original = new PartitionedWatermark(settings);
  original.observe('p0', 10_000, 0);
  original.observe('p1', 7_000, 0);
  assert.equal(original.current(0), 5_000);
  const restored = new PartitionedWatermark(settings);
  restored.restore(JSON.parse(JSON.stringify(original.snapshot())));
  for (const target of [original, restored]) target.observe('p1', 12_000, 1_000);
  assert.equal(restored.current(1_000), original.current(1_000));
  assert.deepEqual(restored.partitionWatermarks(1_000), [
    { partition: 'p0', watermark: 8_000, idle: false },
    { partition: 'p1', watermark: 10_000, idle: false },
  ]);
});
