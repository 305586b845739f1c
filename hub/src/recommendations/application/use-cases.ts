/**
 * The use cases of recommendations: record interactions and reviews, read profiles, recommend and explain. They
 * orchestrate the pure domain through the ports and hold no state of their own.
 *
 * Order of writes in recordInteraction (what makes it exactly once, see domain/customer-profile.ts): item statistics
 * first, each guarded by its own ledger; then the category boards (idempotent sets); the profile last, as the commit.
 */
import {
  ALL_CATEGORIES,
  applyInteraction,
  applyItemDelta,
  DEFAULT_POLICY,
  emptyCategoryBoard,
  emptyItemStats,
  enrich,
  INTERACTION_KINDS,
  interactionFromAppEvent,
  isValidRating,
  newProfile,
  planItemUpdates,
  preferredCategories,
  ratingFactor,
  RecommendationService,
  reviewProblems,
  riskScoreOf,
  segmentOf,
  upsertCategoryBoard,
  wasApplied,
  type AppEventLike,
  type CategoryPreference,
  type Enrichment,
  type EventPosition,
  type Explanation,
  type Interaction,
  type InteractionKind,
  type Product,
  type RecentItem,
  type Recommendation,
  type RecommendationPolicy,
  type Review,
  type Segment,
} from '../domain/index.js';
import type { Catalogue, Clock, CustomerProfileRepository, ItemStatsRepository } from './ports.js';
import { invalid, notFound, success, type NotFoundError, type UseCaseResult, type ValidationError } from './results.js';

export const MAX_LIMIT = 100;

export interface RecommendationsDependencies {
  profiles: CustomerProfileRepository;
  itemStats: ItemStatsRepository;
  catalogue: Catalogue;
  clock: Clock;
  policy?: RecommendationPolicy;
}

export interface RecordOutcome {
  /** 'duplicate': the event had been applied before and changed nothing. */
  status: 'applied' | 'duplicate';
  customerId: string;
  /** Item statistics this call changed (0 for a duplicate). */
  itemsUpdated: number;
}

export type AppEventOutcome = RecordOutcome | { status: 'ignored'; eventType: string };

export interface ProfileView {
  customerId: string;
  /** The time the decayed values below refer to. */
  asOf: number;
  firstSeen: number;
  lastActive: number;
  interactionCounts: Partial<Record<InteractionKind, number>>;
  /** Newest first. */
  recentItems: RecentItem[];
  preferredCategories: CategoryPreference[];
  riskScore: number;
  lifetimeValue: number;
  purchaseCount: number;
  segment: Segment;
}

export interface SimilarProduct {
  product: Product;
  /** Share of the item's co-occurrence weight, times the neighbour's rating factor. */
  score: number;
  reason: string;
}

function validateLimit(limit: number): ValidationError | undefined {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) return { kind: 'validation', field: 'limit', message: `limit must be a whole number from 1 to ${MAX_LIMIT}, got ${String(limit)}` };
  return undefined;
}

function interactionProblem(interaction: Interaction): ValidationError | undefined {
  const fail = (field: string, message: string): ValidationError => ({ kind: 'validation', field, message });
  if (!interaction.eventId) return fail('eventId', 'eventId is empty');
  if (!interaction.customerId) return fail('customerId', 'customerId is empty');
  if (!(INTERACTION_KINDS as readonly string[]).includes(interaction.kind)) return fail('kind', `unknown kind ${interaction.kind}`);
  if (!Number.isFinite(interaction.at)) return fail('at', 'at must be epoch ms');
  if (interaction.kind !== 'failed_login' && !interaction.productId) return fail('productId', `${interaction.kind} needs a productId`);
  if (interaction.kind === 'review_submitted' && !isValidRating(interaction.rating)) return fail('rating', 'rating must be a whole number from 1 to 5');
  return undefined;
}

export class RecommendationsUseCases {
  readonly policy: RecommendationPolicy;
  private readonly service: RecommendationService;

  constructor(private readonly deps: RecommendationsDependencies) {
    this.policy = deps.policy ?? DEFAULT_POLICY;
    this.service = new RecommendationService(this.policy);
  }

  /** Applies one interaction to the item statistics and the profile, exactly once per event id (or position). */
  async recordInteraction(interaction: Interaction): Promise<UseCaseResult<RecordOutcome, ValidationError>> {
    const problem = interactionProblem(interaction);
    if (problem) return { ok: false, error: problem };
    const { customerId } = interaction;
    const before = await this.deps.profiles.get(customerId);
    if (before && wasApplied(before.applied, interaction.eventId, interaction.position)) return success({ status: 'duplicate', customerId, itemsUpdated: 0 });

    const product = interaction.productId === undefined ? undefined : (await this.deps.catalogue.products([interaction.productId])).get(interaction.productId);
    let itemsUpdated = 0;
    for (const delta of planItemUpdates(before, interaction, this.policy)) {
      let applied = false;
      const stored = await this.deps.itemStats.updateItem(delta.productId, (current) => {
        const stats = current ?? emptyItemStats(delta.productId);
        applied = applyItemDelta(stats, delta, interaction, this.policy);
        return stats;
      });
      if (applied) itemsUpdated++;
      if (delta.productId === interaction.productId && delta.popularity > 0) {
        for (const category of product ? [product.category, ALL_CATEGORIES] : [ALL_CATEGORIES]) {
          await this.deps.itemStats.updateCategory(category, (current) => {
            const board = current ?? emptyCategoryBoard(category);
            upsertCategoryBoard(board, delta.productId, stored.popularity, this.policy);
            return board;
          });
        }
      }
    }
    // After the items: the deltas above were planned from the profile as it was before this interaction.
    const profile = before ?? newProfile(customerId, interaction.at);
    applyInteraction(profile, interaction, product, this.policy);
    await this.deps.profiles.put(profile);
    return success({ status: 'applied', customerId, itemsUpdated });
  }

