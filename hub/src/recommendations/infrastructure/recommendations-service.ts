/**
 * Composition root of the recommendations on a hub: the catalogue, the read model (KV watch, answers the API), and
 * the write side, one PartitionFeed + PartitionState per partition this worker holds a lease on (leases of its own
 * bucket, shared with the other hubs that run recommendations, so they split the partitions and take over from a
 * dead one).
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../../../shared/logger.js';
import { KvLeaseManager } from '../../partitions/index.js';
import { RecommendationsUseCases } from '../application/index.js';
import type { CustomerProfileRepository } from '../application/ports.js';
import { partitionOf } from '../../../../shared/wire.js';
import { DEFAULT_POLICY } from '../domain/index.js';
import { CatalogueStore } from './catalogue-store.js';
import { enableAtomicBatches, openRecsBucket, RECS_BUCKETS } from './kv-state.js';
import { CheckpointStore, PartitionFeed, type PartitionFeedStats } from './partition-feed.js';
import { PartitionState, type PartitionStateCounters } from './partition-state.js';
import { ensureShopInteractionsTable, type QuestDbTarget } from './questdb-interactions-sink.js';
import { RecsReadModel, type ReadModelStats } from './read-model.js';
import { RecommendationCache } from './recommendation-cache.js';
import type { QuestDbRest } from '../../sinks/questdb-rest.js';

export interface RecommendationsConfig {
  enabled: boolean;
  workerId: string;
  partitions: number;
  replicas: number;
  /** JSON array or NDJSON of products, loaded at start (the KV bucket recs-catalogue is watched as well). */
  catalogueFile?: string;
  flushIntervalMs: number;
  backlogFlushIntervalMs: number;
  backlogThresholdMessages: number;
  leaseTtlMs: number;
  ackWaitMs: number;
  maxAckPending: number;
  inactiveThresholdMs: number;
  /** Whether this hub also applies events (false: it only serves the API from the read model). */
  applyEvents: boolean;
  /** How long a recommendation list is served from memory unless the customer's profile changes (0: never). */
  cacheMaxAgeMs: number;
}

export interface RecommendationsStatus {
  workerId: string;
  owned: number[];
  catalogueProducts: number;
  readModel: ReadModelStats;
  cache: { customers: number; hits: number; misses: number };
  counters: PartitionStateCounters;
  partitions: PartitionFeedStats[];
}

