/**
 * The customer profile: what the hub knows of one customer, updated one interaction at a time. No I/O and no clock:
 * every function takes the time it needs. `applyInteraction` changes the profile it is given in place: the write
 * side holds one copy of each of its customers' profiles, and copying a profile of 100 recent items per event was
 * most of the cost of an event (0.13 ms). The one copy made is the serialised one at each flush; a caller that
 * needs the profile as it was keeps a copy (structuredClone) itself.
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

/** Appends `id` to `list` in place (moving it to the end if present) and keeps the last `limit`. */
function appendBounded(list: string[], id: string, limit: number): void {
  const at = list.indexOf(id);
  if (at >= 0) list.splice(at, 1);
  list.push(id);
  if (list.length > limit) list.splice(0, list.length - limit);
}

/** Adds to a category and, beyond the limit, drops the category weakest at `at` (ties: the name last in order). */
function addCategoryPreference(preferences: Record<string, DecayedValue>, category: string, amount: number, at: number, policy: RecommendationPolicy): void {
  preferences[category] = addDecayed(preferences[category] ?? ZERO_DECAYED, amount, at, policy.categoryHalfLifeMs);
  const names = Object.keys(preferences);
  if (names.length <= policy.categoryLimit) return;
  let weakest: string | undefined;
  let weakestValue = Infinity;
  for (const name of names) {
    if (name === category) continue;
    const value = decayedAt(preferences[name]!, at, policy.categoryHalfLifeMs);
    if (value < weakestValue || (value === weakestValue && name > weakest!)) {
      weakest = name;
      weakestValue = value;
    }
  }
  delete preferences[weakest!];
}

/**
 * Applies one interaction to `profile`, in place; false (and nothing changed) when it had been applied before.
 * `product` is the catalogue entry of the interaction's item (undefined when unknown: the item still counts, only its
 * category and list price are missing).
 */
export function applyInteraction(profile: CustomerProfile, interaction: Interaction, product: Product | undefined, policy: RecommendationPolicy): boolean {
  if (wasApplied(profile.applied, interaction.eventId, interaction.position)) return false;
  const { at, kind } = interaction;
  profile.firstSeen = Math.min(profile.firstSeen, at);
  profile.interactionCounts[kind] = (profile.interactionCounts[kind] ?? 0) + 1;
  recordApplied(profile.applied, interaction.eventId, interaction.position, policy.profileLedgerCapacity);

  if (kind === 'failed_login') {
    const burst = decayedAt(profile.failedLoginBurst, at, policy.failedLoginBurstHalfLifeMs) + 1;
    profile.failedLoginBurst = addDecayed(profile.failedLoginBurst, 1, at, policy.failedLoginBurstHalfLifeMs);
    profile.risk = addDecayed(profile.risk, policy.riskPerBurstFailure * Math.max(0, burst - 1), at, policy.riskHalfLifeMs);
    return true;
  }

  profile.lastActive = Math.max(profile.lastActive, at);
  const productId = interaction.productId!;
  const recent: RecentItem = { productId, lastKind: kind, at };
  if (product) recent.category = product.category;
  const seen = profile.recentItems.findIndex((item) => item.productId === productId);
  if (seen >= 0) profile.recentItems.splice(seen, 1);
  profile.recentItems.push(recent);
  if (profile.recentItems.length > policy.recentItemsLimit) profile.recentItems.splice(0, profile.recentItems.length - policy.recentItemsLimit);

  const weight = engagementWeight(interaction, policy);
  if (product && weight > 0) addCategoryPreference(profile.categoryPreferences, product.category, weight, at, policy);

  if (kind === 'purchase') {
    const unitPrice = interaction.price ?? product?.price ?? 0;
    profile.lifetimeValue += unitPrice * (interaction.quantity ?? 1);
    profile.purchaseCount += 1;
    appendBounded(profile.purchasedItems, productId, policy.purchasedLimit);
  }
  if (kind === 'review_submitted' && interaction.rating !== undefined) {
    if (interaction.rating <= policy.dislikeRatingAtMost) appendBounded(profile.dislikedItems, productId, policy.dislikedLimit);
    else {
      const disliked = profile.dislikedItems.indexOf(productId); // a later good review takes the dislike back
      if (disliked >= 0) profile.dislikedItems.splice(disliked, 1);
    }
  }
  return true;
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
