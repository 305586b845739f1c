/**
 * Runs the rules over one EVENTS partition with exactly-once effects, while this worker holds the partition's lease.
 *
 * Taking over (start):
 *   1. Load the partition's snapshot (operator states + the stream sequence S they cover) and save it back at once
 *      with generation g+1: a compare-and-swap that fails if another worker got there first (the fence).
 *   2. Create the durable consumer `<stateBucket>-p<N>-g<g+1>` on `events.*.<N>` starting at S+1 (AckAll), then
 *      delete the older generations. JetStream keeps every message after S meanwhile: EVENTS has interest
 *      retention and the old generation's consumer never acked past S. A new consumer starts delivering at once,
 *      so a takeover does not wait for an ack timeout.
 * Running:
 *   - Each message's batch goes through the OperatorSet; window results and alerts go to the analytics sink's
 *     buffer, late events to a list for the DLQ. A message at or below the state's sequence is skipped (replay).
 *   - Every `checkpointIntervalMs` (and when `maxPendingOutputs` is reached) the loop pauses for a checkpoint:
 *     flush the sink (QuestDB, idempotent upserts), publish the late events to the DLQ stream and the alerts to the
 *     ALERTS stream (both deduplicated by message id), save the snapshot
 *     (CAS), and only then ack the last message (AckAll covers everything before it). A failed step leaves the
 *     messages unacked and the snapshot unchanged, and the checkpoint is retried; nothing is counted twice because
 *     after a crash the next owner restores the last snapshot and skips what it covers, and the QuestDB rows of
 *     anything re-emitted are upserts of the same keys.
 * Stopping (lease released): a last checkpoint, then the consumer stays for the next owner to replace.
 * Fenced (the snapshot's CAS failed, the lease was lost, or it is overdue after a pause longer than it allows): no
 * more outputs, flushes, snapshots or acks, and the rows it did not write are dropped from the shared sink. QuestDB
 * cannot check a fencing token, and an upsert keeps the last write: stale rows written after the next owner's newer
 * revisions would replace them for good. So every write first asks `stillOwner()` (the lease is checked by time, not
 * by the timers that may run only after ours once a paused process resumes), and so does the sink right before each
 * request.
 */
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import { openGenerationConsumer } from '../consumer/generation-consumer.js';
import type { Logger } from '../../../shared/logger.js';
import { decodeBatch, EVENTS_STREAM, type EventBatch } from '../../../shared/wire.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import { processFaults, type FaultInjector } from '../fault-injection.js';
import type { Alert, LateEvent, OperatorOutput, QualityMinute, Rule, WatermarkSettings, WindowResult } from '../operators/index.js';
import type { DeadLetter } from '../sinks/dead-letter-sink.js';
import type { SnapshotStore } from './kv-snapshot-store.js';
import { OperatorSet } from './operator-set.js';

export interface AnalyticsOutputSink {
  /** Buffers the outputs of `partition`'s processor; the rows remember the partition (discard, write guard). */
  write(outputs: Array<WindowResult | Alert | QualityMinute>, partition: number): void;
  /** Writes everything written so far; throws when QuestDB did not confirm it. */
  flush(): Promise<void>;
  /** Drops the rows of `partition` not yet written: its lease was lost, the next owner replays them. */
  discard(partition: number): number;
  /** Right before each request: rows of a partition for which `guard` says false are dropped, not sent. */
  setWriteGuard(guard: (partition: number) => boolean): void;
}

export interface LateEventSink {
  publish(letters: readonly DeadLetter[]): Promise<void>;
}

export interface AlertStream {
  publish(alerts: readonly Alert[]): Promise<void>;
}

export interface PartitionProcessorSettings {
  checkpointIntervalMs: number;
  /** Between checkpoints, write outputs out this often (they are idempotent; only the ack waits for a snapshot). */
  outputFlushIntervalMs: number;
  /** Behind = at least this many more messages wait on the server (a backlog, not the few of live traffic). */
  backlogThresholdMessages: number;
  /** Checkpoint early when this many outputs wait for the next flush (bounds memory). */
  maxPendingOutputs: number;
  ackWaitMs: number;
  /** Messages a consumer may have delivered and not acked (its ack covers them all at the next checkpoint). */
  maxAckPending: number;
  /**
   * A consumer nobody reads for this long is deleted by the server, so an abandoned one (analytics turned off,
   * partitions renumbered) cannot hold EVENTS messages forever under interest retention.
   */
  inactiveThresholdMs: number;
  /** Consumer names start with it (one per analytics deployment, from its state bucket). */
  consumerPrefix: string;
  /**
   * A partition without a snapshot starts at the first message EVENTS holds (`all`), or after the last one at the
   * time of the first claim (`new`: the claim's snapshot then covers everything before, so a takeover resumes there).
   */
  freshStart: 'all' | 'new';
  watermark: WatermarkSettings;
}

