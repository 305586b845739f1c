/**
 * Percentiles of a Prometheus histogram over the last interval rather than since start: the difference of two
 * readings of its cumulative buckets, with linear interpolation inside the bucket (as PromQL's histogram_quantile).
 * Pure, so it is unit tested on its own.
 */

/** Cumulative counts per upper bound (`le`), as prom-client reports them; Infinity for `+Inf`. */
export type Buckets = ReadonlyMap<number, number>;

export function bucketDelta(now: Buckets, before: Buckets | undefined): Map<number, number> {
  const delta = new Map<number, number>();
  for (const [le, count] of now) delta.set(le, Math.max(0, count - (before?.get(le) ?? 0)));
  return delta;
}

/** The q-quantile (0..1) of cumulative buckets, or null when they hold no observation. */
export function quantile(q: number, buckets: ReadonlyMap<number, number>): number | null {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Infinity) ?? buckets.get(bounds[bounds.length - 1]!) ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const le of bounds) {
    const count = buckets.get(le)!;
    if (count >= rank) {
      // Past the last finite bound nothing tells how far: answer that bound, as histogram_quantile does.
      if (le === Infinity) return lowerBound;
      const inBucket = count - lowerCount;
      return inBucket <= 0 ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount)) / inBucket;
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}
