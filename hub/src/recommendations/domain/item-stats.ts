/**
 * Statistics per item and per category, maintained incrementally from interactions:
 *
 * - per item: decayed popularity, ratings, and its co-occurrence neighbours ("customers who engaged with this also
 *   engaged with Y"), a bounded top-K kept with the Space-Saving rule: when the list is full, a new neighbour replaces
 *   the weakest one and starts from that one's weight plus its own. The weakest is the lowest weight, ties broken by
 *   the id last in order, so eviction depends only on the list and the update (a replay reproduces it exactly).
 * - per category (and '*' for the whole shop): a bounded board of its most popular items, for cold start.
 *
 * Like profiles (see customer-profile.ts), item statistics and boards are changed in place by their one owner.
 *
 * Exactly once: an item's stats carry their own applied-events ledger, because one interaction touches several items
 * (its own, and each recent item it co-occurs with). The category boards need none: they are set, not added to, with
 * an item's current popularity (newest asOf wins), so writing the same value twice changes nothing.
 */
import { addDecayed, decayedAt, ZERO_DECAYED, type DecayedValue } from './decay.js';
import { emptyAppliedEvents, recordApplied, wasApplied, type AppliedEvents } from './applied-events.js';
import type { CustomerProfile } from './customer-profile.js';
import type { Interaction } from './interaction.js';
import { engagementWeight, type RecommendationPolicy } from './policy.js';

export interface Neighbour {
  productId: string;
  weight: number;
}

export interface ItemStats {
  productId: string;
  popularity: DecayedValue;
  /** Count of interactions with positive weight. */
  engagements: number;
  /** Strongest first (ties by id), at most policy.neighboursPerItem. */
  neighbours: Neighbour[];
  ratingSum: number;
  ratingCount: number;
  applied: AppliedEvents;
}

export function emptyItemStats(productId: string): ItemStats {
  return { productId, popularity: { ...ZERO_DECAYED }, engagements: 0, neighbours: [], ratingSum: 0, ratingCount: 0, applied: emptyAppliedEvents() };
}

/** The change one interaction makes to one item. */
export interface ItemDelta {
  productId: string;
  popularity: number;
  /** Co-occurrence weight to add per neighbour. */
  neighbours: Neighbour[];
  rating?: number;
}

/**
 * The item updates an interaction causes, from the profile as it was before the interaction: the item itself gains
 * popularity (and the rating, for a review), and it and each of the customer's recent other items (at most
 * policy.coOccurrenceWindowItems, engaged with within policy.coOccurrenceWindowMs, not disliked) link to each other
 * with the interaction's weight. Interactions of weight 0 (a 1-2 star review) link nothing. Deterministic in its inputs.
 */
export function planItemUpdates(profileBefore: CustomerProfile | undefined, interaction: Interaction, policy: RecommendationPolicy): ItemDelta[] {
  const productId = interaction.productId;
  if (productId === undefined) return [];
  const weight = engagementWeight(interaction, policy);
  const own: ItemDelta = { productId, popularity: weight, neighbours: [] };
  if (interaction.kind === 'review_submitted' && interaction.rating !== undefined) own.rating = interaction.rating;
  if (weight <= 0) return own.rating === undefined ? [] : [own];

  const linked: string[] = [];
  const recent = profileBefore?.recentItems ?? [];
  const disliked = new Set(profileBefore?.dislikedItems ?? []);
  for (let i = recent.length - 1; i >= 0 && linked.length < policy.coOccurrenceWindowItems; i--) {
    const item = recent[i]!;
    if (item.productId === productId || disliked.has(item.productId)) continue; // a disliked item is no evidence of taste
    if (interaction.at - item.at > policy.coOccurrenceWindowMs) break; // older ones are older still
    linked.push(item.productId);
  }
  own.neighbours = linked.map((id) => ({ productId: id, weight }));
  return [own, ...linked.map((id) => ({ productId: id, popularity: 0, neighbours: [{ productId, weight }] }))];
}

function byStrength(a: Neighbour, b: Neighbour): number {
  return b.weight - a.weight || (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0);
}

/**
 * Lookup by product id of a list's entries (a neighbour list, a board), built on first use and kept beside the list
 * (not in it: the list is what gets stored). Valid because these lists change only through the functions below; a
 * list decoded from the store is a new array and gets a new index. Without it, every update was a scan of the list.
 */
const indexes = new WeakMap<Array<{ productId: string }>, Map<string, { productId: string }>>();

function indexBeside<T extends { productId: string }>(list: T[]): Map<string, T> {
  let index = indexes.get(list) as Map<string, T> | undefined;
  if (!index) {
    index = new Map(list.map((entry) => [entry.productId, entry]));
    indexes.set(list, index);
  }
  return index;
}

/**
 * Adds co-occurrence weight to a bounded neighbour list, in place (Space-Saving eviction, see the file comment). The
 * list is kept sorted by strength (this function's own output always is), so the weakest is the last entry, and only
 * the entry that grew moves: up to its place, in one pass, instead of a sort of the whole list per update.
 */