export interface PartitionProcessorDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: SnapshotStore;
  sink: AnalyticsOutputSink;
  late: LateEventSink;
  alerts: AlertStream;
  workerId: string;
  log: Logger;
  now: () => number;
  /** Adds fields to each batch's events before the operators see it (the catalogue enrichment); none: nothing added. */
  enrich?: (batch: EventBatch) => unknown;
  /**
   * Whether this worker holds the partition's lease and its last renewal is recent enough that no other worker can
   * have taken it (KvLeaseManager.holds): checked before every write that another owner's writes must not follow.
   */
  holdsLease: () => boolean;
  /** Test-only kills between a write and its ack (FAULT_HUB_KILL_AFTER_WRITE). @default from the environment */
  faults?: FaultInjector;
}

export interface PartitionStats {
  partition: number;
  generation: number;
  streamSeq: number;
  watermark: number | null;
  events: number;
  windowResults: number;
  /** Rows of data_quality emitted (first emissions and corrections). */
  qualityRows: number;
  alerts: number;
  lateEvents: number;
  checkpoints: number;
  checkpointFailures: number;
  lastCheckpointAt: number | undefined;
}

/** Longest stretch of synchronous operator work (all partitions together) before the event loop runs I/O. */
const YIELD_EVERY_MS = 10;
const sharedSlice = { start: performance.now() };

export class PartitionProcessor {
  private set!: OperatorSet;
  private revision = 0;
  private generation = 0;
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private fenced = false;
  /** Consumer sequence of the last delivery received (0: none yet). */
  private lastDelivery = 0;
  private lastMessage: JsMsg | undefined;
  private lastCheckpointSeq = 0;
  private pendingOutputs = 0;
  private lateEvents: DeadLetter[] = [];
  private alerts: Alert[] = [];
  private checkpointing: Promise<void> | undefined;
  private outputFlush: Promise<void> | undefined;
  private lastOutputFlushAt = 0;
  private lastFailedCheckpointAt = 0;
  readonly stats: PartitionStats;

  constructor(
    readonly partition: number,
    private rules: readonly Rule[],
    private readonly settings: PartitionProcessorSettings,
    private readonly deps: PartitionProcessorDeps,
    /** Called once if another worker fenced this one off the partition. */
    private readonly onFenced: (partition: number) => void = () => {},
  ) {
    this.stats = {
      partition,
      generation: 0,
      streamSeq: 0,
      watermark: null,
      events: 0,
      windowResults: 0,
      qualityRows: 0,
      alerts: 0,
      lateEvents: 0,
      checkpoints: 0,
      checkpointFailures: 0,
      lastCheckpointAt: undefined,
    };
  }

  async start(): Promise<void> {
    const { store, jsm, js, log } = this.deps;
    const loaded = await store.load(this.partition);
    this.set = new OperatorSet(this.rules, this.settings.watermark);
    if (loaded.state?.operators) {
      const fresh = this.set.restore(loaded.state.operators);
      if (fresh.length > 0) log.info({ partition: this.partition, rules: fresh }, 'rules changed since the snapshot start empty');
    }
    if (!loaded.state && this.settings.freshStart === 'new') this.set.streamSeq = (await jsm.streams.info(EVENTS_STREAM)).state.last_seq;
    this.generation = (loaded.state?.generation ?? 0) + 1;
    this.stats.generation = this.generation;
    // The claim: fails with PARTITION_FENCED if another worker saved meanwhile.
    this.revision = await store.save(this.partition, this.state(), loaded.revision);
    this.lastCheckpointSeq = this.set.streamSeq;

    // Few batches buffered per partition: eight partitions' deliveries share the connection with the raw path.
    this.messages = await openGenerationConsumer(
      js,
      jsm,
      {
        prefix: this.settings.consumerPrefix,
        partition: this.partition,
        generation: this.generation,
        coveredSeq: this.set.streamSeq,
        description: `hub analytics: rules over partition ${this.partition}; acked up to the last operator snapshot`,
        ackWaitMs: this.settings.ackWaitMs,
        maxAckPending: this.settings.maxAckPending,
        inactiveThresholdMs: this.settings.inactiveThresholdMs,
        maxMessages: 32,
      },
      log,
    );
    log.info({ partition: this.partition, generation: this.generation, fromSeq: this.set.streamSeq + 1, rules: this.set.rules() }, 'partition taken');
    this.loop = this.run().catch((error: unknown) => log.error({ err: error, partition: this.partition }, 'partition loop failed'));
    this.timer = setInterval(() => void this.tick(), Math.min(1000, this.settings.checkpointIntervalMs, this.settings.outputFlushIntervalMs));
    this.timer.unref();
  }

