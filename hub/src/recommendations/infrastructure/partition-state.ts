/**
 * The write side of one partition: the ports of the application layer over an in-memory cache of the partition's
 * keys (its customers' profiles, its shards of item statistics and category boards), loaded from KV on first use and
 * written back by `flush()` (only what changed, serialised when the flush starts, so batches go on being applied while
 * its writes are in flight). Used as the PartitionFeed's target: each app event of a batch goes
 * through `recordAppEvent` with its position (`p<N>`, stream sequence x 65536 + index in the batch), which the
 * applied-events ledger of every record it changes remembers; a replay after a crash is skipped record by record.
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { EventBatch, WireEvent } from '../../../../shared/wire.js';
import { RecommendationsUseCases, type Catalogue } from '../application/index.js';
import type { CustomerProfileRepository, ItemStatsRepository } from '../application/ports.js';
import { ALL_CATEGORIES, DEFAULT_POLICY, interactionFromAppEvent, type CategoryPopularity, type Interaction, type CustomerProfile, type ItemStats, type RecommendationPolicy } from '../domain/index.js';
import { boardShardKey, decodeValue, encodeValue, getMany, getManyFromLeader, itemShardKey, loadMatching, profileKey, putMany } from './kv-state.js';


/** A bucket as the write side uses it: read with `kv`, written with putMany (atomic batches when the server can). */
export interface BucketWriter {
  js: JetStreamClient;
  jsm: JetStreamManager;
  kv: KV;
  bucket: string;
  atomic: boolean;
}
import type { PartitionFeedTarget } from './partition-feed.js';
import { ShopInteractionRows, type QuestDbTarget } from './questdb-interactions-sink.js';

/**
 * The write side's policy: the default, with shorter id ledgers. Every event comes with its stream position here,
 * and the per-partition high-water mark is what recognises a replay. Event ids only catch an event sent twice by
 * its source (a device or backend retrying, within seconds): the profile's ledger does that for the whole
 * interaction (a duplicate never reaches the items), so an item shard keeps no ids at all, only its mark. Shorter
 * ledgers also make every record written to KV at each flush smaller (256 ids were most of an item shard's bytes).
 */
export const WRITE_POLICY: RecommendationPolicy = { ...DEFAULT_POLICY, itemLedgerCapacity: 0, profileLedgerCapacity: 16 };

/** Batches are at most 65535 events (the agent's maxBatchEvents is 2000), so positions never collide. */
export const POSITION_STRIDE = 65_536;

/**
 * Longest stretch of applying (all partitions of the process together) before the event loop gets a turn: reads
 * come from the cache, so the awaits below resolve without I/O, and a batch of 500 events would otherwise hold the
 * API, the flush timer and the KV watches for its whole length.
 */
const YIELD_EVERY_MS = 5;
const slice = { start: performance.now() };

/** How long after a takeover cold profiles are read from the stream leader (see getManyFromLeader). */
const LEADER_READS_MS = 10_000;
/** How often a partition's changed category boards are written (see flush). */
const BOARD_FLUSH_MS = 1_000;
/** Past this many cached keys, a flush forgets the clean ones (they are in KV; the next use loads them again). */
const MAX_CACHED_KEYS = 200_000;

/** The keys of one KV bucket this partition owns: read once, then changed in memory and written back by flushes. */
class CachedKeys<T> {
  readonly values = new Map<string, T | undefined>();
  readonly dirty = new Set<string>();
  /** Until then (performance.now()), cold keys are read from the stream leader (see getManyFromLeader). */
  leaderReadsUntil = 0;
  /** Keys this predicate accepts were all loaded (loadAll): one not in `values` does not exist, no need to ask. */
  private complete: ((key: string) => boolean) | undefined;
  constructor(private readonly bucket: BucketWriter) {}

