/**
 * Feeds one EVENTS partition, in stream order, into a state that writes itself idempotently, while this worker holds
 * the partition's lease (KvLeaseManager, bucket of its own). The same takeover as the analytics' PartitionProcessor:
 *
 *   1. Load the partition's checkpoint ({ seq, generation }) and save it back with generation g+1: a compare-and-swap
 *      that fails if another worker got there first (the fence).
 *   2. Open the consumer of generation g+1 from seq+1 (consumer/generation-consumer.ts, the same as the analytics).
 *   3. Each message's batch goes to `target.apply` with its stream sequence. Every `flushIntervalMs`, at the next
 *      batch boundary: `target.flush()` (every record it writes carries, per partition, the last stream position
 *      applied to it), then the checkpoint (CAS), then the ack of the last message the flush covers.
 *
 * While `backlogThresholdMessages` or more wait behind the one applied (a backlog), flushes come every
 * `backlogFlushIntervalMs` instead.
 *
 * Pipelined: `flush()` captures what it writes before it returns, so batches go on being applied while its writes
 * are in flight (they go into the next flush). One flush at a time; a flush that takes longer than the interval is
 * followed at once by the next, which then covers more batches (and writes each changed record once for all of
 * them): under a backlog the writes per event fall as the flushes grow. How far applying may run ahead of the last
 * completed flush is bounded by the consumer's max_ack_pending.
 *
 * Exactly once: after a crash the next owner replays from the checkpoint, and the target skips, per record, the
 * positions at or below the record's own mark, so records written after the checkpoint are not counted again and the
 * others are. A delivery gap (deliveries lost on a cut connection) gives the partition up, as in the analytics.
 */
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../../../shared/logger.js';
import { decodeBatch, type EventBatch } from '../../../../shared/wire.js';
import { isRevisionConflict, openGenerationConsumer } from '../../consumer/generation-consumer.js';
import { errorMessage, HubError, HubErrorCode } from '../../errors.js';

export interface PartitionFeedTarget {
  /** Loads what the partition's state needs (called once, before the first batch). */
  open(partition: number): Promise<void>;
  /** Applies one batch at stream sequence `seq` (may prefetch records; called one at a time, in order). */
  apply(batch: EventBatch, seq: number): Promise<void>;
  /**
   * Captures, before it returns, every record changed since the previous flush (serialised: later batches may
   * change the records while the writes are in flight), then writes them; rejects when a write failed (what it
   * captured is written again by the next flush). Called only between batches, and never while a flush is pending.
   * `final`: the partition is being given up; everything must be written.
   */
  flush(final: boolean): Promise<void>;
  /**
   * Records a flush left for later (the category boards, written at most once a second) wait to be written: the
   * timer's flush then runs even without new messages, or a shop's last board change would wait for its next event.
   */
  hasDeferredWrites?(): boolean;
  /** Drops the partition's state from memory (it was given up). */
  close(): void;
}

export interface PartitionFeedSettings {
  consumerPrefix: string;
  flushIntervalMs: number;
  /**
   * The interval while messages wait behind the one just applied (a backlog: after a takeover, a restart or a
   * burst). Freshness cannot be had then anyway, and a longer flush writes each record it changed once for more
   * events: a hot item's statistics change with almost every batch.
   */
  backlogFlushIntervalMs: number;
  /** Messages waiting behind the one applied from which the partition counts as behind (a live feed has a few). */
  backlogThresholdMessages: number;
  ackWaitMs: number;
  maxAckPending: number;
  inactiveThresholdMs: number;
}

interface Checkpoint {
  seq: number;
  generation: number;
  owner: string;
  savedAt: number;
}

export class CheckpointStore {
  private kv: Promise<KV> | undefined;
  constructor(
    private readonly nc: NatsConnection,
    private readonly bucket: string,
    private readonly replicas: number,
  ) {}

  private open(): Promise<KV> {
    this.kv ??= new Kvm(this.nc).create(this.bucket, { replicas: this.replicas, history: 1 });
    return this.kv;
  }

  async load(partition: number): Promise<{ checkpoint: Checkpoint | undefined; revision: number }> {
    const entry = await (await this.open()).get(`p${partition}`);
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return { checkpoint: undefined, revision: entry?.revision ?? 0 };
    return { checkpoint: entry.json<Checkpoint>(), revision: entry.revision };
  }

