/**
 * The hub's analytics: rules from the KV rule store, run by one PartitionProcessor per partition this worker holds
 * a lease on. The lease manager decides which partitions those are (fair share among live workers); taking one
 * starts its processor (restore the snapshot, consume from the position it covers), giving one up stops it (last
 * checkpoint). A rule change reaches every running processor between two messages.
 *
 * Fencing of the QuestDB writes: the shared output sink asks, right before each request, whether each partition with
 * rows in it still belongs to this worker (its processor is running and not fenced, and its lease is not overdue). A
 * partition whose lease is lost, or overdue after a pause, gets no final checkpoint and its unwritten rows are
 * dropped: the next owner replays them from the last snapshot, and writing them could replace its newer revisions.
 */
import type { EventBatch } from '../../../shared/wire.js';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../../shared/logger.js';
import { errorMessage } from '../errors.js';
import type { Rule } from '../operators/index.js';
import { KvLeaseManager } from '../partitions/index.js';
import { KvRuleStore } from '../rules/index.js';
import type { HubConfig } from '../config.js';
import { KvSnapshotStore } from './kv-snapshot-store.js';
import { PartitionProcessor, type AlertStream, type AnalyticsOutputSink, type LateEventSink, type PartitionStats } from './partition-processor.js';

export interface AnalyticsStatus {
  workerId: string;
  owned: number[];
  liveWorkers: string[];
  rules: string[];
  partitions: PartitionStats[];
}

export class AnalyticsService {
  private readonly processors = new Map<number, PartitionProcessor>();
  private readonly leases: KvLeaseManager;
  private readonly rules: KvRuleStore;
  private readonly store: KvSnapshotStore;
  private current: Rule[] = [];

  constructor(
    nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly config: HubConfig['analytics'],
    private readonly sink: AnalyticsOutputSink,
    private readonly late: LateEventSink,
    private readonly alerts: AlertStream,
    private readonly log: Logger,
    /** See PartitionProcessorDeps.enrich. */
    private readonly enrich?: (batch: EventBatch) => unknown,
    /** Which of the bucket's rules this worker runs (quality.enabled=false leaves out the data-quality rules). */
    private readonly runs: (rule: Rule) => boolean = () => true,
  ) {
    this.store = new KvSnapshotStore(nc, { bucket: config.stateBucket, replicas: config.replicas });
    this.rules = new KvRuleStore(nc, { bucket: config.rulesBucket, replicas: config.replicas, log });
    this.leases = new KvLeaseManager(
      nc,
      { workerId: config.workerId, partitions: config.partitions, bucket: config.leasesBucket, replicas: config.replicas, leaseTtlMs: config.leaseTtlMs },
      { onAcquire: (partition) => this.take(partition), onRelease: (partition, reason) => this.give(partition, reason) },
      log,
    );
    // Stopping processors stay in the map until their final checkpoint is done, so that it may still write.
    sink.setWriteGuard((partition) => this.processors.get(partition)?.stillOwner() ?? false);
  }

  /** Loads the rules (and keeps watching them), then starts taking partitions. */
  async start(): Promise<void> {
    await this.rules.start((all) => {
      const rules = all.filter(this.runs);
      this.current = rules;
      for (const processor of this.processors.values()) processor.setRules(rules);
      this.log.info({ rules: rules.map((r) => r.name) }, 'analytics rules loaded');
    });
    this.current = this.rules.current().filter(this.runs);
    await this.leases.start();
  }

  /** Gives every partition up (last checkpoint each), so other workers take them over at once. */
  async stop(): Promise<void> {
    await this.leases.stop();
    await Promise.all([...this.processors.values()].map((p) => p.stop()));
    this.processors.clear();
    this.rules.stop();
  }

  status(): AnalyticsStatus {
    const leases = this.leases.status();
    return {
      workerId: leases.workerId,
      owned: leases.owned,
      liveWorkers: leases.liveWorkers,
      rules: this.current.map((r) => r.name),
      partitions: [...this.processors.values()].map((p) => ({ ...p.stats })).sort((a, b) => a.partition - b.partition),
    };
  }

  private async take(partition: number): Promise<void> {
    const processor = new PartitionProcessor(
      partition,
      this.current,
      {
        checkpointIntervalMs: this.config.checkpointIntervalMs,
        outputFlushIntervalMs: this.config.outputFlushIntervalMs,
        backlogThresholdMessages: this.config.backlogThresholdMessages,
        maxPendingOutputs: this.config.maxPendingOutputs,
        ackWaitMs: this.config.ackWaitMs,
        maxAckPending: this.config.maxAckPending,
        inactiveThresholdMs: this.config.inactiveThresholdMs,
        freshStart: this.config.freshStart,
        consumerPrefix: this.config.stateBucket,
        watermark: this.config.watermark,
      },
      {
        js: this.js,
        jsm: this.jsm,
        store: this.store,
        sink: this.sink,
        late: this.late,
        alerts: this.alerts,
        workerId: this.config.workerId,
        log: this.log,
        now: Date.now,
        ...(this.enrich ? { enrich: this.enrich } : {}),
        holdsLease: () => this.leases.holds(partition),
      },
      (fenced) => {
        // The lease may still be ours on the server (only overdue here): give it back, so the partition is not left
        // held and unprocessed; whoever takes it next, this worker included, replays from the last snapshot.
        this.leases.abandon(fenced, 'its processor was fenced');
        void this.give(fenced, 'lost');
      },
    );
    // In the map before it starts, so that the sink's write guard knows it from its first output on. A failure here
    // (the claim was fenced, JetStream unavailable) propagates: the lease manager does not count the partition as
    // owned and tries again later.
    this.processors.set(partition, processor);
    try {
      await processor.start();
    } catch (error) {
      if (this.processors.get(partition) === processor) this.processors.delete(partition);
      throw error;
    }
  }

  private async give(partition: number, reason: string): Promise<void> {
    const processor = this.processors.get(partition);
    if (!processor) return;
    if (reason === 'lost') {
      // Another worker may own it already: no final checkpoint, and what it has not written is dropped.
      processor.fence('its lease was lost', false);
      const dropped = this.sink.discard(partition);
      if (dropped > 0) this.log.warn({ partition, rows: dropped }, 'unwritten analytics rows of a lost partition dropped (the next owner replays them)');
    }
    try {
      await processor.stop();
      this.log.info({ partition, reason }, 'partition given up');
    } catch (error) {
      this.log.warn({ partition, reason, err: errorMessage(error) }, 'stopping a partition failed; the next owner replays from its last snapshot');
    } finally {
      if (this.processors.get(partition) === processor) this.processors.delete(partition);
    }
  }
}