  /**
   * Loads every existing key matching `filters` (KV wildcards) in one pass, and from then on takes a matching key it
   * does not hold as absent. For keys a partition owns alone (its item shards and boards), which it would otherwise
   * read one batch of cold keys at a time: a round trip before each small batch of a live feed.
   */
  async loadAll(filters: readonly string[], matches: (key: string) => boolean): Promise<number> {
    const loaded = await loadMatching(this.bucket.js, this.bucket.bucket, filters);
    for (const [key, bytes] of loaded) if (!this.values.has(key)) this.values.set(key, decodeValue<T>(bytes));
    this.complete = matches;
    return loaded.size;
  }

  private known(key: string): boolean {
    return this.values.has(key) || (this.complete?.(key) ?? false);
  }

  async get(key: string): Promise<T | undefined> {
    if (!this.known(key)) await this.load([key]);
    return this.values.get(key);
  }

  /** Loads the keys not cached yet, with batch direct gets (see getMany). */
  async load(keys: Iterable<string>): Promise<void> {
    const missing = [...new Set(keys)].filter((key) => !this.known(key));
    if (missing.length === 0) return;
    const read = performance.now() < this.leaderReadsUntil ? getManyFromLeader : getMany;
    const loaded = await read(this.bucket.jsm, this.bucket.bucket, missing);
    for (const [key, bytes] of loaded) {
      // A key loaded meanwhile (and maybe changed since) keeps what is there.
      if (!this.values.has(key)) this.values.set(key, bytes === undefined ? undefined : decodeValue<T>(bytes));
    }
  }

  /** Marks the key changed (its value is the record the caller changed in place, or a new one). */
  set(key: string, value: T): void {
    this.values.set(key, value);
    this.dirty.add(key);
  }

  /**
   * Serialises every changed key now (the only copy of a record the write side makes) and returns the write of
   * them, and `restore` for when the flush fails: it marks the keys changed again, so that the next capture
   * serialises their newest values (writing a value that did land once more is harmless).
   */
  capture(): { keys: number; write: () => Promise<void>; restore: () => void } {
    const captured: Array<[string, Uint8Array]> = [];
    for (const key of this.dirty) captured.push([key, encodeValue(this.values.get(key))]);
    this.dirty.clear();
    const write = async () => {
      await putMany(this.bucket, captured);
      // Only now: a clean key forgotten before its write landed would be loaded back from KV with its old value.
      if (this.values.size > MAX_CACHED_KEYS) {
        for (const key of this.values.keys()) if (!this.dirty.has(key)) this.values.delete(key);
        this.complete = undefined; // a forgotten key is no longer known to be absent
      }
    };
    const restore = () => {
      for (const [key] of captured) this.dirty.add(key);
    };
    return { keys: captured.length, write, restore };
  }
}

class PartitionProfiles implements CustomerProfileRepository {
  constructor(private readonly cache: CachedKeys<CustomerProfile>) {}
  get(customerId: string): Promise<CustomerProfile | undefined> {
    return this.cache.get(profileKey(customerId));
  }
  async put(profile: CustomerProfile): Promise<void> {
    this.cache.set(profileKey(profile.customerId), profile);
  }
}

/** Item statistics as this partition's shards: updates touch only them (single writer, see kv-state.ts). */
class PartitionItemShards implements ItemStatsRepository {
  constructor(
    private readonly partition: number,
    private readonly items: CachedKeys<ItemStats>,
    private readonly boards: CachedKeys<CategoryPopularity>,
  ) {}
  async getItems(productIds: readonly string[]): Promise<Map<string, ItemStats>> {
    const found = new Map<string, ItemStats>();
    for (const id of productIds) {
      const stats = await this.items.get(itemShardKey(id, this.partition));
      if (stats) found.set(id, stats);
    }
    return found;
  }
  async updateItem(productId: string, change: (current: ItemStats | undefined) => ItemStats): Promise<ItemStats> {
    const key = itemShardKey(productId, this.partition);
    const next = change(await this.items.get(key));
    this.items.set(key, next);
    return next;
  }
  async getCategories(categories: readonly string[]): Promise<Map<string, CategoryPopularity>> {
    const found = new Map<string, CategoryPopularity>();
    for (const category of categories) {
      const board = await this.boards.get(boardShardKey(category, this.partition));
      if (board) found.set(category, board);
    }
    return found;
  }
  async updateCategory(category: string, change: (current: CategoryPopularity | undefined) => CategoryPopularity): Promise<CategoryPopularity> {
    const key = boardShardKey(category, this.partition);
    const next = change(await this.boards.get(key));
    this.boards.set(key, next);
    return next;
  }
}

