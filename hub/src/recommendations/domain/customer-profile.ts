/**
 * The customer profile: what the hub knows of one customer, updated one interaction at a time. Pure: every function
 * takes the time it needs and returns a new profile, never touching the one passed in.
 *
 * Exactly once: the profile's `applied` ledger (applied-events.ts) makes applying an interaction twice a no-op. The
 * application writes the profile last, after the item statistics an interaction changes, so the profile acts as the
 * commit mark: a redelivery after a crash in between finds the profile unchanged, recomputes the same item updates
 * (they derive only from the profile before the event), and the items' own ledgers drop the ones already applied.
 */
import { addDecayed, decayedAt, ZERO_DECAYED, type DecayedValue } from './decay.js';
import { emptyAppliedEvents, recordApplied, wasApplied, type AppliedEvents } from './applied-events.js';
import type { Interaction, InteractionKind } from './interaction.js';
import { engagementWeight, type RecommendationPolicy } from './policy.js';
import type { Product } from './product.js';

export interface RecentItem {
  productId: string;
  /** The item's category when the catalogue knew it. */
  category?: string;
  lastKind: InteractionKind;
  /** Time of the latest interaction with the item, epoch ms. */
  at: number;
}

export interface CustomerProfile {
  customerId: string;
  firstSeen: number;
  /** Latest interaction time that was the customer's own doing (failed logins do not count). */
  lastActive: number;
  interactionCounts: Partial<Record<InteractionKind, number>>;
  /** Distinct items, oldest first; an item interacted with again moves to the end. At most policy.recentItemsLimit. */
  recentItems: RecentItem[];
  /** Decayed engagement per category; at most policy.categoryLimit categories. */
  categoryPreferences: Record<string, DecayedValue>;
  /** Decayed risk points; riskScoreOf maps them to 0..1. */
  risk: DecayedValue;
  /** Decayed count of recent failed logins: how deep in a burst the next one is. */
  failedLoginBurst: DecayedValue;
  /** Sum of price x quantity over purchases. */
  lifetimeValue: number;
  purchaseCount: number;
  /** Distinct purchased items, oldest first, at most policy.purchasedLimit: excluded from recommendations. */
  purchasedItems: string[];
  /** Items the customer rated at or below policy.dislikeRatingAtMost, oldest first, at most policy.dislikedLimit. */
  dislikedItems: string[];
  applied: AppliedEvents;
}

export function newProfile(customerId: string, at: number): CustomerProfile {
  return {
    customerId,
    firstSeen: at,
    lastActive: at,
    interactionCounts: {},
    recentItems: [],
    categoryPreferences: {},
    risk: { ...ZERO_DECAYED },
    failedLoginBurst: { ...ZERO_DECAYED },
    lifetimeValue: 0,
    purchaseCount: 0,
    purchasedItems: [],
    dislikedItems: [],
    applied: emptyAppliedEvents(),
  };
}

export interface ProfileUpdate {
  profile: CustomerProfile;
  /** False when the interaction had been applied before: `profile` is then the one passed in. */
  applied: boolean;
}

/** Appends `id` (moving it to the end if present) and keeps the last `limit`. */
function appendBounded(list: readonly string[], id: string, limit: number): string[] {
  const next = list.filter((x) => x !== id);
  next.push(id);
  if (next.length > limit) next.splice(0, next.length - limit);
  return next;
}

/** Adds to a category and, beyond the limit, drops the category weakest at `at` (ties: the name last in order). */
function addCategoryPreference(preferences: Record<string, DecayedValue>, category: string, amount: number, at: number, policy: RecommendationPolicy): Record<string, DecayedValue> {
  const next = { ...preferences, [category]: addDecayed(preferences[category] ?? ZERO_DECAYED, amount, at, policy.categoryHalfLifeMs) };
  const names = Object.keys(next);
  if (names.length <= policy.categoryLimit) return next;
  const weakest = names
    .filter((name) => name !== category)
    .sort((a, b) => decayedAt(next[a]!, at, policy.categoryHalfLifeMs) - decayedAt(next[b]!, at, policy.categoryHalfLifeMs) || (a < b ? 1 : -1))[0]!;
  delete next[weakest];
  return next;
}

/**
 * Applies one interaction. `product` is the catalogue entry of the interaction's item (undefined when unknown: the
 * item still counts, only its category and list price are missing).
 */