  /** Maps an app event and records it; events of other types come back as 'ignored', not as errors. */
  async recordAppEvent(event: AppEventLike, position?: EventPosition): Promise<UseCaseResult<AppEventOutcome, ValidationError>> {
    const mapped = interactionFromAppEvent(event, position);
    if (!mapped.ok) return mapped.reason === 'not_a_shop_event' ? success({ status: 'ignored', eventType: mapped.eventType }) : invalid('event', mapped.problem);
    return this.recordInteraction(mapped.interaction);
  }

  /** A review is an interaction of kind review_submitted; `eventId` makes it exactly once like any other. */
  async recordReview(eventId: string, review: Review, position?: EventPosition): Promise<UseCaseResult<RecordOutcome, ValidationError>> {
    const problems = reviewProblems(review);
    if (problems.length > 0) return invalid('review', problems.join('; '));
    const interaction: Interaction = { eventId, customerId: review.customerId, kind: 'review_submitted', productId: review.productId, at: review.at, rating: review.rating, text: review.text };
    if (position) interaction.position = position;
    return this.recordInteraction(interaction);
  }

  async getProfile(customerId: string): Promise<UseCaseResult<ProfileView, NotFoundError>> {
    const profile = await this.deps.profiles.get(customerId);
    if (!profile) return notFound('customer', customerId);
    const now = this.deps.clock.now();
    return success({
      customerId,
      asOf: now,
      firstSeen: profile.firstSeen,
      lastActive: profile.lastActive,
      interactionCounts: { ...profile.interactionCounts },
      recentItems: [...profile.recentItems].reverse(),
      preferredCategories: preferredCategories(profile, now, this.policy),
      riskScore: riskScoreOf(profile, now, this.policy),
      lifetimeValue: profile.lifetimeValue,
      purchaseCount: profile.purchaseCount,
      segment: segmentOf(profile, now, this.policy),
    });
  }

  async getRecommendations(customerId: string, limit: number): Promise<UseCaseResult<Recommendation[]>> {
    const badLimit = validateLimit(limit);
    if (badLimit) return { ok: false, error: badLimit };
    const profile = await this.deps.profiles.get(customerId);
    if (!profile) return notFound('customer', customerId);
    const now = this.deps.clock.now();
    const seeds = await this.deps.itemStats.getItems(this.service.seedItems(profile));
    const boards = await this.deps.itemStats.getCategories(this.service.seedCategories(profile, now));
    const candidates = this.service.candidates(profile, now, seeds, boards);
    const itemStats = new Map([...seeds, ...(await this.deps.itemStats.getItems(candidates.filter((id) => !seeds.has(id))))]);
    const products = await this.deps.catalogue.products([...new Set([...candidates, ...seeds.keys()])]);
    return success(this.service.rank({ profile, now, itemStats, boards, products }, candidates, limit));
  }

  /** The score of one product for one customer, part by part, whether or not it makes the top of the list. */
  async explainRecommendation(customerId: string, productId: string): Promise<UseCaseResult<Explanation, NotFoundError>> {
    const profile = await this.deps.profiles.get(customerId);
    if (!profile) return notFound('customer', customerId);
    const product = (await this.deps.catalogue.products([productId])).get(productId);
    if (!product) return notFound('product', productId);
    const now = this.deps.clock.now();
    const seedIds = this.service.seedItems(profile);
    const itemStats = await this.deps.itemStats.getItems([...new Set([...seedIds, productId])]);
    const boards = await this.deps.itemStats.getCategories([...new Set([...this.service.seedCategories(profile, now), product.category])]);
    const products = await this.deps.catalogue.products([...new Set([...seedIds, productId])]);
    return success(this.service.explain({ profile, now, itemStats, boards, products }, product));
  }

  /** Items most often engaged with together with `productId`, best first. */
  async similarProducts(productId: string, limit: number): Promise<UseCaseResult<SimilarProduct[]>> {
    const badLimit = validateLimit(limit);
    if (badLimit) return { ok: false, error: badLimit };
    const product = (await this.deps.catalogue.products([productId])).get(productId);
    if (!product) return notFound('product', productId);
    const stats = (await this.deps.itemStats.getItems([productId])).get(productId);
    const neighbours = stats?.neighbours ?? [];
    const total = neighbours.reduce((sum, n) => sum + n.weight, 0);
    const ids = neighbours.map((n) => n.productId);
    const [neighbourStats, products] = await Promise.all([this.deps.itemStats.getItems(ids), this.deps.catalogue.products(ids)]);
    const similar: SimilarProduct[] = [];
    for (const n of neighbours) {
      const other = products.get(n.productId);
      if (!other) continue;
      similar.push({ product: other, score: (n.weight / total) * ratingFactor(neighbourStats.get(n.productId), this.policy), reason: `Customers who engaged with ${product.name} also engaged with ${other.name}` });
    }
    return success(similar.sort((a, b) => b.score - a.score || (a.product.id < b.product.id ? -1 : 1)).slice(0, limit));
  }

  /** Category, price and segment to add to the row of a shop event (profile as it stands, time of the event). */
  async enrichInteraction(interaction: Interaction): Promise<Enrichment> {
    const product = interaction.productId === undefined ? undefined : (await this.deps.catalogue.products([interaction.productId])).get(interaction.productId);
    return enrich(interaction, product, await this.deps.profiles.get(interaction.customerId), this.policy);
  }
}