export interface PartitionStateCounters {
  /** Time spent loading cold records before applying batches, ms summed over the partitions. */
  prefetchMs: number;
  applied: number;
  duplicates: number;
  ignored: number;
  invalid: number;
  written: number;
}

/** An app event of the wire as the domain's AppEventLike (wire times are microseconds). */
export function appEventOf(event: WireEvent): { id: string; user_id: string; event_type: string; ts: number; properties?: Record<string, unknown> } | undefined {
  if (event.type !== 'app.event') return undefined;
  const body = event.body;
  if (typeof body.user_id !== 'string' || typeof body.event_type !== 'string') return undefined;
  const properties = typeof body.properties === 'object' && body.properties !== null ? (body.properties as Record<string, unknown>) : undefined;
  return { id: event.id, user_id: body.user_id, event_type: body.event_type, ts: Math.floor(event.ts / 1000), ...(properties ? { properties } : {}) };
}

export class PartitionState implements PartitionFeedTarget {
  private profiles: CachedKeys<CustomerProfile> | undefined;
  private items: CachedKeys<ItemStats> | undefined;
  private boards: CachedKeys<CategoryPopularity> | undefined;
  private useCases: RecommendationsUseCases | undefined;
  private rows: ShopInteractionRows | undefined;
  private partition = -1;
  private boardsFlushedAt = 0;

  constructor(
    private readonly kv: { profiles: BucketWriter; items: BucketWriter },
    private readonly catalogue: Catalogue,
    readonly counters: PartitionStateCounters,
    /** Where the enriched rows go (shop_interactions); none: no rows. */
    private readonly questdb: QuestDbTarget | undefined,
    /** Called with the customer of every event applied (the API's cached lists of that customer are now stale). */
    private readonly onApplied: (customerId: string) => void = () => {},
  ) {}

  async open(partition: number): Promise<void> {
    // A fresh cache per ownership: what an earlier ownership cached may have been changed by another owner since.
    this.partition = partition;
    this.profiles = new CachedKeys(this.kv.profiles);
    // The previous owner's last profiles were written moments ago; a replica may not have them yet.
    this.profiles.leaderReadsUntil = performance.now() + LEADER_READS_MS;
    this.items = new CachedKeys(this.kv.items);
    this.boards = new CachedKeys(this.kv.items);
    const suffix = `.p${partition}`;
    await Promise.all([
      this.items.loadAll([`i.*${suffix}`], (key) => key.startsWith('i.') && key.endsWith(suffix)),
      this.boards.loadAll([`b.*${suffix}`], (key) => key.startsWith('b.') && key.endsWith(suffix)),
    ]);
    this.useCases = new RecommendationsUseCases({
      profiles: new PartitionProfiles(this.profiles),
      itemStats: new PartitionItemShards(partition, this.items, this.boards),
      catalogue: this.catalogue,
      clock: { now: () => Date.now() },
      policy: WRITE_POLICY,
    });
    this.rows = this.questdb ? new ShopInteractionRows(this.questdb, partition) : undefined;
  }

  /**
   * The customer's profile as this owner holds it (applied, maybe not flushed yet), or undefined when it is not in
   * the cache. The API of the hub that owns the customer's partition reads it from here: fresh as soon as the event
   * is applied, where KV and the watch add a flush interval and a round trip. A crash before the flush loses nothing
   * a reader saw: the replay applies the same events to the same profile.
   */
  cachedProfile(customerId: string): CustomerProfile | undefined {
    return this.profiles?.values.get(profileKey(customerId));
  }