export function addNeighbour(neighbours: Neighbour[], productId: string, weight: number, limit: number): void {
  const index = indexBeside(neighbours);
  let entry = index.get(productId);
  let i: number;
  if (entry) {
    entry.weight += weight;
    i = neighbours.indexOf(entry);
  } else if (neighbours.length < limit) {
    entry = { productId, weight };
    neighbours.push(entry);
    i = neighbours.length - 1;
  } else {
    i = neighbours.length - 1;
    const evicted = neighbours[i]!;
    index.delete(evicted.productId);
    entry = { productId, weight: evicted.weight + weight };
    neighbours[i] = entry;
  }
  index.set(productId, entry);
  // The entry only grew, so its place is at or above i: binary search for it (weights often tie, and a linear walk
  // compared ids all the way up), then shift the ones in between down by one.
  let low = 0;
  let high = i;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (byStrength(neighbours[middle]!, entry) > 0) high = middle;
    else low = middle + 1;
  }
  for (let j = i; j > low; j--) neighbours[j] = neighbours[j - 1]!;
  neighbours[low] = entry;
}

/** Applies one item's share of an interaction to `stats`, in place; false (nothing changed) if it had been applied. */
export function applyItemDelta(stats: ItemStats, delta: ItemDelta, interaction: Interaction, policy: RecommendationPolicy): boolean {
  if (wasApplied(stats.applied, interaction.eventId, interaction.position)) return false;
  for (const n of delta.neighbours) addNeighbour(stats.neighbours, n.productId, n.weight, policy.neighboursPerItem);
  if (delta.popularity > 0) {
    stats.popularity = addDecayed(stats.popularity, delta.popularity, interaction.at, policy.popularityHalfLifeMs);
    stats.engagements++;
  }
  if (delta.rating !== undefined) {
    stats.ratingSum += delta.rating;
    stats.ratingCount++;
  }
  recordApplied(stats.applied, interaction.eventId, interaction.position, policy.itemLedgerCapacity);
  return true;
}

/** Bayesian average rating divided by the prior mean: 1 without reviews, below 1 for badly rated items. */
export function ratingFactor(stats: ItemStats | undefined, policy: RecommendationPolicy): number {
  if (!stats || stats.ratingCount === 0) return 1;
  const average = (stats.ratingSum + policy.ratingPriorMean * policy.ratingPriorCount) / (stats.ratingCount + policy.ratingPriorCount);
  return average / policy.ratingPriorMean;
}

/** The board of all items, for customers without any category. */
export const ALL_CATEGORIES = '*';

export interface CategoryBoardEntry {
  productId: string;
  popularity: DecayedValue;
}

export interface CategoryPopularity {
  category: string;
  /** Unordered; at most 2 x policy.categoryBoardSize (see upsertCategoryBoard). */
  entries: CategoryBoardEntry[];
}

export function emptyCategoryBoard(category: string): CategoryPopularity {
  return { category, entries: [] };
}

/**
 * How strong a board entry is, as a number comparable across entries whatever their asOf: decayedAt(e, t) =
 * value x 2^(-(t - asOf) / h), so for any t at or after every asOf, comparing entries at t is comparing
 * log2(value) + asOf / h. No power per entry, and no need to bring the board to a common time first.
 */
function boardStrength(entry: CategoryBoardEntry, halfLifeMs: number): number {
  return Math.log2(entry.popularity.value) + entry.popularity.asOf / halfLifeMs;
}

/**
 * Sets an item's popularity on a board, in place. The newer value (later asOf; on a tie the larger) wins, so
 * repeated and reordered writes of the same values converge. A board holds up to twice policy.categoryBoardSize
 * entries; past that it keeps the strongest categoryBoardSize (see boardStrength; ties: the id first in order).
 * Trimming in one sort per categoryBoardSize new entries, instead of finding the weakest at every new entry, costs a
 * logarithm per entry instead of a pass over the board; readers rank the board anyway.
 */
export function upsertCategoryBoard(board: CategoryPopularity, productId: string, popularity: DecayedValue, policy: RecommendationPolicy): void {
  const { entries } = board;
  const index = indexBeside(entries);
  const existing = index.get(productId);
  if (existing) {
    const newer = popularity.asOf > existing.popularity.asOf || (popularity.asOf === existing.popularity.asOf && popularity.value > existing.popularity.value);
    if (newer) existing.popularity = { ...popularity };
    return;
  }
  const entry: CategoryBoardEntry = { productId, popularity: { ...popularity } };
  entries.push(entry);
  index.set(productId, entry);
  if (entries.length <= 2 * policy.categoryBoardSize) return;
  const halfLife = policy.popularityHalfLifeMs;
  const ranked = entries
    .map((e) => ({ e, strength: boardStrength(e, halfLife) }))
    .sort((a, b) => b.strength - a.strength || (a.e.productId < b.e.productId ? -1 : 1));
  for (const { e } of ranked.slice(policy.categoryBoardSize)) index.delete(e.productId);
  entries.splice(0, entries.length, ...ranked.slice(0, policy.categoryBoardSize).map(({ e }) => e));
}

/** A board's items by popularity at `now`, strongest first (ties by id). */
export function rankedBoard(board: CategoryPopularity | undefined, now: number, policy: RecommendationPolicy): Array<{ productId: string; popularity: number }> {
  return (board?.entries ?? [])
    .map((e) => ({ productId: e.productId, popularity: decayedAt(e.popularity, now, policy.popularityHalfLifeMs) }))
    .sort((a, b) => b.popularity - a.popularity || (a.productId < b.productId ? -1 : 1));
}
