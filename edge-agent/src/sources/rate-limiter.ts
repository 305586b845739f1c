/**
 * Token buckets per client (an API key's name, or the address of an anonymous client).
 *
 * A bucket holds up to `burst` tokens and refills at `ratePerSecond`. A request costing `cost` tokens passes
 * when the bucket holds `min(cost, burst)` of them, and then takes all `cost`, possibly going negative: a batch
 * larger than the burst is not refused forever, it is admitted from a full bucket and paid back by waiting
 * (the debt), so the long-run rate stays `ratePerSecond` whatever the batch size.
 *
 * The clock is injected (milliseconds, monotonic by default) so tests control time.
 */
export interface RateLimit {
  /** Tokens added per second; 0 means no limit. */
  ratePerSecond: number;
  /** Bucket size: how many tokens can be spent at once after a quiet period. */
  burst: number;
}

export type RateDecision = { ok: true } | { ok: false; /** When the same request would pass. */ retryAfterMs: number };

interface Bucket {
  tokens: number;
  updatedMs: number;
  limit: RateLimit;
}

export interface RateLimiterOptions {
  now?: () => number;
  /**
   * Most buckets kept. Beyond it, buckets that refilled completely are forgotten first (they are the same as a
   * new one), then the oldest; a bound is needed because anonymous clients are keyed by address.
   */
  maxKeys?: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(options: RateLimiterOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.maxKeys = options.maxKeys ?? 10000;
  }

  /** Takes `cost` tokens from `key`'s bucket, or says how long to wait. */
  take(key: string, cost: number, limit: RateLimit): RateDecision {
    if (limit.ratePerSecond <= 0 || cost <= 0) return { ok: true };
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= this.maxKeys) this.evict(now);
      bucket = { tokens: limit.burst, updatedMs: now, limit };
      this.buckets.set(key, bucket);
    } else {
      bucket.limit = limit;
      this.refill(bucket, now);
    }
    const needed = Math.min(cost, limit.burst);
    if (bucket.tokens >= needed) {
      bucket.tokens -= cost;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil(((needed - bucket.tokens) / limit.ratePerSecond) * 1000) };
  }

  /** Buckets currently kept (for tests and metrics). */
  size(): number {
    return this.buckets.size;
  }

  private refill(bucket: Bucket, now: number): void {
    const elapsedMs = Math.max(0, now - bucket.updatedMs);
    bucket.tokens = Math.min(bucket.limit.burst, bucket.tokens + (elapsedMs / 1000) * bucket.limit.ratePerSecond);
    bucket.updatedMs = now;
  }

  /** Makes room for one more bucket. */
  private evict(now: number): void {
    for (const [key, bucket] of this.buckets) {
      this.refill(bucket, now);
      if (bucket.tokens >= bucket.limit.burst) this.buckets.delete(key);
    }
    // Everyone is busy: forget the oldest tenth (their debt is forgiven; a bound on memory matters more), so the
    // next new clients do not each pay for a sweep.
    const target = Math.min(this.maxKeys - 1, Math.floor(this.maxKeys * 0.9));
    for (const key of this.buckets.keys()) {
      if (this.buckets.size <= target) break;
      this.buckets.delete(key);
    }
  }
}