  async apply(batch: EventBatch, seq: number): Promise<void> {
    const useCases = this.useCases!;
    const interactions: Interaction[] = [];
    for (let index = 0; index < batch.events.length; index++) {
      const event = appEventOf(batch.events[index]!);
      if (!event) continue;
      const mapped = interactionFromAppEvent(event, { source: `p${this.partition}`, sequence: seq * POSITION_STRIDE + index });
      if (mapped.ok) interactions.push(mapped.interaction);
      else if (mapped.reason === 'not_a_shop_event') this.counters.ignored++;
      else this.counters.invalid++;
    }
    const prefetchStart = performance.now();
    await this.prefetch(interactions);
    this.counters.prefetchMs += performance.now() - prefetchStart;
    for (const interaction of interactions) {
      if (performance.now() - slice.start >= YIELD_EVERY_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        slice.start = performance.now();
      }
      // The row's segment is the customer's before this event (the same on every replay).
      const enrichment = this.rows ? await useCases.enrichInteraction(interaction) : undefined;
      const result = await useCases.recordInteraction(interaction);
      if (!result.ok) this.counters.invalid++;
      else if (result.value.status === 'duplicate') this.counters.duplicates++;
      else {
        this.counters.applied++;
        this.onApplied(interaction.customerId);
        if (enrichment) this.rows!.add(interaction, enrichment);
      }
    }
  }

  /**
   * Loads every record a batch will touch that is not cached yet, in two waves of parallel KV reads: the customers'
   * profiles, then the item shards of their products and recent items and the boards of the products' categories.
   * Read one at a time as the events needed them, cold keys cost a round trip each, and that (not the CPU) was what
   * limited a partition taken over with a backlog. In a warm cache there is nothing to load.
   */
  private async prefetch(interactions: readonly Interaction[]): Promise<void> {
    await this.profiles!.load(interactions.map((i) => profileKey(i.customerId)));
    const products = new Set<string>();
    for (const interaction of interactions) {
      if (interaction.productId !== undefined) products.add(interaction.productId);
      const recent = this.profiles!.values.get(profileKey(interaction.customerId))?.recentItems ?? [];
      for (let i = Math.max(0, recent.length - WRITE_POLICY.coOccurrenceWindowItems - 1); i < recent.length; i++) products.add(recent[i]!.productId);
    }
    const categories = new Set<string>([ALL_CATEGORIES]);
    for (const product of (await this.catalogue.products([...products])).values()) categories.add(product.category);
    await Promise.all([
      this.items!.load([...products].map((id) => itemShardKey(id, this.partition))),
      this.boards!.load([...categories].map((category) => boardShardKey(category, this.partition))),
    ]);
  }

  /**
   * Captures every changed record and row now, then writes them (see PartitionFeedTarget.flush). Category boards
   * only every BOARD_FLUSH_MS (and on the last flush): they change with almost every event, a board is several KB,
   * and they need no place in the commit order (an item's popularity is set on them, not added, and the next
   * interaction with the item sets it again), so a board written a few seconds late costs nothing but that delay.
   */
  flush(final = false): Promise<void> {
    // Rows first (upserts: written again after a crash, kept once), then items before profiles: a profile written
    // is the commit mark of its events (see use-cases.ts).
    const rows = this.rows?.flush(); // the rows are captured when the call starts
    const items = this.items!.capture();
    const boardsDue = final || performance.now() - this.boardsFlushedAt >= BOARD_FLUSH_MS;
    const boards = boardsDue ? this.boards!.capture() : undefined;
    if (boards) this.boardsFlushedAt = performance.now();
    const profiles = this.profiles!.capture();
    return (async () => {
      try {
        await rows;
        await Promise.all([items.write(), boards?.write()]);
        await profiles.write();
      } catch (error) {
        for (const captured of [items, boards, profiles]) captured?.restore();
        throw error;
      }
      this.counters.written += items.keys + (boards?.keys ?? 0) + profiles.keys;
    })();
  }

  /** Boards changed since their last write (they are written at most every BOARD_FLUSH_MS). */
  hasDeferredWrites(): boolean {
    return (this.boards?.dirty.size ?? 0) > 0;
  }

  close(): void {
    void this.rows?.close();
    this.rows = undefined;
    this.profiles = this.items = this.boards = undefined;
    this.useCases = undefined;
  }
}
