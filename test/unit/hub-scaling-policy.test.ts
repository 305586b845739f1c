/** When `hub scale` adds and removes workers (hub/src/scaling/scaling-policy.ts): thresholds, hysteresis, cool-downs. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ScalingPolicy, type ScalingDecision, type ScalingSettings } from '../../hub/src/scaling/scaling-policy.js';
import { histogramQuantileMs, parseHistogram, subtractHistogram } from '../../hub/src/scaling/worker-metrics.js';

const settings: ScalingSettings = {
  minWorkers: 1,
  maxWorkers: 4,
  targetLagPerWorker: 100,
  latencyHighMs: 2000,
  latencyLowMs: 500,
  scaleUpAfterMs: 10_000,
  scaleDownAfterMs: 60_000,
  coolDownMs: 30_000,
  scaleDownCoolDownMs: 120_000,
};

/** Feeds one sample per second from `fromS` to `toS` (inclusive) and returns the decisions that changed something. */
function run(
  policy: ScalingPolicy,
  workers: { n: number },
  fromS: number,
  toS: number,
  load: (s: number) => { lag: number; p95?: number },
): Array<ScalingDecision & { atS: number }> {
  const changes: Array<ScalingDecision & { atS: number }> = [];
  for (let s = fromS; s <= toS; s++) {
    const { lag, p95 } = load(s);
    const decision = policy.decide({ atMs: s * 1000, lagMessages: lag, latencyP95Ms: p95 }, workers.n);
    if (decision.direction !== 'hold') {
      changes.push({ ...decision, atS: s });
      workers.n = decision.target;
    }
  }
  return changes;
}

test('a lag that one worker cannot hold adds workers after scaleUpAfterMs, jumping to what the lag wants', () => {
  const policy = new ScalingPolicy(settings);
  const workers = { n: 1 };
  const changes = run(policy, workers, 0, 20, (s) => ({ lag: s < 5 ? 20 : 350, p95: 300 }));
  assert.equal(changes.length, 1);
  assert.equal(changes[0]!.atS, 15, 'high from 5 s, held 10 s');
  assert.equal(changes[0]!.target, 4, 'ceil(350 / 100)');
  assert.match(changes[0]!.reason, /lag 350 messages > 100 per worker x 1 for 10 s/);
});

test('latency above the high mark adds one worker even when the lag is small', () => {
  const policy = new ScalingPolicy(settings);
  const workers = { n: 2 };
  const changes = run(policy, workers, 0, 12, () => ({ lag: 10, p95: 2500 }));
  assert.deepEqual(
    changes.map((c) => [c.atS, c.direction, c.target]),
    [[10, 'up', 3]],
  );
  assert.match(changes[0]!.reason, /ingest latency p95 2500 ms > 2000 ms/);
});

test('a short spike (shorter than scaleUpAfterMs) changes nothing', () => {
  const policy = new ScalingPolicy(settings);
  const workers = { n: 1 };
  const changes = run(policy, workers, 0, 60, (s) => ({ lag: s % 15 < 8 ? 500 : 0, p95: 100 }));
  assert.deepEqual(changes, []);
});

test('after a change, the cool-down holds further scale-ups; the maximum is never passed', () => {
  const policy = new ScalingPolicy({ ...settings, maxWorkers: 3 });
  const workers = { n: 1 };
  const changes = run(policy, workers, 0, 120, () => ({ lag: 180, p95: 3000 }));
  assert.deepEqual(
    changes.map((c) => [c.atS, c.target]),
    [
      [10, 2],
      [40, 3],
    ],
    'second change 30 s (cool-down) after the first; none beyond max',
  );
  const hold = policy.decide({ atMs: 200_000, lagMessages: 900, latencyP95Ms: 3000 }, 3);
  assert.equal(hold.direction, 'hold');
  assert.match(hold.reason, /already at the maximum 3/);
});

test('hysteresis: a lag between the down and the up thresholds keeps the count, in both directions', () => {
  const policy = new ScalingPolicy(settings);
  // 3 workers: up above 300, down below 100 (half of what 2 workers hold): 150 is in the band.
  const workers = { n: 3 };
  assert.deepEqual(run(policy, workers, 0, 600, () => ({ lag: 150, p95: 400 })), []);
  assert.equal(workers.n, 3);
});

test('low load removes one worker at a time, scaleDownAfterMs after it became low, then after each down cool-down', () => {
  const policy = new ScalingPolicy(settings);
  const workers = { n: 3 };
  const changes = run(policy, workers, 0, 400, () => ({ lag: 0, p95: undefined }));
  assert.deepEqual(
    changes.map((c) => [c.atS, c.direction, c.target]),
    [
      [60, 'down', 2],
      [180, 'down', 1],
    ],
  );
  assert.match(changes[0]!.reason, /no messages written for 60 s/);
});

test('latency between the low and the high mark blocks a scale-down', () => {
  const policy = new ScalingPolicy(settings);
  const workers = { n: 2 };
  assert.deepEqual(run(policy, workers, 0, 300, () => ({ lag: 0, p95: 900 })), []);
});

test('a count outside [min, max] is corrected at once', () => {
  const policy = new ScalingPolicy({ ...settings, minWorkers: 2 });
  assert.deepEqual(policy.decide({ atMs: 0, lagMessages: 0, latencyP95Ms: undefined }, 0), {
    direction: 'up',
    target: 2,
    reason: '0 workers is below the minimum 2',
  });
  assert.equal(policy.decide({ atMs: 1, lagMessages: 0, latencyP95Ms: undefined }, 6).target, 4);
  assert.throws(() => new ScalingPolicy({ ...settings, minWorkers: 3, maxWorkers: 2 }), /minWorkers <= maxWorkers/);
});

test('latency p95 from the difference of two scrapes of a Prometheus histogram', () => {
  const scrape = (counts: number[]) =>
    [
      '# HELP hub_ingest_latency_seconds x',
      '# TYPE hub_ingest_latency_seconds histogram',
      ...[0.1, 0.5, 1, 2.5].map((le, i) => `hub_ingest_latency_seconds_bucket{le="${le}"} ${counts[i]}`),
      `hub_ingest_latency_seconds_bucket{le="+Inf"} ${counts[4]}`,
      `hub_ingest_latency_seconds_sum 1`,
      `hub_ingest_latency_seconds_count ${counts[4]}`,
      'hub_event_latency_seconds_bucket{le="0.1"} 999',
    ].join('\n');
  const before = parseHistogram(scrape([10, 10, 10, 10, 10]), 'hub_ingest_latency_seconds');
  const after = parseHistogram(scrape([10, 40, 90, 110, 110]), 'hub_ingest_latency_seconds');
  assert.ok(before && after);
  const interval = subtractHistogram(after, before);
  // 100 new observations: 30 <= 0.5 s, 80 <= 1 s, 100 <= 2.5 s; the 95th is 15 of the 20 in (1, 2.5], the 50th 20
  // of the 50 in (0.5, 1], interpolated as Prometheus does.
  assert.equal(histogramQuantileMs(interval, 0.95), 2125);
  assert.equal(histogramQuantileMs(interval, 0.5), 700);
  assert.equal(histogramQuantileMs(subtractHistogram(before, before), 0.95), undefined, 'no observation: no latency');
  assert.equal(parseHistogram('nothing here', 'hub_ingest_latency_seconds'), undefined);
  // A restarted worker starts from zero: the new scrape is smaller, so it counts as the whole interval.
  assert.ok(Math.abs(histogramQuantileMs(subtractHistogram(before, after), 0.95)! - 95) < 1e-9);
});
