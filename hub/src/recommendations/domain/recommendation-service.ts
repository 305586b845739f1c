/**
 * Ranks items for a customer from the profile and item statistics. Pure and synchronous: the caller loads what the
 * service names (seedItems, seedCategories, then candidates) and passes it in with the time.
 *
 * score(Y) = (wCo * coOccurrence(Y) + wCat * category(Y) + wPop * popularity(Y)) * rating(Y) * dislike(Y)
 *
 *   coOccurrence(Y) = sum over the customer's recent items X of recency(X) * w(X,Y) / sum_Z w(X,Z)
 *                     recency(X) = 2^(-(now - X.at) / recentItemHalfLife); w = co-occurrence weight in X's top-K
 *   category(Y)     = share of Y's category in the customer's decayed preferences * pop(Y) / pop(top item of category)
 *   popularity(Y)   = pop(Y) / pop(top item of the shop)            (the cold-start fallback, and a tie-breaker)
 *   rating(Y)       = Bayesian average rating / prior mean            (1 without reviews)
 *   dislike(Y)      = dislikedItemFactor if the customer rated Y 1-2 stars, times dislikedNeighbourFactor if Y is a
 *                     co-occurrence neighbour of an item the customer rated 1-2 stars
 *
 * Purchased items are excluded. Ties rank by product id, so a ranking is reproducible.
 */
import { decayedAt, decayFactor } from './decay.js';
import { preferredCategories, type CustomerProfile } from './customer-profile.js';
import { ALL_CATEGORIES, rankedBoard, ratingFactor, type CategoryPopularity, type ItemStats } from './item-stats.js';
import { DEFAULT_POLICY, type RecommendationPolicy } from './policy.js';
import type { Product } from './product.js';

export interface ScoreComponents {
  coOccurrence: number;
  category: number;
  popularity: number;
  ratingFactor: number;
  dislikeFactor: number;
}

export type RecommendationReason =
  | { kind: 'also_engaged'; becauseOf: string; text: string }
  | { kind: 'preferred_category'; category: string; text: string }
  | { kind: 'popular'; category: string; text: string };

export interface Recommendation {
  productId: string;
  score: number;
  reason: RecommendationReason;
  components: ScoreComponents;
}

export interface Explanation extends Recommendation {
  /** Recent items that led to the item, strongest first, with their part of coOccurrence. */
  contributors: Array<{ productId: string; contribution: number }>;
  /** Set when the item would never be recommended to this customer. */
  excluded?: 'already_purchased';
}

export interface ScoringInputs {
  profile: CustomerProfile;
  now: number;
  /** Stats of the seed items and the candidates; a missing entry means "no statistics yet". */
  itemStats: ReadonlyMap<string, ItemStats>;
  /** Boards of the seed categories (ALL_CATEGORIES included); a missing one means empty. */
  boards: ReadonlyMap<string, CategoryPopularity>;
  /** Catalogue entries of candidates and seed items; an item missing here is not recommended. */
  products: ReadonlyMap<string, Product>;
}

/** What the customer's recent items say about one candidate: the sum of their contributions and the strongest. */
interface CoOccurrence {
  sum: number;
  top: string;
  topContribution: number;
}

interface ScoringContext {
  inputs: ScoringInputs;
  /** The recent items that seed co-occurrence, newest first, with their recency factor and neighbour total. */
  seeds: Array<{ productId: string; recency: number; total: number; neighbours: ItemStats['neighbours'] }>;
  coOccurrence: Map<string, CoOccurrence>;
  categoryShare: Map<string, number>;
  boardTop: Map<string, number>;
  dislikedNeighbours: Set<string>;
  purchased: Set<string>;
  disliked: Set<string>;
}

/** A candidate's numbers; the reason's text is only written for the items that make the list. */
interface Scored {
  productId: string;
  product: Product;
  score: number;
  components: ScoreComponents;
  weighted: { coOccurrence: number; category: number; popularity: number };
  topContributor: string | undefined;
}

function byScore(a: { score: number; productId: string }, b: { score: number; productId: string }): number {
  return b.score - a.score || (a.productId < b.productId ? -1 : 1);
}

export class RecommendationService {
  constructor(readonly policy: RecommendationPolicy = DEFAULT_POLICY) {}

