/**
 * The read side: every profile and every shard of item statistics and category boards, kept in memory from a watch
 * on the two KV buckets (initial values first, then every change), so that the API answers from memory, never from
 * QuestDB or a KV round trip. It implements the application's read ports; item statistics and boards are the merge
 * of the partitions' shards (see kv-state.ts), computed when read and cached until a shard of the key changes.
 *
 * Writes through these ports are refused: the partition owners write (partition-state.ts).
 */
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { Logger } from '../../../../shared/logger.js';
import type { CustomerProfileRepository, ItemStatsRepository } from '../application/ports.js';
import { addNeighbour, decayedAt, emptyAppliedEvents, type CategoryPopularity, type CustomerProfile, type DecayedValue, type ItemStats, type RecommendationPolicy } from '../domain/index.js';
import { decodeValue, parseItemsKey, parseProfileKey, watchBucket } from './kv-state.js';

/**
 * Values are kept as the bytes the watch delivered and decoded when first read: the hub that writes a record gets
 * its own write back from the watch, and under a backlog most records change many times between two reads.
 */
type Stored<T> = T | Uint8Array;
type Shards<T> = Map<number, Stored<T>>;

/** The value, or undefined (logged by the caller) when its bytes are not a value this code can read. */
function decoded<T>(value: Stored<T>): T | undefined {
  if (!(value instanceof Uint8Array)) return value;
  try {
    return decodeValue<T>(value);
  } catch {
    return undefined;
  }
}

/** A copy of the watch entry's bytes (the entry's view may share a larger buffer with other messages). */
function bytesOf(entry: KvWatchEntry): Uint8Array {
  return Uint8Array.prototype.slice.call(entry.value);
}

/** Sums decayed values at the later of their times. */
function sumDecayed(a: DecayedValue, b: DecayedValue, halfLifeMs: number): DecayedValue {
  if (a.asOf === 0 && a.value === 0) return { ...b };
  const at = Math.max(a.asOf, b.asOf);
  return { value: decayedAt(a, at, halfLifeMs) + decayedAt(b, at, halfLifeMs), asOf: at };
}

/**
 * An item's statistics merged from its shards. The neighbour list is merged on first read: a recommendation list
 * reads popularity and ratings of a few hundred candidates but the neighbours of only its seeds, and merging eight
 * lists of fifty was most of the cost of a list whenever the shards had changed since the last merge.
 */
class MergedItemStats implements ItemStats {
  popularity: DecayedValue = { value: 0, asOf: 0 };
  engagements = 0;
  ratingSum = 0;
  ratingCount = 0;
  applied = emptyAppliedEvents();
  private merged: ItemStats['neighbours'] | undefined;

  constructor(
    readonly productId: string,
    private readonly shards: readonly ItemStats[],
    private readonly policy: RecommendationPolicy,
  ) {
    for (const shard of shards) {
      this.popularity = sumDecayed(this.popularity, shard.popularity, policy.popularityHalfLifeMs);
      this.engagements += shard.engagements;
      this.ratingSum += shard.ratingSum;
      this.ratingCount += shard.ratingCount;
    }
  }

  get neighbours(): ItemStats['neighbours'] {
    if (this.merged === undefined) {
      const weights = new Map<string, number>();
      for (const shard of this.shards) for (const n of shard.neighbours) weights.set(n.productId, (weights.get(n.productId) ?? 0) + n.weight);
      const neighbours: ItemStats['neighbours'] = [];
      for (const [id, weight] of [...weights].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, this.policy.neighboursPerItem)) {
        addNeighbour(neighbours, id, weight, this.policy.neighboursPerItem);
      }
      this.merged = neighbours;
    }
    return this.merged;
  }

  toJSON(): ItemStats {
    const { productId, popularity, engagements, neighbours, ratingSum, ratingCount, applied } = this;
    return { productId, popularity, engagements, neighbours, ratingSum, ratingCount, applied };
  }
}

export function mergeItemShards(productId: string, shards: readonly ItemStats[], policy: RecommendationPolicy): ItemStats {
  return new MergedItemStats(productId, shards, policy);
}

export function mergeBoardShards(category: string, shards: Iterable<CategoryPopularity>, policy: RecommendationPolicy): CategoryPopularity {
  const byItem = new Map<string, DecayedValue>();
  for (const shard of shards) {
    for (const e of shard.entries) byItem.set(e.productId, sumDecayed(byItem.get(e.productId) ?? { value: 0, asOf: 0 }, e.popularity, policy.popularityHalfLifeMs));
  }
  const at = Math.max(0, ...[...byItem.values()].map((v) => v.asOf));
  const entries = [...byItem]
    .sort((a, b) => decayedAt(b[1], at, policy.popularityHalfLifeMs) - decayedAt(a[1], at, policy.popularityHalfLifeMs) || (a[0] < b[0] ? -1 : 1))
    .slice(0, policy.categoryBoardSize)
    .map(([productId, popularity]) => ({ productId, popularity }));
  return { category, entries };
}

