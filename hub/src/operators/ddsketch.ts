/**
 * DDSketch (Masson, Rim, Lee, VLDB 2019) for approximate quantiles with a relative-error guarantee: for every
 * quantile q, the returned value x̂ and the exact value x of rank floor(q · (n - 1)) satisfy |x̂ - x| <= α · |x|.
 * Default α = 1 %. Values are counted in logarithmic bins: bin k holds (γ^(k-1), γ^k] with γ = (1 + α) / (1 - α),
 * and reports 2γ^k / (γ + 1), which is within α of anything in the bin. Merging adds bin counts, so it is exact.
 *
 * Memory is bounded: each sign's store keeps at most `maxBins` bins (2048 covers values over 17 orders of
 * magnitude at α = 1 %); beyond that the bins nearest zero are collapsed together, losing the guarantee only for
 * the quantiles that fall in them. Values with |x| < 1e-9 count as zero.
 */
import { OperatorError, OperatorErrorCode } from './errors.js';

export const DDSKETCH_RELATIVE_ACCURACY = 0.01;
export const DDSKETCH_MAX_BINS = 2048;
const MIN_INDEXABLE = 1e-9;

export interface DDSketchState {
  relativeAccuracy: number;
  maxBins: number;
  count: number;
  zeroCount: number;
  /** Exact extremes, null while empty: answers are clamped into [min, max], which can only move them closer. */
  min: number | null;
  max: number | null;
  /** [bin index, count] pairs, for values > 0 and (by magnitude) values < 0. */
  positive: Array<[number, number]>;
  negative: Array<[number, number]>;
}

export class DDSketch {
  private readonly gamma: number;
  private readonly lnGamma: number;
  private readonly positive = new Map<number, number>();
  private readonly negative = new Map<number, number>();
  private zeroCount = 0;
  private total = 0;
  private min = Infinity;
  private max = -Infinity;

  constructor(
    readonly relativeAccuracy: number = DDSKETCH_RELATIVE_ACCURACY,
    readonly maxBins: number = DDSKETCH_MAX_BINS,
  ) {
    if (!(relativeAccuracy > 0 && relativeAccuracy < 1)) {
      throw new RangeError(`DDSketch relativeAccuracy must be in (0, 1), got ${relativeAccuracy}`);
    }
    this.gamma = (1 + relativeAccuracy) / (1 - relativeAccuracy);
    this.lnGamma = Math.log(this.gamma);
  }

  get count(): number {
    return this.total;
  }

  add(value: number, count = 1): void {
    if (!Number.isFinite(value)) return;
    if (value > MIN_INDEXABLE) this.addToStore(this.positive, this.binOf(value), count);
    else if (value < -MIN_INDEXABLE) this.addToStore(this.negative, this.binOf(-value), count);
    else this.zeroCount += count;
    this.total += count;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }

  merge(other: DDSketch): void {
    if (other.relativeAccuracy !== this.relativeAccuracy) {
      throw new OperatorError(
        OperatorErrorCode.MERGE_MISMATCH,
        `cannot merge a DDSketch of relative accuracy ${other.relativeAccuracy} into one of ${this.relativeAccuracy}`,
      );
    }
    for (const [bin, count] of other.positive) this.addToStore(this.positive, bin, count);
    for (const [bin, count] of other.negative) this.addToStore(this.negative, bin, count);
    this.zeroCount += other.zeroCount;
    this.total += other.total;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
  }

  /** The value at quantile q in [0, 1] (0.95 for p95), or null while empty. */
  quantile(q: number): number | null {
    if (this.total === 0) return null;
    const rank = Math.min(Math.max(q, 0), 1) * (this.total - 1);
    let seen = 0;
    for (const bin of [...this.negative.keys()].sort((a, b) => b - a)) {
      seen += this.negative.get(bin)!;
      if (seen > rank) return this.clamp(-this.valueOf(bin));
    }
    seen += this.zeroCount;
    if (seen > rank) return this.clamp(0);
    for (const bin of [...this.positive.keys()].sort((a, b) => a - b)) {
      seen += this.positive.get(bin)!;
      if (seen > rank) return this.clamp(this.valueOf(bin));
    }
    return this.max;
  }

  toState(): DDSketchState {
    const pairs = (store: Map<number, number>) => [...store.entries()].sort((a, b) => a[0] - b[0]);
    return {
      relativeAccuracy: this.relativeAccuracy,
      maxBins: this.maxBins,
      count: this.total,
      zeroCount: this.zeroCount,
      min: this.total > 0 ? this.min : null,
      max: this.total > 0 ? this.max : null,
      positive: pairs(this.positive),
      negative: pairs(this.negative),
    };
  }

  static fromState(state: DDSketchState): DDSketch {
    const sketch = new DDSketch(state.relativeAccuracy, state.maxBins);
    for (const [bin, count] of state.positive) sketch.positive.set(bin, count);
    for (const [bin, count] of state.negative) sketch.negative.set(bin, count);
    sketch.zeroCount = state.zeroCount;
    sketch.total = state.count;
    sketch.min = state.min ?? Infinity;
    sketch.max = state.max ?? -Infinity;
    return sketch;
  }

  private binOf(magnitude: number): number {
    return Math.ceil(Math.log(magnitude) / this.lnGamma);
  }

  private valueOf(bin: number): number {
    return (2 * Math.exp(bin * this.lnGamma)) / (this.gamma + 1);
  }

  private clamp(value: number): number {
    return Math.min(Math.max(value, this.min), this.max);
  }

  private addToStore(store: Map<number, number>, bin: number, count: number): void {
    store.set(bin, (store.get(bin) ?? 0) + count);
    while (store.size > this.maxBins) {
      // Collapse the bin nearest zero into the next one (DDSketch's collapsing lowest-dense store).
      const [lowest, next] = [...store.keys()].sort((a, b) => a - b);
      store.set(next!, store.get(next!)! + store.get(lowest!)!);
      store.delete(lowest!);
    }
  }
}