  /** The recent items that seed co-occurrence, newest first; an item the customer disliked leads nowhere. */
  private recentSeeds(profile: CustomerProfile): CustomerProfile['recentItems'] {
    const disliked = new Set(profile.dislikedItems);
    return profile.recentItems.filter((item) => !disliked.has(item.productId)).slice(-this.policy.scoringRecentItems).reverse();
  }

  /** Items whose stats ranking needs first: the recent seeds and the disliked items. */
  seedItems(profile: CustomerProfile): string[] {
    return [...new Set([...this.recentSeeds(profile).map((item) => item.productId), ...profile.dislikedItems])];
  }

  /** Boards ranking needs: the strongest preferred categories, and the whole shop. */
  seedCategories(profile: CustomerProfile, now: number): string[] {
    return [...preferredCategories(profile, now, this.policy).slice(0, this.policy.scoringCategories).map((p) => p.category), ALL_CATEGORIES];
  }

  /**
   * Items worth scoring: the strongest neighbours of the seeds and the tops of the seed boards, minus purchases, in
   * the order found (ranking breaks ties by id, so the order does not matter).
   */
  candidates(profile: CustomerProfile, now: number, seedStats: ReadonlyMap<string, ItemStats>, boards: ReadonlyMap<string, CategoryPopularity>): string[] {
    const found = new Set<string>();
    const { scoringNeighboursPerSeed, scoringBoardCandidates } = this.policy;
    for (const seed of this.recentSeeds(profile)) for (const n of (seedStats.get(seed.productId)?.neighbours ?? []).slice(0, scoringNeighboursPerSeed)) found.add(n.productId);
    for (const category of this.seedCategories(profile, now)) for (const e of rankedBoard(boards.get(category), now, this.policy).slice(0, scoringBoardCandidates)) found.add(e.productId);
    for (const id of profile.purchasedItems) found.delete(id);
    return [...found];
  }

  private context(inputs: ScoringInputs): ScoringContext {
    const { profile, now, itemStats, boards } = inputs;
    const seeds: ScoringContext['seeds'] = [];
    const coOccurrence = new Map<string, CoOccurrence>();
    for (const seed of this.recentSeeds(profile)) {
      const stats = itemStats.get(seed.productId);
      if (!stats || stats.neighbours.length === 0) continue;
      let total = 0;
      for (const n of stats.neighbours) total += n.weight;
      const recency = decayFactor(now - seed.at, this.policy.recentItemHalfLifeMs);
      seeds.push({ productId: seed.productId, recency, total, neighbours: stats.neighbours });
      for (const n of stats.neighbours) {
        const contribution = (recency * n.weight) / total;
        const found = coOccurrence.get(n.productId);
        if (!found) coOccurrence.set(n.productId, { sum: contribution, top: seed.productId, topContribution: contribution });
        else {
          found.sum += contribution;
          if (contribution > found.topContribution || (contribution === found.topContribution && seed.productId < found.top)) {
            found.top = seed.productId;
            found.topContribution = contribution;
          }
        }
      }
    }
    const boardTop = new Map<string, number>();
    for (const [category, board] of boards) {
      let top = 0;
      for (const e of board.entries) top = Math.max(top, decayedAt(e.popularity, now, this.policy.popularityHalfLifeMs));
      boardTop.set(category, top);
    }
    const dislikedNeighbours = new Set<string>();
    for (const id of profile.dislikedItems) for (const n of itemStats.get(id)?.neighbours ?? []) dislikedNeighbours.add(n.productId);
    return {
      inputs,
      seeds,
      coOccurrence,
      categoryShare: new Map(preferredCategories(profile, now, this.policy).map((p) => [p.category, p.share])),
      boardTop,
      dislikedNeighbours,
      purchased: new Set(profile.purchasedItems),
      disliked: new Set(profile.dislikedItems),
    };
  }

  private popularityOf(productId: string, ctx: ScoringContext): number {
    const stats = ctx.inputs.itemStats.get(productId);
    if (stats) return decayedAt(stats.popularity, ctx.inputs.now, this.policy.popularityHalfLifeMs);
    for (const board of ctx.inputs.boards.values()) {
      const entry = board.entries.find((e) => e.productId === productId);
      if (entry) return decayedAt(entry.popularity, ctx.inputs.now, this.policy.popularityHalfLifeMs);
    }
    return 0;
  }