  /** New rule set (from the KV rule store): applied between two messages. */
  setRules(rules: readonly Rule[]): void {
    this.rules = rules;
    if (!this.set) return;
    const change = this.set.setRules(rules);
    if (change.added.length + change.changed.length + change.removed.length > 0) this.deps.log.info({ partition: this.partition, ...change }, 'rules updated');
  }

  /**
   * Whether this worker may still write, save and ack for the partition: not fenced, and the lease not overdue.
   * After a pause longer than the lease (GC, a frozen VM, SIGSTOP) another worker may own the partition and have
   * written newer revisions of our pending results; the timers that would notice (lease watchdog, renewals) run in
   * any order with ours after the pause, so every write asks first. Sticky: once false, the processor is fenced.
   */
  stillOwner(): boolean {
    if (this.fenced) return false;
    if (this.deps.holdsLease()) return true;
    this.fence('its lease is overdue (this worker was paused or cut off longer than the lease allows)');
    return false;
  }

  /**
   * Stops writing for good: no more outputs, flushes, snapshots or acks (the next owner replays from the last
   * snapshot). Unless the caller already knows (`notify` false), tells the service once (onFenced), which gives the
   * partition up.
   */
  fence(why: string, notify = true): void {
    if (this.fenced) return;
    this.fenced = true;
    this.deps.log.warn({ partition: this.partition, why }, 'partition fenced: stopping without writing or acking; the next owner replays from the last snapshot');
    if (notify) this.onFenced(this.partition);
  }