  /** CAS on `revision`; throws PARTITION_FENCED when another worker saved meanwhile. */
  async save(partition: number, checkpoint: Checkpoint, revision: number): Promise<number> {
    const kv = await this.open();
    const value = JSON.stringify(checkpoint);
    try {
      return revision === 0 ? await kv.create(`p${partition}`, value) : await kv.update(`p${partition}`, value, revision);
    } catch (error) {
      if (isRevisionConflict(error)) throw new HubError(HubErrorCode.PARTITION_FENCED, `partition ${partition}: another worker saved its checkpoint`, { cause: error });
      throw error;
    }
  }
}

export interface PartitionFeedStats {
  partition: number;
  generation: number;
  streamSeq: number;
  batches: number;
  events: number;
  flushes: number;
  flushFailures: number;
  /** Where the partition's time went, ms since it was taken: waiting for messages, applying them, flushing. */
  waitMs: number;
  applyMs: number;
  flushMs: number;
}

export class PartitionFeed {
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private revision = 0;
  private generation = 0;
  private seq = 0;
  private checkpointedSeq = 0;
  private lastDelivery = 0;
  /** The last message applied in full (acked at the next checkpoint, which covers it). */
  private lastMessage: JsMsg | undefined;
  /** The flush in flight (at most one). */
  private flushing: Promise<void> | undefined;
  /** The interval elapsed (or the feed is stopping): flush at the next batch boundary with no flush in flight. */
  private flushDue = false;
  private lastFlushAt = 0;
  /** The batch being applied: a flush starts only between batches (see flushWhenDue). */
  private applying: Promise<void> | undefined;
  private stopping = false;
  private fenced = false;
  readonly stats: PartitionFeedStats;

  constructor(
    readonly partition: number,
    private readonly target: PartitionFeedTarget,
    private readonly checkpoints: CheckpointStore,
    private readonly settings: PartitionFeedSettings,
    private readonly deps: { js: JetStreamClient; jsm: JetStreamManager; workerId: string; log: Logger; holdsLease: () => boolean; onFenced: (partition: number) => void },
  ) {
    this.stats = { partition, generation: 0, streamSeq: 0, batches: 0, events: 0, flushes: 0, flushFailures: 0, waitMs: 0, applyMs: 0, flushMs: 0 };
  }

  async start(): Promise<void> {
    const { jsm, js, log } = this.deps;
    const loaded = await this.checkpoints.load(this.partition);
    this.seq = loaded.checkpoint?.seq ?? 0;
    this.checkpointedSeq = this.seq;
    this.generation = (loaded.checkpoint?.generation ?? 0) + 1;
    this.stats.generation = this.generation;
    this.stats.streamSeq = this.seq;
    this.revision = await this.checkpoints.save(this.partition, this.checkpoint(), loaded.revision);
    await this.target.open(this.partition);
    this.messages = await openGenerationConsumer(
      js,
      jsm,
      {
        prefix: this.settings.consumerPrefix,
        partition: this.partition,
        generation: this.generation,
        coveredSeq: this.seq,
        description: `recommendations: profiles and item statistics of partition ${this.partition}; acked up to the last checkpoint`,
        ackWaitMs: this.settings.ackWaitMs,
        maxAckPending: this.settings.maxAckPending,
        inactiveThresholdMs: this.settings.inactiveThresholdMs,
        maxMessages: 64,
      },
      log,
    );
    log.info({ partition: this.partition, generation: this.generation, fromSeq: this.seq + 1 }, 'recommendations: partition taken');
    this.loop = this.run().catch((error: unknown) => log.error({ err: error, partition: this.partition }, 'recommendations: partition loop failed'));
    this.timer = setInterval(() => {
      this.flushDue = true;
      this.flushWhenDue();
    }, this.settings.flushIntervalMs);
    this.timer.unref();
  }

