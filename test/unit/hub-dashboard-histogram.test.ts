import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bucketDelta, quantile } from '../../hub/src/dashboard/histogram-window.js';

const buckets = (pairs: Array<[number, number]>) => new Map(pairs);

test('quantiles interpolate within the bucket, as histogram_quantile does', () => {
  // 100 observations: 50 up to 0.1 s, 40 more up to 0.5 s, 10 more up to 1 s.
  const b = buckets([[0.1, 50], [0.5, 90], [1, 100], [Infinity, 100]]);
  assert.equal(quantile(0.5, b), 0.1);
  assert.equal(quantile(0.25, b), 0.05);
  assert.ok(Math.abs(quantile(0.7, b)! - 0.3) < 1e-9);
  assert.ok(Math.abs(quantile(0.95, b)! - 0.75) < 1e-9);
});

test('observations past the last finite bound answer that bound; no observation answers null', () => {
  assert.equal(quantile(0.99, buckets([[0.1, 1], [1, 1], [Infinity, 5]])), 1);
  assert.equal(quantile(0.5, buckets([[0.1, 0], [Infinity, 0]])), null);
});

test('the interval is the difference of two cumulative readings (a first reading counts since start)', () => {
  const before = buckets([[0.1, 10], [1, 20], [Infinity, 20]]);
  const now = buckets([[0.1, 10], [1, 30], [Infinity, 30]]);
  const delta = bucketDelta(now, before);
  assert.deepEqual([...delta], [[0.1, 0], [1, 10], [Infinity, 10]]);
  assert.ok(quantile(0.5, delta)! > 0.1, 'only the slow observations of this interval count');
  assert.deepEqual([...bucketDelta(now, undefined)], [...now]);
});