  /** Last checkpoint (unless fenced), then stops consuming. The consumer stays; the next owner replaces it. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.messages?.stop();
    await this.loop;
    if (!this.fenced) {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          await this.checkpoint();
          break;
        } catch (error) {
          this.deps.log.warn({ partition: this.partition, err: errorMessage(error) }, 'final checkpoint failed; the next owner replays from the last one');
          if (this.fenced) break;
        }
      }
    }
  }

  private async run(): Promise<void> {
    for await (const message of this.messages!) {
      if (this.stopping) break;
      // Buffered messages arrive through microtasks only: without a macrotask turn now and then, the raw path,
      // sockets and timers would wait for the analytics to drain a whole backlog. The slice is shared by all the
      // partitions of this process: eight loops with a slice each would leave the raw path one turn in nine.
      if (performance.now() - sharedSlice.start >= YIELD_EVERY_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        sharedSlice.start = performance.now();
      }
      if (this.checkpointing) await this.checkpointing.catch(() => undefined);
      // Every delivery to this consumer has the next consumer sequence. A gap means deliveries were lost on the way
      // (a connection cut while they travelled); applying what follows would move the stream position past them,
      // and they would be skipped as replays when redelivered. Give the partition up instead: whoever takes it next,
      // this worker included, replays from the last snapshot, the lost messages with it.
      const delivery = message.info.deliverySequence;
      if (this.lastDelivery > 0 && delivery > this.lastDelivery + 1) {
        this.fence(`deliveries ${this.lastDelivery + 1}-${delivery - 1} of its consumer never arrived (lost on the way); replaying from the last snapshot`);
        break;
      }
      if (delivery > this.lastDelivery) this.lastDelivery = delivery;
      let batch: EventBatch;
      try {
        batch = decodeBatch(message.data);
      } catch (error) {
        // The raw path dead-letters undecodable messages; here they carry nothing to count. Covered by the next ack.
        this.deps.log.warn({ partition: this.partition, seq: message.info.streamSequence, err: errorMessage(error) }, 'undecodable message skipped by analytics');
        this.lastMessage = message;
        continue;
      }
      this.deps.enrich?.(batch);
      const outputs = this.set.apply(batch, message.info.streamSequence, this.deps.now());
      this.lastMessage = message;
      if (!outputs) continue;
      this.stats.events += batch.events.length;
      this.route(outputs, batch, message.info.streamSequence);
      if (this.pendingOutputs >= this.settings.maxPendingOutputs && !(await this.checkpointSafely())) {
        // QuestDB or KV is failing: stop reading (JetStream stops delivering at max_ack_pending anyway) and retry.
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  private route(outputs: OperatorOutput[], batch: Pick<EventBatch, 'agent' | 'partition' | 'events'>, seq: number): void {
    if (this.fenced) return;
    const results: Array<WindowResult | Alert | QualityMinute> = [];
    const late: LateEvent[] = [];
    for (const output of outputs) {
      if (output.type === 'late_event') {
        late.push(output);
        continue;
      }
      if (output.type === 'alert') {
        this.stats.alerts++;
        this.alerts.push(output);
      } else if (output.type === 'window_result') this.stats.windowResults++;
      else this.stats.qualityRows++;
      results.push(output);
    }
    if (results.length > 0) {
      this.deps.sink.write(results, this.partition);
      this.pendingOutputs += results.length;
    }
    if (late.length > 0) {
      const letters = lateLetters(late, batch, seq);
      this.lateEvents.push(...letters);
      this.stats.lateEvents += letters.length;
      // Late letters wait for the checkpoint too: they count against the same bound.
      this.pendingOutputs += letters.length;
    }
  }

  /**
   * Every tick: let idle agents' time pass (fires windows and absence rules), checkpoint when due, and in between
   * write the outputs out every `outputFlushIntervalMs`.
   */
  private async tick(): Promise<void> {
    if (this.stopping || this.checkpointing) return;
    const now = this.deps.now();
    const outputs = this.set.advance(now);
    if (outputs.length > 0) this.route(outputs, { agent: 'hub', partition: this.partition, events: [] }, this.set.streamSeq);
    // Due at multiples of the interval on the clock, so the partitions of a worker checkpoint together and their
    // sink flushes share one QuestDB transaction (the sink shares a queued flush) instead of one each.
    const interval = this.settings.checkpointIntervalMs;
    const due =
      Math.floor(now / interval) > Math.floor((this.stats.lastCheckpointAt ?? 0) / interval) &&
      // After a failed checkpoint (QuestDB or NATS down), the next attempt waits a second, not a tick.
      now - this.lastFailedCheckpointAt >= 1000;
    const hasOutputs = this.pendingOutputs > 0 || this.lateEvents.length > 0 || this.alerts.length > 0;
    if (due && (this.set.streamSeq > this.lastCheckpointSeq || hasOutputs)) {
      await this.checkpointSafely();
      return;
    }
    // Not while draining a backlog: there every small QuestDB transaction costs the server an out-of-order merge,
    // and the results of a backlog are late anyway.
    const behind = (this.lastMessage?.info.pending ?? 0) >= this.settings.backlogThresholdMessages;
    if (hasOutputs && !behind && now - this.lastOutputFlushAt >= this.settings.outputFlushIntervalMs) this.flushOutputs();
  }

  /**
   * Writes the outputs so far without a snapshot or an ack, while the message loop goes on: QuestDB rows are upserts
   * and the DLQ and ALERTS publishes carry message ids, so a replay after a crash (from the last snapshot) repeats
   * them harmlessly. What fails stays for the checkpoint, which waits for this and writes everything before it acks.
   */
  private flushOutputs(): void {
    if (this.outputFlush || this.checkpointing || !this.stillOwner()) return;
    this.lastOutputFlushAt = this.deps.now();
    const late = this.lateEvents;
    const alerts = this.alerts;
    const written = this.pendingOutputs;
    this.lateEvents = [];
    this.alerts = [];
    this.outputFlush = (async () => {
      try {
        await this.deps.sink.flush();
        if (late.length > 0) await this.deps.late.publish(late);
        if (alerts.length > 0) await this.deps.alerts.publish(alerts);
        this.pendingOutputs = Math.max(0, this.pendingOutputs - written);
      } catch (error) {
        // Back in front, in order; publishing them again is harmless (same message ids).
        this.lateEvents = [...late, ...this.lateEvents];
        this.alerts = [...alerts, ...this.alerts];
        this.deps.log.debug({ partition: this.partition, err: errorMessage(error) }, 'output flush failed; the checkpoint retries');
      }
    })().finally(() => {
      this.outputFlush = undefined;
    });
  }