  /** Last flush and checkpoint (unless fenced), then stops consuming; the consumer stays for the next owner. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.messages?.stop();
    await this.loop;
    await this.flushing;
    if (!this.fenced) {
      this.flushDue = true;
      this.flushWhenDue(true);
      await this.flushing;
    }
    this.target.close();
  }

  stillOwner(): boolean {
    if (this.fenced) return false;
    if (this.deps.holdsLease()) return true;
    this.fence('its lease is overdue');
    return false;
  }

  private fence(why: string): void {
    if (this.fenced) return;
    this.fenced = true;
    this.deps.log.warn({ partition: this.partition, why }, 'recommendations: partition fenced; the next owner replays from the last checkpoint');
    this.deps.onFenced(this.partition);
  }

  private async run(): Promise<void> {
    let waitStart = performance.now();
    for await (const message of this.messages!) {
      this.stats.waitMs += performance.now() - waitStart;
      if (this.stopping || this.fenced) break;
      const delivery = message.info.deliverySequence;
      if (this.lastDelivery > 0 && delivery > this.lastDelivery + 1) {
        this.fence(`deliveries ${this.lastDelivery + 1}-${delivery - 1} never arrived`);
        break;
      }
      if (delivery > this.lastDelivery) this.lastDelivery = delivery;
      const seq = message.info.streamSequence;
      if (seq <= this.seq) continue; // a redelivery of what the state covers
      let batch: EventBatch;
      try {
        batch = decodeBatch(message.data);
      } catch (error) {
        this.deps.log.warn({ partition: this.partition, seq, err: errorMessage(error) }, 'recommendations: undecodable message skipped');
        this.seq = seq;
        this.lastMessage = message;
        continue;
      }
      const applyStart = performance.now();
      this.applying = this.target.apply(batch, seq);
      try {
        await this.applying;
      } finally {
        this.applying = undefined;
        this.stats.applyMs += performance.now() - applyStart;
      }
      // Only a message applied in full may be acked: AckAll lets the server drop everything up to it.
      this.seq = seq;
      this.lastMessage = message;
      this.stats.batches++;
      this.stats.events += batch.events.length;
      this.flushWhenDue();
      waitStart = performance.now();
    }
  }

  /**
   * Starts a flush if one is due, none is in flight and no batch is being applied (a profile written with an event
   * whose item updates are still unwritten would, after a crash, mark the event applied while the items never get
   * it). Called by the timer, after each batch, and when a flush ends.
   */
  private flushWhenDue(final = false): void {
    if (!this.flushDue || this.flushing || this.applying || this.fenced) return;
    if (this.seq === this.checkpointedSeq && !final && !this.target.hasDeferredWrites?.()) return;
    const behind = (this.lastMessage?.info.pending ?? 0) >= this.settings.backlogThresholdMessages;
    if (!final && behind && performance.now() - this.lastFlushAt < this.settings.backlogFlushIntervalMs) return;
    if (!this.stillOwner()) return;
    this.lastFlushAt = performance.now();
    this.flushDue = false;
    const seq = this.seq;
    const last = this.lastMessage;
    const flushStart = performance.now();
    const written = this.target.flush(final); // captures now, at this batch boundary
    this.flushing = (async () => {
      try {
        await written;
        if (!this.stillOwner()) return;
        if (seq > this.checkpointedSeq) {
          this.revision = await this.checkpoints.save(this.partition, { ...this.checkpoint(), seq }, this.revision);
          this.checkpointedSeq = seq;
        }
        last?.ack();
        this.stats.flushes++;
        this.stats.streamSeq = seq;
      } catch (error) {
        this.stats.flushFailures++;
        this.flushDue = true; // what it captured is written again by the next flush
        this.deps.log.warn({ partition: this.partition, err: errorMessage(error) }, 'recommendations: flush failed; nothing acked, retrying');
        if (error instanceof HubError && error.code === HubErrorCode.PARTITION_FENCED) this.fence(errorMessage(error));
        else await new Promise((resolve) => setTimeout(resolve, this.settings.flushIntervalMs)); // not in a tight loop
      }
    })().finally(() => {
      this.stats.flushMs += performance.now() - flushStart;
      this.flushing = undefined;
      if (!this.stopping) this.flushWhenDue();
    });
  }

  private checkpoint(): Checkpoint {
    return { seq: this.seq, generation: this.generation, owner: this.deps.workerId, savedAt: Date.now() };
  }
}
