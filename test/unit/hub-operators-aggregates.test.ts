/**
 * Aggregate accumulators: results, merge equals adding everything to one, state survives JSON, and the two
 * sketches stay within their stated error on generated data (HyperLogLog ±3 standard errors, DDSketch ±1 %).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { aggregateFunctions, type AggregateFn } from '../../hub/src/operators/aggregates.js';
import { DDSketch, DDSKETCH_RELATIVE_ACCURACY } from '../../hub/src/operators/ddsketch.js';
import { HyperLogLog, hllStandardError } from '../../hub/src/operators/hyperloglog.js';
import type { Json } from '../../hub/src/operators/operator.js';
import { seededRandom } from '../../simulators/lib/random.js';


/** [value, event time ms] pairs; non-numbers test that numeric functions skip what does not fit. */
const inputs: Array<[unknown, number]> = [
  [4, 1000],
  [10, 3000],
  ['n/a', 4000],
  [-2, 2000],
  [null, 5000],
  [7, 2500],
];

const cases: Array<{ fn: AggregateFn; expected: Json; empty: Json }> = [
  { fn: 'count', expected: 5, empty: 0 }, // counts values present: 'n/a' too, null not
  { fn: 'sum', expected: 19, empty: 0 },
  { fn: 'min', expected: -2, empty: null },
  { fn: 'max', expected: 10, empty: null },
  { fn: 'avg', expected: 19 / 4, empty: null },
  { fn: 'last', expected: 'n/a', empty: null }, // latest event time (4000), not last arrival
  { fn: 'distinct_count', expected: 5, empty: 0 },
  { fn: 'p50', expected: 4, empty: null },
  { fn: 'p99', expected: 7, empty: null }, // rank floor(0.99 * 3) of [-2, 4, 7, 10]
];

for (const { fn, expected, empty } of cases) {
  test(`${fn}: result over mixed values, empty result, merge of halves and state round trip agree`, () => {
    const { create, fromState } = aggregateFunctions[fn];
    const whole = create();
    for (const [value, ts] of inputs) whole.add(value, ts);
    assert.ok(approxEqual(whole.result(), expected), `${fn} gave ${JSON.stringify(whole.result())}, expected ${JSON.stringify(expected)}`);
    assert.deepEqual(create().result(), empty);

    const left = create();
    const right = create();
    inputs.forEach(([value, ts], i) => (i % 2 === 0 ? left : right).add(value, ts));
    right.merge(left);
    assert.deepEqual(right.result(), whole.result(), 'merge of the halves equals the whole');

    const restored = fromState(JSON.parse(JSON.stringify(whole.toState())) as Json);
    assert.deepEqual(restored.result(), whole.result(), 'state survives JSON');
    restored.add(100, 9000);
    whole.add(100, 9000);
    assert.deepEqual(restored.result(), whole.result(), 'a restored accumulator goes on like the original');
  });
}

test('merging accumulators of different functions is refused', () => {
  const sum = aggregateFunctions.sum.create();
  assert.throws(() => sum.merge(aggregateFunctions.count.create()), /cannot merge a count accumulator into a sum accumulator/);
});

test('last keeps the value of the latest event time, also across a merge', () => {
  const early = aggregateFunctions.last.create();
  const late = aggregateFunctions.last.create();
  early.add('early', 1000);
  late.add('late', 2000);
  late.add('older arrival', 1500);
  early.merge(late);
  assert.equal(early.result(), 'late');
});

test('HyperLogLog p=12 estimates within 3 standard errors (±4.9 %) from 100 to 200 000 distinct values', () => {
  const bound = 3 * hllStandardError(12);
  for (const distinct of [100, 1_000, 10_000, 50_000, 200_000]) {
    const sketch = new HyperLogLog(12);
    for (let i = 0; i < distinct; i++) {
      sketch.add(`user-${i}`);
      if (i % 3 === 0) sketch.add(`user-${i}`); // duplicates must not count
    }
    const error = Math.abs(sketch.estimate() - distinct) / distinct;
    assert.ok(error <= bound, `${distinct} distinct: estimate ${sketch.estimate()}, error ${(error * 100).toFixed(2)} % > ${(bound * 100).toFixed(2)} %`);
  }
});

