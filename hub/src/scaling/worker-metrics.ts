/**
 * Reads the workers' `/metrics` (Prometheus text, prom-client's format) for one histogram, and the latency quantile
 * of what was observed between two scrapes. Pure functions plus one fetch, so the supervisor needs no Prometheus.
 */

/** A cumulative histogram: `le` upper bounds (seconds, ascending, +Inf last) with the count at or below each. */
export interface Histogram {
  buckets: Array<{ le: number; count: number }>;
}

/** The histogram `name` (without label filters; a worker exports each once) from a scrape, or undefined if absent. */
export function parseHistogram(text: string, name: string): Histogram | undefined {
  const prefix = `${name}_bucket{`;
  const buckets: Histogram['buckets'] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const match = /le="([^"]+)"\}\s+(\S+)/.exec(line);
    if (!match) continue;
    buckets.push({ le: match[1] === '+Inf' ? Infinity : Number(match[1]), count: Number(match[2]) });
  }
  if (buckets.length === 0) return undefined;
  buckets.sort((a, b) => a.le - b.le);
  return { buckets };
}

function total(h: Histogram): number {
  return h.buckets.at(-1)?.count ?? 0;
}

/**
 * What was observed between `before` and `after` (same worker). A worker that restarted in between starts from zero,
 * so its new scrape is smaller than the old one: then `after` itself is the interval.
 */
export function subtractHistogram(after: Histogram, before: Histogram | undefined): Histogram {
  if (!before || total(after) < total(before) || after.buckets.length !== before.buckets.length) return after;
  return { buckets: after.buckets.map((b, i) => ({ le: b.le, count: b.count - before.buckets[i]!.count })) };
}

/** The sum of several workers' interval histograms (same buckets: the same program exports them). */
export function addHistograms(histograms: readonly Histogram[]): Histogram | undefined {
  const [first, ...rest] = histograms;
  if (!first) return undefined;
  return { buckets: first.buckets.map((b, i) => ({ le: b.le, count: b.count + rest.reduce((sum, h) => sum + (h.buckets[i]?.count ?? 0), 0) })) };
}

/**
 * The q-quantile in ms, interpolated linearly inside the bucket it falls in, as Prometheus' histogram_quantile does.
 * Above the largest finite bound it is that bound. Undefined when nothing was observed.
 */
export function histogramQuantileMs(h: Histogram, q: number): number | undefined {
  const n = total(h);
  if (n <= 0) return undefined;
  const rank = q * n;
  let lower = 0;
  let below = 0;
  for (const b of h.buckets) {
    if (!Number.isFinite(b.le)) break;
    if (b.count >= rank) {
      const inBucket = b.count - below;
      const fraction = inBucket > 0 ? (rank - below) / inBucket : 1;
      return (lower + (b.le - lower) * fraction) * 1000;
    }
    lower = b.le;
    below = b.count;
  }
  return lower * 1000;
}

/** One scrape of a worker's histogram; undefined when the worker does not answer (starting, stopping, dead). */
export async function scrapeHistogram(url: string, name: string, timeoutMs = 2000): Promise<Histogram | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return undefined;
    return parseHistogram(await response.text(), name);
  } catch {
    return undefined;
  }
}