export class RecommendationsService {
  readonly useCases: RecommendationsUseCases;
  readonly readModel: RecsReadModel;
  readonly recommendationCache: RecommendationCache;
  readonly counters: PartitionStateCounters = { prefetchMs: 0, applied: 0, duplicates: 0, ignored: 0, invalid: 0, written: 0 };
  private readonly feeds = new Map<number, PartitionFeed>();
  private readonly states = new Map<number, PartitionState>();
  private leases: KvLeaseManager | undefined;

  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly config: RecommendationsConfig,
    private readonly kv: Awaited<ReturnType<typeof openBuckets>>,
    private readonly log: Logger,
    private readonly questdb: QuestDbTarget | undefined,
    readonly catalogue: CatalogueStore,
  ) {
    this.readModel = new RecsReadModel(kv, DEFAULT_POLICY, log);
    // Profiles of the partitions this hub owns come from their owner's memory (fresh once applied), others from KV.
    const profiles: CustomerProfileRepository = {
      get: async (customerId) => this.states.get(partitionOf(customerId, config.partitions))?.cachedProfile(customerId) ?? (await this.readModel.get(customerId)),
      put: () => this.readModel.put(),
    };
    this.useCases = new RecommendationsUseCases({ profiles, itemStats: this.readModel, catalogue: this.catalogue, clock: { now: () => Date.now() } });
    this.recommendationCache = new RecommendationCache((id, limit) => this.useCases.getRecommendations(id, limit), { maxAgeMs: config.cacheMaxAgeMs, maxCustomers: 100_000 });
    this.readModel.onProfileChange((customerId) => this.recommendationCache.invalidate(customerId));
  }

  /** A customer's list, from the cache while it is current (see recommendation-cache.ts). */
  recommend(customerId: string, limit: number): ReturnType<RecommendationsUseCases['getRecommendations']> {
    return this.recommendationCache.get(customerId, limit);
  }

  /** `questdb`: where the enriched rows go (table shop_interactions, created here); none: no rows. */
  static async start(
    nc: NatsConnection,
    js: JetStreamClient,
    jsm: JetStreamManager,
    config: RecommendationsConfig,
    log: Logger,
    questdb?: QuestDbTarget & { rest: Pick<QuestDbRest, 'exec'> },
  ): Promise<RecommendationsService> {
    if (questdb && config.applyEvents) await ensureShopInteractionsTable(questdb.rest, log);
    const [buckets, catalogue] = await Promise.all([openBuckets(nc, js, jsm, config.replicas, log), openCatalogue(nc, config, log)]);
    const service = new RecommendationsService(js, jsm, config, buckets, log, questdb, catalogue);
    await service.readModel.start();
    if (config.applyEvents) {
      const checkpoints = new CheckpointStore(nc, RECS_BUCKETS.checkpoints, config.replicas);
      service.leases = new KvLeaseManager(
        nc,
        { workerId: config.workerId, partitions: config.partitions, bucket: RECS_BUCKETS.leases, replicas: config.replicas, leaseTtlMs: config.leaseTtlMs },
        { onAcquire: (partition) => service.take(partition, checkpoints), onRelease: (partition) => service.give(partition) },
        log,
      );
      await service.leases.start();
    }
    log.info({ workerId: config.workerId, applyEvents: config.applyEvents, products: service.catalogue.size() }, 'recommendations running');
    return service;
  }

  private async take(partition: number, checkpoints: CheckpointStore): Promise<void> {
    const state = new PartitionState(this.kv.writers, this.catalogue, this.counters, this.questdb, (customerId) => this.recommendationCache.invalidate(customerId));
    const feed = new PartitionFeed(
      partition,
      state,
      checkpoints,
      {
        consumerPrefix: 'recs',
        flushIntervalMs: this.config.flushIntervalMs,
        backlogFlushIntervalMs: this.config.backlogFlushIntervalMs,
        backlogThresholdMessages: this.config.backlogThresholdMessages,
        ackWaitMs: this.config.ackWaitMs,
        maxAckPending: this.config.maxAckPending,
        inactiveThresholdMs: this.config.inactiveThresholdMs,
      },
      {
        js: this.js,
        jsm: this.jsm,
        workerId: this.config.workerId,
        log: this.log,
        holdsLease: () => this.leases?.holds(partition) ?? false,
        // Given up as lost: the lease manager calls onRelease (which stops the feed without a last flush).
        onFenced: (p) => this.leases?.abandon(p, 'its feed was fenced'),
      },
    );
    this.feeds.set(partition, feed);
    try {
      await feed.start();
    } catch (error) {
      this.feeds.delete(partition);
      throw error;
    }
    this.states.set(partition, state);
  }

  private async give(partition: number): Promise<void> {
    const feed = this.feeds.get(partition);
    if (!feed) return;
    this.states.delete(partition);
    await feed.stop();
    this.feeds.delete(partition);
  }

  status(): RecommendationsStatus {
    return {
      workerId: this.config.workerId,
      owned: [...this.feeds.keys()].sort((a, b) => a - b),
      catalogueProducts: this.catalogue.size(),
      readModel: this.readModel.stats(),
      cache: { customers: this.recommendationCache.size(), hits: this.recommendationCache.hits, misses: this.recommendationCache.misses },
      counters: { ...this.counters },
      partitions: [...this.feeds.values()].map((f) => ({ ...f.stats })),
    };
  }

  /** Gives every partition up (last flush and checkpoint each), then stops the watches. */
  async stop(): Promise<void> {
    await this.leases?.stop();
    for (const partition of [...this.feeds.keys()]) await this.give(partition);
    this.readModel.stop();
    this.catalogue.stop();
  }
}

async function openBuckets(nc: NatsConnection, js: JetStreamClient, jsm: JetStreamManager, replicas: number, log: Logger) {
  const [profiles, items] = await Promise.all([openRecsBucket(nc, RECS_BUCKETS.profiles, replicas), openRecsBucket(nc, RECS_BUCKETS.items, replicas)]);
  const [profilesAtomic, itemsAtomic] = await Promise.all([enableAtomicBatches(jsm, RECS_BUCKETS.profiles, log), enableAtomicBatches(jsm, RECS_BUCKETS.items, log)]);
  const writers = {
    profiles: { js, jsm, kv: profiles, bucket: RECS_BUCKETS.profiles, atomic: profilesAtomic },
    items: { js, jsm, kv: items, bucket: RECS_BUCKETS.items, atomic: itemsAtomic },
  };
  return { profiles, items, writers };
}

/**
 * The product catalogue on its own (for the rules' enrichment, catalogue-enricher.ts): the file of
 * `recommendations.catalogueFile` when set, and the watched KV bucket recs-catalogue. Resolves once both are loaded.
 */
export async function openCatalogue(nc: NatsConnection, config: Pick<RecommendationsConfig, 'catalogueFile' | 'replicas'>, log: Logger): Promise<CatalogueStore> {
  const catalogue = new CatalogueStore(await openRecsBucket(nc, RECS_BUCKETS.catalogue, config.replicas), log);
  if (config.catalogueFile) log.info({ file: config.catalogueFile, products: catalogue.loadFile(config.catalogueFile) }, 'recommendations: catalogue file loaded');
  await catalogue.start();
  return catalogue;
}