test('HyperLogLog merge estimates the union, and sparse and dense states both round-trip', () => {
  const a = new HyperLogLog();
  const b = new HyperLogLog();
  for (let i = 0; i < 30_000; i++) a.add(`id-${i}`);
  for (let i = 20_000; i < 50_000; i++) b.add(`id-${i}`);
  a.merge(b);
  assert.ok(Math.abs(a.estimate() - 50_000) / 50_000 <= 3 * hllStandardError());

  const dense = a.toState();
  assert.ok('dense' in dense);
  assert.equal(HyperLogLog.fromState(JSON.parse(JSON.stringify(dense))).estimate(), a.estimate());

  const small = new HyperLogLog();
  for (const user of ['u1', 'u2', 'u3']) small.add(user);
  const sparse = small.toState();
  assert.ok('sparse' in sparse && sparse.sparse.length === 3);
  assert.equal(HyperLogLog.fromState(JSON.parse(JSON.stringify(sparse))).estimate(), 3);
});

function exactQuantile(sorted: number[], q: number): number {
  return sorted[Math.floor(q * (sorted.length - 1))]!;
}

const distributions: Array<{ name: string; draw: (random: () => number) => number }> = [
  { name: 'log-normal latencies', draw: (random) => Math.exp(3 + 1.5 * gaussian(random)) },
  { name: 'uniform temperatures from -20 to 90', draw: (random) => -20 + 110 * random() },
  { name: 'exponential with exact zeros', draw: (random) => (random() < 0.1 ? 0 : -Math.log(1 - random()) * 50) },
];

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

for (const { name, draw } of distributions) {
  test(`DDSketch p50/p95/p99 within 1 % relative error of the exact value: ${name}`, () => {
    const random = seededRandom(42);
    const values = Array.from({ length: 50_000 }, () => draw(random));
    const sketch = new DDSketch();
    for (const value of values) sketch.add(value);
    const sorted = [...values].sort((a, b) => a - b);
    for (const q of [0.5, 0.95, 0.99]) {
      const exact = exactQuantile(sorted, q);
      const estimate = sketch.quantile(q)!;
      assert.ok(
        Math.abs(estimate - exact) <= DDSKETCH_RELATIVE_ACCURACY * Math.abs(exact) + 1e-9,
        `q=${q}: estimate ${estimate}, exact ${exact}`,
      );
    }
  });
}

test('DDSketch merge of two halves answers like one sketch of everything', () => {
  const random = seededRandom(7);
  const all = new DDSketch();
  const left = new DDSketch();
  const right = new DDSketch();
  for (let i = 0; i < 10_000; i++) {
    const value = 1 + 1000 * random();
    all.add(value);
    (i % 2 === 0 ? left : right).add(value);
  }
  left.merge(right);
  for (const q of [0.5, 0.95, 0.99]) assert.equal(left.quantile(q), all.quantile(q));
  assert.throws(() => left.merge(new DDSketch(0.02)), /relative accuracy 0.02/);
});

test('DDSketch keeps at most maxBins bins per sign, collapsing the ones nearest zero', () => {
  const sketch = new DDSketch(0.01, 64);
  const values = Array.from({ length: 1000 }, (_, i) => 10 ** (i / 20)); // 1 to 1e50: far more than 64 bins
  for (const value of values) sketch.add(value);
  assert.ok(sketch.toState().positive.length <= 64);
  const exact = exactQuantile(values, 0.99);
  const p99 = sketch.quantile(0.99)!;
  assert.ok(Math.abs(p99 - exact) <= 0.01 * exact, `high quantiles keep their accuracy: ${p99} vs ${exact}`);
});

function approxEqual(actual: Json, expected: Json): boolean {
  if (typeof actual === 'number' && typeof expected === 'number') return Math.abs(actual - expected) <= 0.01 * Math.abs(expected) + 1e-9;
  return JSON.stringify(actual) === JSON.stringify(expected);
}
