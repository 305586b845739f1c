/**
 * Aggregate functions as mergeable accumulators. Merging is what session windows need when a late event bridges
 * two sessions, and it lets partial results from several hubs be combined; `toState` gives plain JSON so window
 * state can be checkpointed to NATS KV and rebuilt with the function's `fromState`.
 *
 * Values that do not fit a function are skipped, not errors: numeric functions take finite numbers only,
 * `distinct_count` takes scalars, `count` counts values present (every event when the rule names no field).
 */
import { finiteNumber } from './compare.js';
import { DDSketch, DDSKETCH_RELATIVE_ACCURACY, type DDSketchState } from './ddsketch.js';
import { OperatorError, OperatorErrorCode } from './errors.js';
import { HyperLogLog, type HyperLogLogState } from './hyperloglog.js';
import type { Json } from './operator.js';

export const AGGREGATE_FNS = ['count', 'sum', 'min', 'max', 'avg', 'last', 'distinct_count', 'p50', 'p95', 'p99'] as const;
export type AggregateFn = (typeof AGGREGATE_FNS)[number];

export interface Accumulator {
  readonly fn: AggregateFn;
  /** Adds one value seen at event time `tsMs` (only `last` uses the time). */
  add(value: unknown, tsMs: number): void;
  /** Folds in another accumulator of the same function. */
  merge(other: Accumulator): void;
  result(): Json;
  toState(): Json;
}

/** A function's constructors: a fresh accumulator, or one rebuilt from `toState()` output. */
export interface AggregateFunction {
  readonly fn: AggregateFn;
  /** Whether the rule must name a field (only `count` can count events). */
  readonly needsField: boolean;
  create(): Accumulator;
  fromState(state: Json): Accumulator;
}

function sameFunction<T extends Accumulator>(self: T, other: Accumulator): T {
  if (other.fn !== self.fn || other.constructor !== self.constructor) {
    throw new OperatorError(OperatorErrorCode.MERGE_MISMATCH, `cannot merge a ${other.fn} accumulator into a ${self.fn} accumulator`);
  }
  return other as T;
}

class CountAccumulator implements Accumulator {
  readonly fn = 'count';
  constructor(private count = 0) {}
  add(value: unknown): void {
    if (value !== undefined && value !== null) this.count++;
  }
  merge(other: Accumulator): void {
    this.count += sameFunction(this, other).count;
  }
  result(): Json {
    return this.count;
  }
  toState(): Json {
    return { count: this.count };
  }
}

class SumAccumulator implements Accumulator {
  readonly fn = 'sum';
  constructor(private sum = 0) {}
  add(value: unknown): void {
    const number = finiteNumber(value);
    if (number !== undefined) this.sum += number;
  }
  merge(other: Accumulator): void {
    this.sum += sameFunction(this, other).sum;
  }
  result(): Json {
    return this.sum;
  }
  toState(): Json {
    return { sum: this.sum };
  }
}

/** min and max: one class, the direction decides which value wins. */
class ExtremeAccumulator implements Accumulator {
  constructor(
    readonly fn: 'min' | 'max',
    private value: number | null = null,
  ) {}
  add(value: unknown): void {
    const number = finiteNumber(value);
    if (number === undefined) return;
    if (this.value === null || (this.fn === 'min' ? number < this.value : number > this.value)) this.value = number;
  }
  merge(other: Accumulator): void {
    const { value } = sameFunction(this, other);
    if (value !== null) this.add(value);
  }
  result(): Json {
    return this.value;
  }
  toState(): Json {
    return { value: this.value };
  }
}

class AvgAccumulator implements Accumulator {
  readonly fn = 'avg';
  constructor(
    private sum = 0,
    private count = 0,
  ) {}
  add(value: unknown): void {
    const number = finiteNumber(value);
    if (number === undefined) return;
    this.sum += number;
    this.count++;
  }
  merge(other: Accumulator): void {
    const that = sameFunction(this, other);
    this.sum += that.sum;
    this.count += that.count;
  }
  result(): Json {
    return this.count === 0 ? null : this.sum / this.count;
  }
  toState(): Json {
    return { sum: this.sum, count: this.count };
  }
}