export function applyInteraction(profile: CustomerProfile, interaction: Interaction, product: Product | undefined, policy: RecommendationPolicy): ProfileUpdate {
  if (wasApplied(profile.applied, interaction.eventId, interaction.position)) return { profile, applied: false };
  const { at, kind } = interaction;
  const next: CustomerProfile = {
    ...profile,
    firstSeen: Math.min(profile.firstSeen, at),
    interactionCounts: { ...profile.interactionCounts, [kind]: (profile.interactionCounts[kind] ?? 0) + 1 },
    applied: recordApplied(profile.applied, interaction.eventId, interaction.position, policy.profileLedgerCapacity),
  };

  if (kind === 'failed_login') {
    const burst = decayedAt(profile.failedLoginBurst, at, policy.failedLoginBurstHalfLifeMs) + 1;
    next.failedLoginBurst = addDecayed(profile.failedLoginBurst, 1, at, policy.failedLoginBurstHalfLifeMs);
    next.risk = addDecayed(profile.risk, policy.riskPerBurstFailure * Math.max(0, burst - 1), at, policy.riskHalfLifeMs);
    return { profile: next, applied: true };
  }

  next.lastActive = Math.max(profile.lastActive, at);
  const productId = interaction.productId!;
  const recent: RecentItem = { productId, lastKind: kind, at };
  if (product) recent.category = product.category;
  next.recentItems = [...profile.recentItems.filter((item) => item.productId !== productId), recent];
  if (next.recentItems.length > policy.recentItemsLimit) next.recentItems.splice(0, next.recentItems.length - policy.recentItemsLimit);

  const weight = engagementWeight(interaction, policy);
  if (product && weight > 0) next.categoryPreferences = addCategoryPreference(profile.categoryPreferences, product.category, weight, at, policy);

  if (kind === 'purchase') {
    const unitPrice = interaction.price ?? product?.price ?? 0;
    next.lifetimeValue = profile.lifetimeValue + unitPrice * (interaction.quantity ?? 1);
    next.purchaseCount = profile.purchaseCount + 1;
    next.purchasedItems = appendBounded(profile.purchasedItems, productId, policy.purchasedLimit);
  }
  if (kind === 'review_submitted' && interaction.rating !== undefined) {
    next.dislikedItems =
      interaction.rating <= policy.dislikeRatingAtMost
        ? appendBounded(profile.dislikedItems, productId, policy.dislikedLimit)
        : profile.dislikedItems.filter((id) => id !== productId); // a later good review takes the dislike back
  }
  return { profile: next, applied: true };
}

/** Risk in [0, 1): 1 - e^(-points), points decayed to `now`. */
export function riskScoreOf(profile: CustomerProfile, now: number, policy: RecommendationPolicy): number {
  return 1 - Math.exp(-decayedAt(profile.risk, now, policy.riskHalfLifeMs));
}

export interface CategoryPreference {
  category: string;
  /** Decayed engagement at `now`. */
  weight: number;
  /** weight / sum of all weights. */
  share: number;
}

/** Preferred categories at `now`, strongest first (ties by name). */
export function preferredCategories(profile: CustomerProfile, now: number, policy: RecommendationPolicy): CategoryPreference[] {
  const weights = Object.entries(profile.categoryPreferences).map(([category, decayed]) => ({ category, weight: decayedAt(decayed, now, policy.categoryHalfLifeMs) }));
  const total = weights.reduce((sum, w) => sum + w.weight, 0);
  return weights
    .filter((w) => w.weight > 0)
    .map((w) => ({ ...w, share: w.weight / total }))
    .sort((a, b) => b.weight - a.weight || (a.category < b.category ? -1 : 1));
}

/**
 * Segments, first match wins:
 * - at_risk: risk score >= policy.segment.atRiskScore (a burst of failed logins lately: the account may be under attack);
 * - new: first seen less than policy.segment.newForMs ago;
 * - loyal: at least policy.segment.loyalPurchases purchases and active within policy.segment.activeWithinMs;
 * - active: active within policy.segment.activeWithinMs;
 * - dormant: everyone else.
 */
export type Segment = 'at_risk' | 'new' | 'loyal' | 'active' | 'dormant';

export function segmentOf(profile: CustomerProfile, now: number, policy: RecommendationPolicy): Segment {
  if (riskScoreOf(profile, now, policy) >= policy.segment.atRiskScore) return 'at_risk';
  if (now - profile.firstSeen < policy.segment.newForMs) return 'new';
  const active = now - profile.lastActive <= policy.segment.activeWithinMs;
  if (active && profile.purchaseCount >= policy.segment.loyalPurchases) return 'loyal';
  return active ? 'active' : 'dormant';
}
