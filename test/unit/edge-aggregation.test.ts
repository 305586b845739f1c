import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TumblingAggregator, type AggregationRule } from '../../edge-agent/src/aggregation/tumbling-aggregator.js';
import { PreAggregation } from '../../edge-agent/src/aggregation/pre-aggregation.js';
import { SqliteWindowStore } from '../../edge-agent/src/aggregation/sqlite-window-store.js';
import { SqliteOutbox } from '../../edge-agent/src/buffer/sqlite-outbox.js';
import { decodeEvent, type WireEvent } from '../../shared/wire.js';

const rule: AggregationRule = { type: 'device.telemetry', mode: 'both', windowMs: 10_000, allowedLatenessMs: 2_000, idleMs: 30_000 };

interface Step {
  /** Event: device, event time (ms), value; or an `at` to only advance processing time. */
  device?: string;
  ts?: number;
  value?: number;
  now: number;
  late?: boolean;
}

const cases: Array<{ name: string; steps: Step[]; emitted: Array<[string, number, number, number, number, number, number]> }> = [
  {
    name: 'in order: a window is emitted when the watermark passes its end',
    steps: [
      { device: 'd1', ts: 1_000, value: 1, now: 0 },
      { device: 'd1', ts: 9_000, value: 3, now: 0 },
      { device: 'd1', ts: 11_000, value: 5, now: 0 }, // watermark 9 000: window [0, 10 000) still open
      { device: 'd1', ts: 12_000, value: 7, now: 0 }, // watermark 10 000: emitted
    ],
    // device, start, count, sum, min, max, last
    emitted: [['d1', 0, 2, 4, 1, 3, 3]],
  },
  {
    name: 'out of order within the allowed lateness still counts, and last is by event time',
    steps: [
      { device: 'd1', ts: 5_000, value: 10, now: 0 },
      { device: 'd1', ts: 11_000, value: 1, now: 0 },
      { device: 'd1', ts: 2_000, value: 20, now: 0 }, // 9 s behind but its window is open: counts, not last
      { device: 'd1', ts: 12_500, value: 1, now: 0 },
    ],
    emitted: [['d1', 0, 2, 30, 10, 20, 10]],
  },
  {
    name: 'an event for an emitted window is late and not counted',
    steps: [
      { device: 'd1', ts: 1_000, value: 1, now: 0 },
      { device: 'd1', ts: 13_000, value: 1, now: 0 },
      { device: 'd1', ts: 3_000, value: 100, now: 0, late: true },
    ],
    emitted: [['d1', 0, 1, 1, 1, 1, 1]],
  },
  {
    name: 'watermarks are per device: a fast device does not make a slow one late',
    steps: [
      { device: 'fast', ts: 100_000, value: 1, now: 0 },
      { device: 'slow', ts: 1_000, value: 2, now: 0 },
      { device: 'slow', ts: 12_000, value: 2, now: 0 },
    ],
    emitted: [['slow', 0, 1, 2, 2, 2, 2]],
  },
  {
    name: 'an idle device has its open windows emitted after idleMs of processing time, and stragglers are late',
    steps: [
      { device: 'd1', ts: 1_000, value: 4, now: 0 },
      { now: 29_999 },
      { now: 30_000 },
      { device: 'd1', ts: 2_000, value: 4, now: 30_001, late: true },
    ],
    emitted: [['d1', 0, 1, 4, 4, 4, 4]],
  },
];

for (const c of cases) {
  test(`tumbling windows: ${c.name}`, () => {
    const aggregator = new TumblingAggregator(rule);
    const emitted: Array<[string, number, number, number, number, number, number]> = [];
    for (const step of c.steps) {
      if (step.device !== undefined) {
        const accepted = aggregator.add({ device: step.device, metric: 'm', ts: step.ts!, value: step.value! }, step.now);
        assert.equal(!accepted, step.late === true, `event at ${step.ts} late: ${!accepted}`);
      }
      for (const r of aggregator.emitReady(step.now)) emitted.push([r.device, r.start, r.count, r.sum, r.min, r.max, r.last]);
    }
    assert.deepEqual(emitted, c.emitted);
  });
}

test('window state saved with the events restores after a restart, so no acknowledged reading is lost or doubled', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'agg-')), 'outbox.db');
  const open = () => new SqliteOutbox({ path, maxBytes: 1 << 20, fullPolicy: 'reject', synchronous: 'full' } as ConstructorParameters<typeof SqliteOutbox>[0]);
  const event = (ts: number, value: number): WireEvent => ({ id: `e${ts}`, type: 'device.telemetry', sv: 1, key: 'd1', ts: ts * 1000, its: 0, src: 'test', body: { metric: 'temp', value } });
  let outbox = open();
  let pre = new PreAggregation([rule], new SqliteWindowStore(outbox.database), 'agent-1', 4);
  outbox.database.transaction(() => pre.apply([event(1_000, 1), event(2_000, 2)], 0))();
  outbox.close(); // "crash": nothing else happens
  outbox = open();
  pre = new PreAggregation([rule], new SqliteWindowStore(outbox.database), 'agent-1', 4);
  assert.equal(pre.openWindows(), 1);
  const output = outbox.database.transaction(() => pre.apply([event(13_000, 3)], 0))();
  assert.equal(output.events.length, 1);
  const result = decodeEvent(output.events[0]!.data);
  assert.equal(result.id, 'agg:agent-1:d1:temp:10000:0');
  assert.equal(result.type, 'device.telemetry.aggregate');
  assert.deepEqual({ count: result.body.count, sum: result.body.sum, min: result.body.min, max: result.body.max, last: result.body.last }, { count: 2, sum: 3, min: 1, max: 2, last: 2 });
  outbox.close();
});