  private score(product: Product, ctx: ScoringContext): Scored {
    const { policy } = this;
    const coOccurrence = ctx.coOccurrence.get(product.id);
    const popularity = this.popularityOf(product.id, ctx);
    const shopTop = ctx.boardTop.get(ALL_CATEGORIES) || popularity;
    const categoryTop = ctx.boardTop.get(product.category) || shopTop;
    const components: ScoreComponents = {
      coOccurrence: coOccurrence?.sum ?? 0,
      category: categoryTop > 0 ? ((ctx.categoryShare.get(product.category) ?? 0) * popularity) / categoryTop : 0,
      popularity: shopTop > 0 ? popularity / shopTop : 0,
      ratingFactor: ratingFactor(ctx.inputs.itemStats.get(product.id), policy),
      dislikeFactor: (ctx.disliked.has(product.id) ? policy.dislikedItemFactor : 1) * (ctx.dislikedNeighbours.has(product.id) ? policy.dislikedNeighbourFactor : 1),
    };
    const weighted = {
      coOccurrence: policy.scoreWeights.coOccurrence * components.coOccurrence,
      category: policy.scoreWeights.category * components.category,
      popularity: policy.scoreWeights.popularity * components.popularity,
    };
    const score = (weighted.coOccurrence + weighted.category + weighted.popularity) * components.ratingFactor * components.dislikeFactor;
    return { productId: product.id, product, score, components, weighted, topContributor: coOccurrence?.top };
  }

  private recommendation(scored: Scored, ctx: ScoringContext): Recommendation {
    const { product, score, components, weighted, topContributor } = scored;
    return { productId: product.id, score, reason: this.reason(product, weighted, topContributor, ctx), components };
  }

  private reason(product: Product, weighted: { coOccurrence: number; category: number; popularity: number }, topContributor: string | undefined, ctx: ScoringContext): RecommendationReason {
    if (topContributor !== undefined && weighted.coOccurrence >= weighted.category && weighted.coOccurrence >= weighted.popularity && weighted.coOccurrence > 0) {
      const name = ctx.inputs.products.get(topContributor)?.name ?? topContributor;
      return { kind: 'also_engaged', becauseOf: topContributor, text: `Customers who engaged with ${name} also engaged with ${product.name}` };
    }
    if (weighted.category >= weighted.popularity && weighted.category > 0) {
      return { kind: 'preferred_category', category: product.category, text: `Popular in ${product.category}, one of your preferred categories` };
    }
    return { kind: 'popular', category: product.category, text: `Popular in the shop right now (${product.category})` };
  }

  /** The best `limit` of `candidates`, strongest first (ties by id), purchased and unknown items left out. */
  rank(inputs: ScoringInputs, candidates: readonly string[], limit: number): Recommendation[] {
    const ctx = this.context(inputs);
    // The best `limit` so far, strongest first: most candidates are weaker than the last of them and cost one
    // comparison (a sort of all of them was most of the time of a list).
    const best: Scored[] = [];
    for (const id of candidates) {
      const product = inputs.products.get(id);
      if (!product || ctx.purchased.has(id)) continue;
      const candidate = this.score(product, ctx);
      if (candidate.score <= 0) continue;
      if (best.length === limit && byScore(candidate, best[limit - 1]!) >= 0) continue;
      let at = best.length;
      while (at > 0 && byScore(candidate, best[at - 1]!) < 0) at--;
      best.splice(at, 0, candidate);
      if (best.length > limit) best.pop();
    }
    return best.map((candidate) => this.recommendation(candidate, ctx));
  }

  /** The score of one product for this customer, with each part of it; also for excluded products. */
  explain(inputs: ScoringInputs, product: Product): Explanation {
    const ctx = this.context(inputs);
    const contributors: Explanation['contributors'] = [];
    for (const seed of ctx.seeds) {
      const n = seed.neighbours.find((x) => x.productId === product.id);
      if (n) contributors.push({ productId: seed.productId, contribution: (seed.recency * n.weight) / seed.total });
    }
    contributors.sort((a, b) => b.contribution - a.contribution || (a.productId < b.productId ? -1 : 1));
    const explanation: Explanation = { ...this.recommendation(this.score(product, ctx), ctx), contributors };
    if (ctx.purchased.has(product.id)) explanation.excluded = 'already_purchased';
    return explanation;
  }
}