/** The merge of each id's shards, computed on first read and cached until a shard of the id changes (onItems). */
function mergedFor<T>(ids: readonly string[], shards: Map<string, Shards<T>>, cache: Map<string, T>, merge: (id: string, shards: T[]) => T): Map<string, T> {
  const found = new Map<string, T>();
  for (const id of ids) {
    let merged = cache.get(id);
    if (merged === undefined) {
      const byPartition = shards.get(id);
      if (!byPartition || byPartition.size === 0) continue;
      const readable: T[] = [];
      for (const [partition, stored] of byPartition) {
        const shard = decoded(stored);
        if (shard === undefined) continue;
        if (stored instanceof Uint8Array) byPartition.set(partition, shard); // decoded once per change
        readable.push(shard);
      }
      merged = merge(id, readable);
      cache.set(id, merged);
    }
    found.set(id, merged);
  }
  return found;
}

export interface ReadModelStats {
  profiles: number;
  items: number;
  boards: number;
  /** Changes applied from the watches. */
  updates: number;
  /** Whether both watches have delivered their initial values. */
  ready: boolean;
}

export class RecsReadModel implements CustomerProfileRepository, ItemStatsRepository {
  private readonly profiles = new Map<string, Stored<CustomerProfile>>();
  private readonly itemShards = new Map<string, Shards<ItemStats>>();
  private readonly boardShards = new Map<string, Shards<CategoryPopularity>>();
  private readonly mergedItems = new Map<string, ItemStats>();
  private readonly mergedBoards = new Map<string, CategoryPopularity>();
  private readonly stoppers: Array<() => void> = [];
  private readonly listeners = new Set<(customerId: string) => void>();
  private updates = 0;
  private ready = false;

  constructor(
    private readonly kv: { profiles: KV; items: KV },
    private readonly policy: RecommendationPolicy,
    private readonly log: Logger,
  ) {}

  /** Starts both watches and resolves once they have delivered what the buckets held. */
  async start(): Promise<void> {
    this.stoppers.push(
      ...(await Promise.all([watchBucket(this.kv.profiles, (e) => this.onProfile(e), this.log), watchBucket(this.kv.items, (e) => this.onItems(e), this.log)])),
    );
    this.ready = true;
    this.log.info({ profiles: this.profiles.size, items: this.itemShards.size, boards: this.boardShards.size }, 'recommendations: read model loaded');
  }

  stop(): void {
    for (const stop of this.stoppers) stop();
  }

  /** Called with the customer id after each profile change (the API's freshness, the demo's live view). */
  onProfileChange(listener: (customerId: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stats(): ReadModelStats {
    return { profiles: this.profiles.size, items: this.itemShards.size, boards: this.boardShards.size, updates: this.updates, ready: this.ready };
  }

  private onProfile(entry: KvWatchEntry): void {
    const customerId = parseProfileKey(entry.key);
    if (customerId === undefined) return;
    this.updates++;
    if (entry.operation !== 'PUT' || entry.length === 0) this.profiles.delete(customerId);
    else this.profiles.set(customerId, bytesOf(entry));
    for (const listener of this.listeners) listener(customerId);
  }

  private onItems(entry: KvWatchEntry): void {
    const key = parseItemsKey(entry.key);
    if (!key) return;
    this.updates++;
    const [shards, merged] = key.kind === 'item' ? [this.itemShards, this.mergedItems] : [this.boardShards, this.mergedBoards];
    const byPartition = (shards.get(key.id) ?? new Map()) as Shards<unknown>;
    if (entry.operation !== 'PUT' || entry.length === 0) byPartition.delete(key.partition);
    else byPartition.set(key.partition, bytesOf(entry));
    shards.set(key.id, byPartition as never);
    merged.delete(key.id);
  }

  // ------------------------------------------------------------------------------------------------------------
  // read ports

  async get(customerId: string): Promise<CustomerProfile | undefined> {
    const stored = this.profiles.get(customerId);
    if (!(stored instanceof Uint8Array)) return stored;
    const profile = decoded<CustomerProfile>(stored);
    if (profile === undefined) {
      this.log.warn({ customerId }, 'recommendations: unreadable profile in KV skipped');
      this.profiles.delete(customerId);
    } else this.profiles.set(customerId, profile);
    return profile;
  }

  async put(): Promise<void> {
    throw new Error('the read model is read-only: profiles are written by their partition owner');
  }

  async getItems(productIds: readonly string[]): Promise<Map<string, ItemStats>> {
    return mergedFor(productIds, this.itemShards, this.mergedItems, (id, shards) => mergeItemShards(id, shards, this.policy));
  }

  async updateItem(): Promise<ItemStats> {
    throw new Error('the read model is read-only: item statistics are written by the partition owners');
  }

  async getCategories(categories: readonly string[]): Promise<Map<string, CategoryPopularity>> {
    return mergedFor(categories, this.boardShards, this.mergedBoards, (id, shards) => mergeBoardShards(id, shards, this.policy));
  }

  async updateCategory(): Promise<CategoryPopularity> {
    throw new Error('the read model is read-only: category boards are written by the partition owners');
  }
}
