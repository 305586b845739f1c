/**
 * Recommendation lists served from memory. Scoring one list costs a few hundred microseconds (a few hundred
 * candidates scored from the item statistics), and a shop asks for the same customer's list on every page view: at
 * thousands of requests per second, scoring each one would take most of the hub's CPU.
 *
 * A list is kept until the customer's profile changes (the partition owner reports each event it applies, and the
 * read model each change it sees, so what the customer just did shows at once) or for at most `maxAgeMs` (hub config recommendations.cacheMaxAgeMs, default 30 s: other
 * customers' interactions move item statistics and with them the scores, but slowly, and a list half a minute old
 * ranks about as a fresh one would). A list shorter than asked for (a newcomer's cold start while the shop's
 * popularity boards are still arriving, or a shop with few items yet) is kept for at most `shortListMaxAgeMs`
 * (1 s): what it lacks arrives within a board write, and such lists are cheap to score. Errors (an unknown customer)
 * are not kept at all. Beyond `maxCustomers`, the customers cached longest ago are dropped first.
 */
import type { UseCaseResult } from '../application/index.js';
import type { Recommendation } from '../domain/index.js';

export interface RecommendationCacheOptions {
  maxAgeMs: number;
  maxCustomers: number;
  /** How long a list with fewer items than asked for is kept (default 1000 ms, never more than maxAgeMs). */
  shortListMaxAgeMs?: number;
  now?: () => number;
}

interface CachedList {
  /** When the list stops being served. */
  until: number;
  result: UseCaseResult<Recommendation[]>;
}

export class RecommendationCache {
  /** Per customer, per limit; Map order is insertion order, so the first customer is the one cached longest ago. */
  private readonly byCustomer = new Map<string, Map<number, CachedList>>();
  private readonly now: () => number;
  private readonly shortListMaxAgeMs: number;
  hits = 0;
  misses = 0;

  constructor(
    private readonly compute: (customerId: string, limit: number) => Promise<UseCaseResult<Recommendation[]>>,
    private readonly options: RecommendationCacheOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.shortListMaxAgeMs = Math.min(options.shortListMaxAgeMs ?? 1000, options.maxAgeMs);
  }

  async get(customerId: string, limit: number): Promise<UseCaseResult<Recommendation[]>> {
    const now = this.now();
    const cached = this.byCustomer.get(customerId)?.get(limit);
    if (cached && now < cached.until) {
      this.hits++;
      return cached.result;
    }
    this.misses++;
    const result = await this.compute(customerId, limit);
    if (!result.ok) return result;
    const maxAgeMs = result.value.length < limit ? this.shortListMaxAgeMs : this.options.maxAgeMs;
    let lists = this.byCustomer.get(customerId);
    if (!lists) {
      lists = new Map();
      this.byCustomer.set(customerId, lists);
      if (this.byCustomer.size > this.options.maxCustomers) this.byCustomer.delete(this.byCustomer.keys().next().value!);
    }
    lists.set(limit, { until: now + maxAgeMs, result });
    return result;
  }

  /** The customer's profile changed: the next request scores again. */
  invalidate(customerId: string): void {
    this.byCustomer.delete(customerId);
  }

  size(): number {
    return this.byCustomer.size;
  }
}