  private async checkpointSafely(): Promise<boolean> {
    try {
      await this.checkpoint();
      return true;
    } catch (error) {
      this.stats.checkpointFailures++;
      this.lastFailedCheckpointAt = this.deps.now();
      this.deps.log.warn({ partition: this.partition, err: errorMessage(error) }, 'checkpoint failed; nothing acked, retrying');
      if (error instanceof HubError && error.code === HubErrorCode.PARTITION_FENCED) this.fence(errorMessage(error));
      return false;
    }
  }

  /** Flush outputs, dead-letter late events, save the snapshot, then ack. The message loop waits meanwhile. */
  private checkpoint(): Promise<void> {
    if (this.checkpointing) return this.checkpointing;
    const run = async () => {
      this.assertOwner();
      // Fault tests only: a kill after the write is worth testing when the checkpoint has messages to ack.
      const faults = this.set.streamSeq > this.lastCheckpointSeq ? (this.deps.faults ?? processFaults) : undefined;
      const at = () => ({ partition: this.partition, streamSeq: this.set.streamSeq, lastCheckpointSeq: this.lastCheckpointSeq });
      // An output flush in progress goes first: its alerts and late events are not in the lists below.
      if (this.outputFlush) await this.outputFlush;
      await this.deps.sink.flush();
      // The sink dropped our rows if the lease went overdue meanwhile: then nothing after this may happen.
      this.assertOwner();
      this.pendingOutputs = 0;
      faults?.afterWrite('checkpoint-written', at());
      if (this.lateEvents.length > 0) {
        await this.deps.late.publish(this.lateEvents);
        this.lateEvents = [];
      }
      if (this.alerts.length > 0) {
        await this.deps.alerts.publish(this.alerts);
        this.alerts = [];
      }
      this.assertOwner();
      this.revision = await this.deps.store.save(this.partition, this.state(), this.revision);
      faults?.afterWrite('checkpoint-saved', at());
      this.lastCheckpointSeq = this.set.streamSeq;
      this.lastMessage?.ack();
      this.stats.checkpoints++;
      this.stats.lastCheckpointAt = this.deps.now();
      this.stats.streamSeq = this.set.streamSeq;
      this.stats.watermark = this.set.currentWatermark();
    };
    this.checkpointing = run().finally(() => {
      this.checkpointing = undefined;
    });
    return this.checkpointing;
  }

  private assertOwner(): void {
    if (!this.stillOwner()) throw new HubError(HubErrorCode.PARTITION_FENCED, `partition ${this.partition}: this worker no longer owns it`);
  }

  private state() {
    return { generation: this.generation, owner: this.deps.workerId, savedAt: this.deps.now(), operators: this.set.snapshot() };
  }

}

/**
 * One dead letter per late event, naming every rule it was too late for: an agent that drains hours of old events
 * after a long outage makes each of them late for most rules, and one letter per rule would multiply the DLQ
 * traffic by the number of rules.
 */
export function lateLetters(late: readonly LateEvent[], batch: Pick<EventBatch, 'agent' | 'partition' | 'events'>, seq: number): DeadLetter[] {
  const byEvent = new Map<LateEvent['event'], LateEvent[]>();
  for (const output of late) {
    const list = byEvent.get(output.event);
    if (list) list.push(output);
    else byEvent.set(output.event, [output]);
  }
  // Positions looked up once per batch, not by a scan of the batch per late event.
  const positions = new Map<unknown, number>(batch.events.map((event, i) => [event, i]));
  const letters: DeadLetter[] = [];
  for (const [event, outputs] of byEvent) {
    const rules = outputs.map((output) => output.rule).sort();
    const watermark = Math.max(...outputs.map((output) => output.watermark));
    letters.push({
      reason: 'late_event',
      detail:
        `event ${event.id} at ${new Date(Math.floor(event.ts / 1000)).toISOString()} is behind the watermark ` +
        `${new Date(watermark).toISOString()} plus the allowed lateness of rule${rules.length > 1 ? 's' : ''} ${rules.join(', ')}`,
      agent: batch.agent,
      partition: batch.partition,
      seq,
      index: positions.get(event) ?? 0,
      event,
      rules,
    });
  }
  return letters;
}
