/**
 * Forwards the outbox to JetStream.
 *
 * A range of consecutive outbox rows is claimed (recorded in the outbox) before it is sent, and cut into one
 * message per partition with the id `agent:first-last:partition`. A retry, even after a restart, re-cuts the same
 * range the same way, so JetStream's duplicate window drops what it already has; past that window, the event ids
 * reach the hub's QuestDB dedup keys. Rows are deleted only when every message of the range has its PubAck.
 *
 * Order: ranges are claimed in sequence order and published on one connection, so per-device order holds; when a
 * publish fails, nothing new is claimed and the failed ranges are retried oldest first.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { Logger } from '../../../shared/logger.js';
import { batchMessageId, encodeBatchFromEncoded, eventSubject } from '../../../shared/wire.js';
import type { Outbox, OutboxRange, OutboxRow } from '../buffer/outbox.js';
import type { Publisher, PublisherStats } from './publisher.js';

export interface JetStreamPublisherOptions {
  agentId: string;
  /** Most events in one range (one or more messages, one per partition). */
  maxBatchEvents: number;
  /** Approximate most bytes in one range. */
  maxBatchBytes: number;
  /** How long to wait for a fuller batch when fewer than maxBatchEvents are waiting. */
  lingerMs: number;
  /** Ranges published but not yet acknowledged (the bound on in-flight data). */
  maxInFlightRanges: number;
  publishTimeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
}

export class JetStreamPublisher implements Publisher {
  readonly stats: PublisherStats = {
    eventsPublished: 0,
    duplicateMessages: 0,
    messagesPublished: 0,
    publishErrors: 0,
    rangesInFlight: 0,
    lastRangeLatencyMs: 0,
    connected: true,
  };
  private cursor = 0;
  private stopping = false;
  private wake: (() => void) | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private failing = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly outbox: Outbox,
    private readonly js: JetStreamClient,
    private readonly options: JetStreamPublisherOptions,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.loop = this.run().catch((error: unknown) => this.log.fatal({ err: error }, 'publisher loop crashed'));
  }

  notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.notify();
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
    await Promise.race([Promise.all([this.loop, ...this.inFlight]).then(() => undefined), timeout]);
  }

  private async run(): Promise<void> {
    // Ranges claimed before a restart go first, cut exactly as before, so their message ids repeat.
    for (const range of this.outbox.claimed()) {
      this.cursor = Math.max(this.cursor, range.last);
      if (this.stopping) return;
      await this.publishUntilAcked(range, this.outbox.readRange(range));
    }
    while (!this.stopping) {
      if (this.inFlight.size >= this.options.maxInFlightRanges || this.failing) {
        await Promise.race([...this.inFlight, this.sleep(this.options.retryInitialMs)]);
        continue;
      }
      let rows = this.outbox.readAfter(this.cursor, this.options.maxBatchEvents, this.options.maxBatchBytes);
      if (rows.length === 0) {
        await this.idle();
        continue;
      }
      if (rows.length < this.options.maxBatchEvents && this.options.lingerMs > 0 && this.inFlight.size > 0) {
        // Something is already on its way: waiting a moment makes the next batch fuller at no latency cost.
        await this.sleep(this.options.lingerMs);
        if (this.stopping) break;
        rows = this.outbox.readAfter(this.cursor, this.options.maxBatchEvents, this.options.maxBatchBytes);
      }
      const range = rangeOf(rows);
      this.outbox.claim(range);
      this.cursor = range.last;
      const sending = this.publishUntilAcked(range, rows).finally(() => {
        this.inFlight.delete(sending);
        this.stats.rangesInFlight = this.inFlight.size;
      });
      this.inFlight.add(sending);
      this.stats.rangesInFlight = this.inFlight.size;
    }
  }

  private async publishUntilAcked(range: OutboxRange, rows: OutboxRow[]): Promise<void> {
    const started = Date.now();
    let delay = this.options.retryInitialMs;
    for (;;) {
      try {
        await this.publishRange(range, rows);
        this.outbox.accept(range);
        this.stats.eventsPublished += range.rows;
        this.stats.lastRangeLatencyMs = Date.now() - started;
        this.stats.connected = true;
        this.failing = false;
        return;
      } catch (error) {
        this.stats.publishErrors++;
        this.stats.connected = false;
        this.failing = true;
        this.log.warn({ err: (error as Error).message, first: range.first, last: range.last, retryInMs: delay }, 'publish failed; will retry with the same message ids');
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.options.retryMaxMs);
        // During shutdown, a range that cannot be sent stays claimed in the outbox and goes first after restart.
        if (this.stopping) return;
      }
    }
  }

  private async publishRange(range: OutboxRange, rows: OutboxRow[]): Promise<void> {
    const byPartition = new Map<number, Uint8Array[]>();
    for (const row of rows) {
      let list = byPartition.get(row.partition);
      if (!list) byPartition.set(row.partition, (list = []));
      list.push(row.data);
    }
    const acks = [...byPartition].map(async ([partition, events]) => {
      const data = encodeBatchFromEncoded(
        { v: 1, agent: this.options.agentId, partition, first: range.first, last: range.last },
        events,
      );
      const ack = await this.js.publish(eventSubject(this.options.agentId, partition), data, {
        msgID: batchMessageId(this.options.agentId, range.first, range.last, partition),
        timeout: this.options.publishTimeoutMs,
      });
      this.stats.messagesPublished++;
      if (ack.duplicate) this.stats.duplicateMessages++;
    });
    const results = await Promise.allSettled(acks);
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
  }

  private idle(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
    });
  }
}

function rangeOf(rows: OutboxRow[]): OutboxRange {
  let bytes = 0;
  for (const row of rows) bytes += row.data.byteLength;
  return { first: rows[0]!.seq, last: rows[rows.length - 1]!.seq, rows: rows.length, bytes };
}
