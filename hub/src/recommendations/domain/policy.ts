/**
 * Every tunable of profiles, item statistics and scoring in one value, so a test can shorten a half-life or shrink a
 * bound without touching the code. The defaults are what the quality benchmark (benchmarks/recs-quality.ts) runs.
 */
import type { Interaction, ItemInteractionKind } from './interaction.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface RecommendationPolicy {
  /** Engagement weight per kind: how much an interaction says "this customer likes this item". */
  kindWeights: Record<ItemInteractionKind, number>;
  /** Weight of a review by its stars (index 1-5): low ratings carry no positive signal at all. */
  reviewWeights: readonly [0, number, number, number, number, number];

  // Bounds of the profile.
  recentItemsLimit: number;
  categoryLimit: number;
  purchasedLimit: number;
  dislikedLimit: number;
  profileLedgerCapacity: number;

  // Bounds of item statistics.
  neighboursPerItem: number;
  itemLedgerCapacity: number;
  categoryBoardSize: number;

  /** Co-occurrence links a new interaction to at most this many of the customer's most recent other items... */
  coOccurrenceWindowItems: number;
  /** ...that were engaged with at most this long before it. */
  coOccurrenceWindowMs: number;

  categoryHalfLifeMs: number;
  popularityHalfLifeMs: number;
  /** How fast a recent item stops steering recommendations. */
  recentItemHalfLifeMs: number;
  riskHalfLifeMs: number;
  /** Failed logins closer together than about this count as one burst. */
  failedLoginBurstHalfLifeMs: number;
  /** Risk added by the n-th failed login of a burst: (n - 1) x this; a lone failed login adds nothing. */
  riskPerBurstFailure: number;

  /** How many of the most recent items seed co-occurrence candidates. */
  scoringRecentItems: number;
  /** How many preferred categories seed category candidates. */
  scoringCategories: number;
  /**
   * Candidates per seed item: its strongest neighbours (scores still add every seed's contribution), and per seed
   * category board: its most popular items. What a list costs grows with the candidates (about 1.5 µs each).
   */
  scoringNeighboursPerSeed: number;
  scoringBoardCandidates: number;
  scoreWeights: { coOccurrence: number; category: number; popularity: number };
  /** Bayesian average of ratings: the prior mean and how many reviews it is worth. */
  ratingPriorMean: number;
  ratingPriorCount: number;
  /** A customer's own rating at or below this makes the item disliked. */
  dislikeRatingAtMost: number;
  dislikedItemFactor: number;
  dislikedNeighbourFactor: number;

  /** Segments: see segmentOf in customer-profile.ts. */
  segment: { newForMs: number; activeWithinMs: number; loyalPurchases: number; atRiskScore: number };
}

export const DEFAULT_POLICY: RecommendationPolicy = {
  kindWeights: { product_view: 1, video_play: 1, video_complete: 2, add_to_cart: 3, purchase: 5, review_submitted: 0 },
  reviewWeights: [0, 0, 0, 0.5, 2, 3],
  recentItemsLimit: 100,
  categoryLimit: 20,
  purchasedLimit: 500,
  dislikedLimit: 50,
  profileLedgerCapacity: 256,
  neighboursPerItem: 50,
  itemLedgerCapacity: 256,
  categoryBoardSize: 100,
  coOccurrenceWindowItems: 5,
  coOccurrenceWindowMs: 7 * DAY,
  categoryHalfLifeMs: 14 * DAY,
  popularityHalfLifeMs: 7 * DAY,
  recentItemHalfLifeMs: 3 * DAY,
  riskHalfLifeMs: DAY,
  failedLoginBurstHalfLifeMs: 5 * 60_000,
  riskPerBurstFailure: 0.1,
  scoringRecentItems: 20,
  scoringCategories: 3,
  scoringNeighboursPerSeed: 20,
  scoringBoardCandidates: 20,
  scoreWeights: { coOccurrence: 1, category: 0.3, popularity: 0.05 },
  ratingPriorMean: 3.5,
  ratingPriorCount: 3,
  dislikeRatingAtMost: 2,
  dislikedItemFactor: 0.1,
  dislikedNeighbourFactor: 0.5,
  segment: { newForMs: 14 * DAY, activeWithinMs: 30 * DAY, loyalPurchases: 3, atRiskScore: 0.5 },
};

/** How strongly an interaction speaks for its item (0 for failed_login and for reviews of 1-2 stars). */
export function engagementWeight(interaction: Interaction, policy: RecommendationPolicy): number {
  if (interaction.kind === 'failed_login') return 0;
  if (interaction.kind === 'review_submitted') return policy.reviewWeights[interaction.rating ?? 0] ?? 0;
  return policy.kindWeights[interaction.kind];
}