/** The value with the latest event time (not the last to arrive); on a tie the later arrival wins. */
class LastAccumulator implements Accumulator {
  readonly fn = 'last';
  constructor(
    private value: Json = null,
    private tsMs: number | null = null,
  ) {}
  add(value: unknown, tsMs: number): void {
    if (value === undefined || value === null) return;
    if (this.tsMs === null || tsMs >= this.tsMs) {
      this.value = value as Json;
      this.tsMs = tsMs;
    }
  }
  merge(other: Accumulator): void {
    const that = sameFunction(this, other);
    if (that.tsMs !== null) this.add(that.value, that.tsMs);
  }
  result(): Json {
    return this.value;
  }
  toState(): Json {
    return { value: this.value, ts: this.tsMs };
  }
}

/** Approximate distinct count: HyperLogLog p = 12, relative standard error ≈ 1.6 % (see hyperloglog.ts). */
class DistinctCountAccumulator implements Accumulator {
  readonly fn = 'distinct_count';
  constructor(private readonly sketch = new HyperLogLog()) {}
  add(value: unknown): void {
    if (typeof value === 'string') this.sketch.add(value);
    else if (typeof value === 'number' || typeof value === 'boolean') this.sketch.add(JSON.stringify(value));
  }
  merge(other: Accumulator): void {
    this.sketch.merge(sameFunction(this, other).sketch);
  }
  result(): Json {
    return this.sketch.estimate();
  }
  toState(): Json {
    return this.sketch.toState();
  }
}

const QUANTILE_OF = { p50: 0.5, p95: 0.95, p99: 0.99 } as const;

/** Approximate percentile: DDSketch, relative error <= 1 % of the exact value (see ddsketch.ts). */
class QuantileAccumulator implements Accumulator {
  constructor(
    readonly fn: keyof typeof QUANTILE_OF,
    private readonly sketch = new DDSketch(DDSKETCH_RELATIVE_ACCURACY),
  ) {}
  add(value: unknown): void {
    const number = finiteNumber(value);
    if (number !== undefined) this.sketch.add(number);
  }
  merge(other: Accumulator): void {
    this.sketch.merge(sameFunction(this, other).sketch);
  }
  result(): Json {
    return this.sketch.quantile(QUANTILE_OF[this.fn]);
  }
  toState(): Json {
    return this.sketch.toState() as unknown as Json;
  }
}

type State = Record<string, Json>;

function quantileFunction(fn: keyof typeof QUANTILE_OF): AggregateFunction {
  return {
    fn,
    needsField: true,
    create: () => new QuantileAccumulator(fn),
    fromState: (state) => new QuantileAccumulator(fn, DDSketch.fromState(state as unknown as DDSketchState)),
  };
}

/** Every aggregate function, by the name rules use. */
export const aggregateFunctions: Record<AggregateFn, AggregateFunction> = {
  count: { fn: 'count', needsField: false, create: () => new CountAccumulator(), fromState: (s) => new CountAccumulator((s as State).count as number) },
  sum: { fn: 'sum', needsField: true, create: () => new SumAccumulator(), fromState: (s) => new SumAccumulator((s as State).sum as number) },
  min: { fn: 'min', needsField: true, create: () => new ExtremeAccumulator('min'), fromState: (s) => new ExtremeAccumulator('min', (s as State).value as number | null) },
  max: { fn: 'max', needsField: true, create: () => new ExtremeAccumulator('max'), fromState: (s) => new ExtremeAccumulator('max', (s as State).value as number | null) },
  avg: {
    fn: 'avg',
    needsField: true,
    create: () => new AvgAccumulator(),
    fromState: (s) => new AvgAccumulator((s as State).sum as number, (s as State).count as number),
  },
  last: {
    fn: 'last',
    needsField: true,
    create: () => new LastAccumulator(),
    fromState: (s) => new LastAccumulator((s as State).value ?? null, (s as State).ts as number | null),
  },
  distinct_count: {
    fn: 'distinct_count',
    needsField: true,
    create: () => new DistinctCountAccumulator(),
    fromState: (s) => new DistinctCountAccumulator(HyperLogLog.fromState(s as unknown as HyperLogLogState)),
  },
  p50: quantileFunction('p50'),
  p95: quantileFunction('p95'),
  p99: quantileFunction('p99'),
};
