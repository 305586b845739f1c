/**
 * Forwards the outbox to JetStream.
 *
 * A range of consecutive outbox rows is claimed (recorded in the outbox) before it is sent, and cut into one
 * message per partition with the id `agent:first-last:partition`. A retry, even after a restart, re-cuts the same
 * range the same way, so JetStream's duplicate window drops what it already has; past that window, the event ids
 * reach the hub's QuestDB dedup keys. Rows are deleted only when every message of the range has its PubAck.
 *
 * Order: ranges are claimed in sequence order and published on one connection, so per-device order holds. When a
 * publish fails, nothing new is claimed: the ranges still in flight settle, then the failed ones are re-sent one at
 * a time, oldest first, until each is acknowledged; only then does pipelining resume and the backlog drain at full
 * speed. Ingest never waits for this: sources keep committing to the outbox meanwhile.
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

interface PendingRange {
  range: OutboxRange;
  rows: OutboxRow[];
}

export class JetStreamPublisher implements Publisher<JetStreamClient> {
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
  /** Ranges whose publish failed, to be re-sent in order before anything new is claimed. */
  private failed: PendingRange[] = [];
  private loop: Promise<void> | undefined;
  private js: JetStreamClient | undefined;

  constructor(
    private readonly outbox: Outbox,
    private readonly options: JetStreamPublisherOptions,
    private readonly log: Logger,
  ) {
    this.stats.connected = false;
  }

  start(js: JetStreamClient): void {
    this.js = js;
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
      this.failed.push({ range, rows: this.outbox.readRange(range) });
    }
    while (!this.stopping) {
      if (this.failed.length > 0) {
        await this.recover();
        continue;
      }
      if (this.inFlight.size >= this.options.maxInFlightRanges) {
        await Promise.race(this.inFlight);
        continue;
      }
      let rows = this.outbox.readAfter(this.cursor, this.options.maxBatchEvents, this.options.maxBatchBytes);
      if (rows.length === 0) {
        await this.idle();
        continue;
      }
      if (rows[rows.length - 1]!.seq === this.outbox.lastSeq() && this.options.lingerMs > 0 && this.inFlight.size > 0) {
        // Caught up with ingest and something is already on its way: waiting a moment makes the next batch
        // fuller at little latency cost. Never while a backlog remains: a busy event loop stretches the timer.
        await this.sleep(this.options.lingerMs);
        if (this.stopping) break;
        rows = this.outbox.readAfter(this.cursor, this.options.maxBatchEvents, this.options.maxBatchBytes);
      }
      const range = rangeOf(rows);
      this.outbox.claim(range);
      this.cursor = range.last;
      const sending = this.publishOnce({ range, rows }).then((ok) => {
        if (!ok) this.failed.push({ range, rows });
      });
      const tracked = sending.finally(() => {
        this.inFlight.delete(tracked);
        this.stats.rangesInFlight = this.inFlight.size;
      });
      this.inFlight.add(tracked);
      this.stats.rangesInFlight = this.inFlight.size;
    }
  }

  /** Lets in-flight ranges settle, then re-sends the failed ones one at a time, oldest first, until acknowledged. */
  private async recover(): Promise<void> {
    await Promise.all(this.inFlight);
    const pending = this.failed.sort((a, b) => a.range.first - b.range.first);
    this.failed = [];
    let delay = this.options.retryInitialMs;
    for (let i = 0; i < pending.length; ) {
      if (this.stopping) {
        // A range that could not be sent stays claimed in the outbox and goes first after a restart.
        return;
      }
      if (await this.publishOnce(pending[i]!)) {
        i++;
        delay = this.options.retryInitialMs;
      } else {
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.options.retryMaxMs);
      }
    }
  }

  /** One attempt to publish a whole range; on success its rows are deleted from the outbox. */
  private async publishOnce({ range, rows }: PendingRange): Promise<boolean> {
    const started = Date.now();
    try {
      // The claim and the rows under it must be on disk before any message id derived from them leaves; a failed
      // sync is retried like a failed publish.
      await this.outbox.durable();
      await this.publishRange(range, rows);
    } catch (error) {
      this.stats.publishErrors++;
      if (this.stats.connected) this.log.warn({ err: (error as Error).message, first: range.first, last: range.last }, 'publish failed; retrying in order with the same message ids');
      this.stats.connected = false;
      return false;
    }
    this.outbox.accept(range);
    this.stats.eventsPublished += range.events;
    this.stats.lastRangeLatencyMs = Date.now() - started;
    if (!this.stats.connected) this.log.info({ first: range.first }, 'publishing again');
    this.stats.connected = true;
    return true;
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
      const ack = await this.js!.publish(eventSubject(this.options.agentId, partition), data, {
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
  let events = 0;
  for (const row of rows) {
    bytes += row.data.byteLength;
    events += row.events;
  }
  return { first: rows[0]!.seq, last: rows[rows.length - 1]!.seq, events, bytes };
}
