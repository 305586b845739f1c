/**
 * The hub's loop: batches from the source are written into the sink's buffer; the sink is flushed when `maxRows`
 * rows are buffered or the oldest is `flushIntervalMs` old; only then are the messages whose rows were in that flush
 * acked (acks flow backward: JetStream forgets a message only once QuestDB has its rows).
 *
 * When a flush fails the rows stay buffered, nothing is acked, and the worker stops reading (the source then stops
 * pulling), retries with exponential backoff, and resumes by itself. If the outage outlasts `holdOnFailureMs`
 * (below the consumer's ack_wait), the held messages are nak'ed and their rows dropped, so memory stays bounded
 * and JetStream redelivers them later; QuestDB's dedup keys make any replay harmless.
 *
 * An event the sink cannot write (a schema version this process does not map yet, an event that cannot become a row)
 * does not hold up the others: its message stays held, unacked, while UnmappedEvents looks the version up in the
 * schema registry (then writes the event) or stores the event in the DLQ stream; the message is acked with the first
 * flush after that. If the lookup or the DLQ publish fails or takes longer than `unresolvedTimeoutMs`, the message is
 * nak'ed and redelivered. So no message is acked before each of its events is in QuestDB or in the DLQ.
 *
 * Later stages (windows, CEP) fit between source and sink; whatever they hold must gate the acks the same way.
 */
import type { Logger } from '../../shared/logger.js';
import type { BatchSource, Inbound } from './consumer/consumer.js';
import { errorMessage } from './errors.js';
import { processFaults, type FaultInjector } from './fault-injection.js';
import type { HubMetrics } from './metrics.js';
import type { Sink, WriteResult } from './sinks/sink.js';
import { DEAD_LETTER_CODES } from './sinks/dead-letter-sink.js';
import { SettleAborted, UnmappedEvents } from './unmapped-events.js';

export interface HubWorkerSettings {
  /** Flush as soon as this many rows are buffered. */
  maxRows: number;
  /** Flush when the oldest buffered row is this old. */
  flushIntervalMs: number;
  /** The same while the consumer is behind (a backlog): fewer, larger QuestDB transactions. */
  backlogFlushIntervalMs: number;
  /**
   * Behind = the server has at least this many more messages for the consumer. Live traffic almost always has a few
   * waiting, so "any" made a live hub flush once a second (measured: rows queryable 0.7 s later than needed).
   */
  backlogThresholdMessages: number;
  /** Stop reading while this many rows are buffered or in flight. */
  maxBufferedRows: number;
  retryInitialMs: number;
  retryMaxMs: number;
  /** How long to hold unflushed messages while flushes fail before nak'ing them. */
  holdOnFailureMs: number;
  /** On stop, how long to keep retrying the last flush before nak'ing what is left. */
  shutdownTimeoutMs: number;
  /** Stop reading while this many messages wait for a schema lookup or a DLQ publish. @default 1000 */
  maxUnresolvedMessages?: number;
  /** Nak a message whose schema lookup or DLQ publish has not finished after this long. @default 10000 */
  unresolvedTimeoutMs?: number;
}

const DEFAULT_MAX_UNRESOLVED_MESSAGES = 1000;
const DEFAULT_UNRESOLVED_TIMEOUT_MS = 10_000;

export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export type WorkerState = 'starting' | 'running' | 'failing' | 'stopping' | 'stopped';

export interface WorkerStatus {
  state: WorkerState;
  /** Result of the last flush attempt; undefined before the first one. */
  lastFlush: { ok: boolean; at: number; rows: number; error?: string } | undefined;
  /** Since when flushes fail (epoch ms). */
  failingSince: number | undefined;
  bufferedRows: number;
  heldMessages: number;
  /** Held messages waiting for a schema lookup or a DLQ publish. */
  unresolvedMessages?: number;
}

export interface WorkerStats {
  messages: number;
  events: number;
  rowsWritten: number;
  flushes: number;
  flushErrors: number;
  decodeErrors: number;
  unknownSchema: number;
  invalidEvents: number;
  invalidColumns: number;
  /** Events written after their schema version was learned from the registry. */
  writtenAfterLookup: number;
  /** Events stored in the DLQ stream (confirmed). */
  deadLettered: number;
  /** Messages nak'ed because a schema lookup or a DLQ publish failed or timed out. */
  unresolvedFailures: number;
  acked: number;
  naked: number;
}

/** A message whose skipped events are being looked up or dead-lettered. */
interface Unresolved {
  abort: AbortController;
  timer: NodeJS.Timeout;
  done: Promise<void>;
}

type HeldMessage = Extract<Inbound, { type: 'batch' }>;

/** Longest stretch of synchronous work (decoding, encoding) before the loop lets the event loop run I/O. */
const YIELD_EVERY_MS = 10;

/** Logs a repeated condition at most once per interval, with the count since the last line. */
class Throttle {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(private readonly intervalMs: number) {}
  /** Returns the number of suppressed occurrences to report, or -1 to stay silent. */
  hit(key: string, now: number): number {
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return -1;
    }
    const suppressed = entry?.suppressed ?? 0;
    this.last.set(key, { at: now, suppressed: 0 });
    return suppressed;
  }
}

export class HubWorker {
  readonly stats: WorkerStats = {
    messages: 0,
    events: 0,
    rowsWritten: 0,
    flushes: 0,
    flushErrors: 0,
    decodeErrors: 0,
    unknownSchema: 0,
    invalidEvents: 0,
    invalidColumns: 0,
    writtenAfterLookup: 0,
    deadLettered: 0,
    unresolvedFailures: 0,
    acked: 0,
    naked: 0,
  };

  /** Messages whose rows are in the sink and not yet confirmed, oldest first. */
  private held: HeldMessage[] = [];
  /** Held messages not to be acked yet: their skipped events are not settled (a subset of `held`). */
  private readonly unresolved = new Map<HeldMessage, Unresolved>();
  /** When the oldest row not yet in a flush was written. */
  private oldestAt: number | undefined;
  private flushing: Promise<boolean> | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failingSince: number | undefined;
  private retryAttempt = 0;
  private lastFlush: WorkerStatus['lastFlush'];
  private roomWaiters: Array<() => void> = [];
  private state: WorkerState = 'starting';
  /** The last message said the server had at least backlogThresholdMessages more for this consumer. */
  private behind = false;
  private stopping = false;
  private readonly throttle = new Throttle(10_000);
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly metrics: HubMetrics;
  private readonly unmapped: UnmappedEvents;
  private readonly maxUnresolved: number;
  private readonly unresolvedTimeoutMs: number;
  private readonly faults: FaultInjector;

  constructor(
    private readonly source: BatchSource,
    private readonly sink: Sink,
    private readonly settings: HubWorkerSettings,
    deps: { metrics: HubMetrics; log: Logger; clock?: Clock; unmapped?: UnmappedEvents; faults?: FaultInjector },
  ) {
    this.metrics = deps.metrics;
    this.faults = deps.faults ?? processFaults;
    this.log = deps.log;
    this.clock = deps.clock ?? systemClock;
    this.unmapped = deps.unmapped ?? NO_RECOVERY;
    this.maxUnresolved = settings.maxUnresolvedMessages ?? DEFAULT_MAX_UNRESOLVED_MESSAGES;
    this.unresolvedTimeoutMs = settings.unresolvedTimeoutMs ?? DEFAULT_UNRESOLVED_TIMEOUT_MS;
  }

  /** Reads the source until it ends (after `stop()`), then flushes and settles what it still holds. */
  async run(): Promise<void> {
    this.state = 'running';
    let sliceStart = performance.now();
    try {
      for await (const item of this.source) {
        if (item.type === 'poison') {
          this.onPoison(item);
        } else {
          this.accept(item);
          if (this.mustPause()) await this.waitForRoom();
          // Test knob (FAULT_HUB_MESSAGE_DELAY_MS): a worker of fixed capacity; 0 in production.
          if (this.faults.messageDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.faults.messageDelayMs));
        }
        // Queued messages come through microtasks only; without a macrotask turn now and then, sockets are not
        // read (NATS flags a slow consumer and drops the connection), and flush responses, acks and timers wait.
        if (performance.now() - sliceStart >= YIELD_EVERY_MS) {
          await new Promise((resolve) => setImmediate(resolve));
          sliceStart = performance.now();
        }
      }
    } finally {
      await this.finish();
    }
  }

  /** Stops reading; `run()` then settles what is held and resolves. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.state === 'running' || this.state === 'failing') this.state = 'stopping';
    this.clearTimers();
    this.wake(true);
    await this.source.stop();
  }

  /**
   * Flushes every row buffered now and acks the messages they came from. Resolves false when the sink failed (the
   * messages stay held and a retry is scheduled). Waits for a flush already in flight first.
   */
  async flush(): Promise<boolean> {
    while (this.flushing) await this.flushing;
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    if (this.held.length === 0 && this.sink.bufferedRows === 0) return true;
    const attempt = this.flushOnce();
    this.flushing = attempt;
    try {
      return await attempt;
    } finally {
      this.flushing = undefined;
      this.updateGauges();
      this.wake();
      this.schedule();
    }
  }

  status(): WorkerStatus {
    return {
      state: this.state,
      lastFlush: this.lastFlush,
      failingSince: this.failingSince,
      bufferedRows: this.sink.bufferedRows,
      heldMessages: this.held.length,
      unresolvedMessages: this.unresolved.size,
    };
  }

  private accept(message: HeldMessage): void {
    this.behind = message.pending >= this.settings.backlogThresholdMessages;
    const events = message.batch.events.length;
    this.stats.messages++;
    this.stats.events += events;
    this.metrics.messagesConsumed.inc();
    this.metrics.eventsConsumed.inc(events);
    const result = this.sink.write(message.batch);
    if (result.skipped.length > 0 || result.invalidColumns.length > 0) this.reportSkips(message, result);
    this.held.push(message);
    this.oldestAt ??= this.clock.now();
    if (result.skipped.length > 0) this.settle(message, result);
    this.schedule();
  }

  /** Looks up or dead-letters the skipped events of a held message, which is not acked until that is done. */
  private settle(message: HeldMessage, result: WriteResult): void {
    const abort = new AbortController();
    const timer = setTimeout(
      () => this.abandon(message, new Error(`schema lookup or DLQ publish not done after ${this.unresolvedTimeoutMs} ms`)),
      this.unresolvedTimeoutMs,
    );
    const input = { batch: message.batch, seq: message.seq, skipped: result.skipped, skippedAt: result.skippedAt };
    const entry: Unresolved = { abort, timer, done: Promise.resolve() };
    this.unresolved.set(message, entry);
    this.updateGauges();
    entry.done = this.unmapped.settle(input, (batch) => this.writeLate(message, batch), abort.signal).then(
      (outcome) => {
        if (this.unresolved.get(message) !== entry) return; // given back meanwhile
        clearTimeout(timer);
        this.unresolved.delete(message);
        this.stats.writtenAfterLookup += outcome.written;
        if (outcome.written > 0) this.metrics.eventsLearnedLate.inc(outcome.written);
        this.stats.deadLettered += outcome.deadLettered.length;
        for (const letter of outcome.deadLettered) this.metrics.eventsDeadLettered.inc({ reason: letter.reason });
        this.reportDeadLetters(message, outcome.deadLettered);
        // Acked with the next flush (which also carries the rows written just now).
        this.oldestAt ??= this.clock.now();
        this.updateGauges();
        this.wake();
        this.schedule();
      },
      (error: unknown) => {
        if (this.unresolved.get(message) !== entry || error instanceof SettleAborted) return;
        this.abandon(message, error);
      },
    );
  }

  /** Writes the events of a message whose schema version was just learned. */
  private writeLate(message: HeldMessage, batch: HeldMessage['batch']): WriteResult {
    const result = this.sink.write(batch);
    if (result.invalidColumns.length > 0) this.reportSkips(message, { ...result, skipped: [] });
    this.oldestAt ??= this.clock.now();
    return result;
  }

  /** Gives one unresolved message back to JetStream (its rows already written are harmless: dedup keys). */
  private abandon(message: HeldMessage, error: unknown): void {
    const entry = this.unresolved.get(message);
    if (!entry) return;
    this.cancel(message, entry);
    const index = this.held.indexOf(message);
    if (index >= 0) this.held.splice(index, 1);
    const delayMs = this.settings.retryMaxMs;
    message.nak(delayMs);
    this.stats.naked++;
    this.stats.unresolvedFailures++;
    this.metrics.messagesNaked.inc();
    this.metrics.deadLetterFailures.inc();
    const suppressed = this.throttle.hit('unresolved-failed', this.clock.now());
    if (suppressed >= 0) {
      this.log.warn(
        { err: errorMessage(error), agent: message.batch.agent, seq: message.seq, delayMs, suppressed },
        'events without a mapped schema could be neither written nor dead-lettered; message given back for redelivery',
      );
    }
    this.updateGauges();
    this.wake();
    this.schedule();
  }

  private cancel(message: HeldMessage, entry: Unresolved): void {
    clearTimeout(entry.timer);
    entry.abort.abort();
    this.unresolved.delete(message);
  }

  /** Starts a flush when the buffer is full, else arms the interval timer. No-op while a flush or retry is pending. */
  private schedule(): void {
    if (this.stopping || this.flushing || this.failingSince !== undefined) return;
    // Nothing to ack or write: only unresolved messages are held, and each schedules a flush once it is settled.
    if (this.held.length === this.unresolved.size && this.sink.bufferedRows === 0) return;
    if (this.sink.bufferedRows >= this.settings.maxRows) {
      void this.flush();
      return;
    }
    if (this.flushTimer) return;
    // Behind (the server had more messages for us): each QuestDB transaction costs the server an out-of-order merge
    // with dedup, so fewer and larger ones let it keep up; the rows of a backlog are late anyway.
    const interval = this.behind ? this.settings.backlogFlushIntervalMs : this.settings.flushIntervalMs;
    const due = (this.oldestAt ?? this.clock.now()) + interval;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, Math.max(0, due - this.clock.now()));
  }

  private async flushOnce(): Promise<boolean> {
    // Unresolved messages stay held: what settling them writes comes after this flush's rows, into the next one.
    let messages = this.held;
    this.held = [];
    if (this.unresolved.size > 0) {
      this.held = messages.filter((m) => this.unresolved.has(m));
      messages = messages.filter((m) => !this.unresolved.has(m));
    }
    const oldestAt = this.oldestAt;
    this.oldestAt = undefined;
    const started = this.clock.now();
    let result;
    try {
      result = await this.sink.flush();
    } catch (error) {
      // Nothing acked: the messages and their rows stay, ahead of anything read meanwhile.
      this.held = messages.concat(this.held);
      this.oldestAt = oldestAt ?? this.oldestAt;
      this.onFlushFailed(error, started);
      return false;
    }
    const now = this.clock.now();
    // Fault tests only (FAULT_HUB_KILL_AFTER_WRITE): die with the rows in QuestDB and the messages unacked.
    if (messages.length > 0) {
      this.faults.afterWrite('raw', { messages: messages.length, rows: result.rows, firstSeq: messages[0]!.seq, lastSeq: messages[messages.length - 1]!.seq });
    }
    for (const message of messages) message.ack();
    this.stats.flushes++;
    this.stats.rowsWritten += result.rows;
    this.stats.acked += messages.length;
    this.metrics.flushes.inc({ result: 'ok' });
    this.metrics.flushDuration.observe((now - started) / 1000);
    if (result.rows > 0) this.metrics.flushRows.observe(result.rows);
    this.metrics.rowsWritten.inc(result.rows);
    this.metrics.messagesAcked.inc(messages.length);
    this.observeLatency(messages, now);
    this.lastFlush = { ok: true, at: now, rows: result.rows };
    if (this.failingSince !== undefined) this.recovered(now);
    return true;
  }

  private onFlushFailed(error: unknown, started: number): void {
    const now = this.clock.now();
    const message = errorMessage(error);
    this.stats.flushErrors++;
    this.metrics.flushes.inc({ result: 'error' });
    this.lastFlush = { ok: false, at: now, rows: 0, error: message };
    if (this.failingSince === undefined) {
      this.failingSince = started;
      if (!this.stopping) this.state = 'failing';
      this.metrics.sinkFailing.set(1);
      this.log.error({ err: message, bufferedRows: this.sink.bufferedRows, heldMessages: this.held.length }, 'flush failed; pausing consumption and retrying');
    } else {
      this.log.warn({ err: message, failingForMs: now - this.failingSince, attempt: this.retryAttempt }, 'flush retry failed');
    }
    if (this.stopping) return; // finish() drives the retries
    if (this.held.length > 0 && now - this.failingSince >= this.settings.holdOnFailureMs) {
      this.giveBack(`sink failing for ${now - this.failingSince} ms`, this.settings.retryMaxMs);
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopping || this.retryTimer) return;
    const delay = Math.min(this.settings.retryMaxMs, this.settings.retryInitialMs * 2 ** Math.min(this.retryAttempt, 30));
    this.retryAttempt++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.retry();
    }, delay);
  }

  private retry(): void {
    if (this.stopping) return;
    if (this.held.length > 0) {
      void this.flush();
      return;
    }
    // Nothing left to write (given back): resume once the store answers again.
    this.sink.probe().then(
      () => {
        if (this.failingSince !== undefined) this.recovered(this.clock.now());
        this.wake();
      },
      (error: unknown) => {
        this.log.warn({ err: errorMessage(error), failingForMs: this.clock.now() - (this.failingSince ?? 0) }, 'sink probe failed');
        this.scheduleRetry();
      },
    );
  }

  private recovered(now: number): void {
    this.log.info({ failedForMs: now - (this.failingSince ?? now), attempts: this.retryAttempt }, 'sink recovered; resuming consumption');
    this.failingSince = undefined;
    this.retryAttempt = 0;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (!this.stopping) this.state = 'running';
    this.metrics.sinkFailing.set(0);
  }

  /** Naks every held message and drops its rows: JetStream redelivers them after `delayMs`. */
  private giveBack(reason: string, delayMs: number): void {
    const messages = this.held;
    this.held = [];
    for (const [message, entry] of [...this.unresolved]) this.cancel(message, entry);
    this.oldestAt = undefined;
    const rows = this.sink.discard();
    for (const message of messages) message.nak(delayMs);
    this.stats.naked += messages.length;
    this.metrics.messagesNaked.inc(messages.length);
    this.updateGauges();
    this.log.warn({ messages: messages.length, rows, delayMs, reason }, 'gave unflushed messages back to JetStream');
  }

  private mustPause(): boolean {
    if (this.stopping) return false;
    return (
      this.failingSince !== undefined ||
      this.sink.bufferedRows >= this.settings.maxBufferedRows ||
      this.unresolved.size >= this.maxUnresolved
    );
  }

  private waitForRoom(): Promise<void> {
    this.updateGauges();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  private wake(force = false): void {
    if (this.roomWaiters.length === 0 || (!force && this.mustPause())) return;
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** After the source ended: flush what is held, retrying until shutdownTimeoutMs, then nak the rest. */
  private async finish(): Promise<void> {
    this.stopping = true;
    this.clearTimers();
    const deadline = this.clock.now() + this.settings.shutdownTimeoutMs;
    let delay = this.settings.retryInitialMs;
    const sleep = (ms: number, value: boolean): Promise<boolean> =>
      new Promise((resolve) => setTimeout(resolve, Math.max(0, ms), value));
    // Lookups and DLQ publishes in flight first, so that their messages are acked with the last flush.
    if (this.unresolved.size > 0) {
      const settling = Promise.allSettled([...this.unresolved.values()].map((entry) => entry.done)).then(() => true);
      await Promise.race([settling, sleep(deadline - this.clock.now(), false)]);
    }
    while (this.held.length > 0 || this.sink.bufferedRows > 0 || this.flushing) {
      // A flush that does not settle by the deadline is left behind; its messages are redelivered after ack_wait.
      if (await Promise.race([this.flush(), sleep(deadline - this.clock.now(), false)])) break;
      const left = deadline - this.clock.now();
      if (left <= 0) break;
      await sleep(Math.min(delay, left), false);
      delay = Math.min(delay * 2, this.settings.retryMaxMs);
    }
    if (this.held.length > 0 && !this.flushing) {
      this.giveBack(this.unresolved.size > 0 ? 'stopping before their events were looked up or dead-lettered' : 'stopping while the sink fails', 0);
    }
    this.clearTimers();
    this.state = 'stopped';
    this.updateGauges();
  }

  private clearTimers(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.flushTimer = undefined;
    this.retryTimer = undefined;
  }

  private onPoison(item: Extract<Inbound, { type: 'poison' }>): void {
    this.stats.messages++;
    this.stats.decodeErrors++;
    this.metrics.messagesConsumed.inc();
    this.metrics.decodeErrors.inc();
    this.log.error({ subject: item.subject, seq: item.seq, bytes: item.bytes, err: item.error }, 'undecodable message terminated');
  }

  private reportDeadLetters(message: HeldMessage, letters: UnmappedLetters): void {
    if (letters.length === 0) return;
    const now = this.clock.now();
    for (const letter of letters) {
      const event = letter.event as { type?: unknown; sv?: unknown; id?: unknown } | null;
      const type = event !== null && typeof event === 'object' ? `${String(event.type)}/v${String(event.sv)}` : 'not an object';
      const suppressed = this.throttle.hit(`dlq:${letter.reason}`, now);
      if (suppressed < 0) continue;
      this.log.warn(
        {
          code: DEAD_LETTER_CODES[letter.reason],
          reason: letter.reason,
          detail: letter.detail,
          event: type,
          eventId: event !== null && typeof event === 'object' ? event.id : undefined,
          agent: message.batch.agent,
          seq: message.seq,
          suppressed,
        },
        `event dead-lettered: ${letter.detail}`,
      );
    }
  }

  private reportSkips(message: HeldMessage, result: WriteResult): void {
    const now = this.clock.now();
    for (const skip of result.skipped) {
      if (skip.type === 'unknown_schema') {
        this.stats.unknownSchema++;
        this.metrics.eventsSkipped.inc({ reason: 'unknown_schema' });
        const suppressed = this.throttle.hit(`unknown:${skip.eventType}/v${skip.version}`, now);
        if (suppressed >= 0) {
          this.log.warn(
            { eventType: skip.eventType, version: skip.version, eventId: skip.id, agent: message.batch.agent, seq: message.seq, suppressed },
            'event of a type/version this hub does not map: looking it up in the schema registry',
          );
        }
      } else {
        this.stats.invalidEvents++;
        this.metrics.eventsSkipped.inc({ reason: 'invalid_event' });
        const suppressed = this.throttle.hit('invalid', now);
        if (suppressed >= 0) {
          this.log.warn({ eventId: skip.id, reason: skip.reason, agent: message.batch.agent, seq: message.seq, suppressed }, 'invalid event: not written, goes to the DLQ');
        }
      }
    }
    if (result.invalidColumns.length > 0) {
      this.stats.invalidColumns += result.invalidColumns.length;
      this.metrics.invalidColumns.inc(result.invalidColumns.length);
      for (const column of new Set(result.invalidColumns)) {
        const suppressed = this.throttle.hit(`column:${column}`, now);
        if (suppressed >= 0) this.log.warn({ column, agent: message.batch.agent, seq: message.seq, suppressed }, 'value does not fit its column; left unset');
      }
    }
  }

  /**
   * One observation per message, of its oldest event (the worst latency in it): the events of a message were
   * batched together at the edge and are confirmed together, and observing every event cost 6% of the raw path.
   */
  private observeLatency(messages: readonly HeldMessage[], nowMs: number): void {
    const nowUs = nowMs * 1000;
    const { eventLatency, ingestLatency } = this.metrics;
    for (const message of messages) {
      let oldestTs = Infinity;
      let oldestIts = Infinity;
      for (const event of message.batch.events) {
        if (typeof event?.ts === 'number' && event.ts < oldestTs) oldestTs = event.ts;
        if (typeof event?.its === 'number' && event.its < oldestIts) oldestIts = event.its;
      }
      if (oldestTs !== Infinity) eventLatency.observe(Math.max(0, nowUs - oldestTs) / 1e6);
      if (oldestIts !== Infinity) ingestLatency.observe(Math.max(0, nowUs - oldestIts) / 1e6);
    }
  }

  private updateGauges(): void {
    this.metrics.bufferedRows.set(this.sink.bufferedRows);
    this.metrics.heldMessages.set(this.held.length);
    this.metrics.unresolvedMessages.set(this.unresolved.size);
  }
}

type UnmappedLetters = Awaited<ReturnType<UnmappedEvents['settle']>>['deadLettered'];

/** Without a resolver and a DLQ nothing can be settled: such messages are given back, never acked. */
const NO_RECOVERY = new UnmappedEvents(
  { resolve: async (type, version) => ({ status: 'unknown', reason: `no schema ${type} v${version} (no schema registry configured)` }) },
  {
    publish: async () => {
      throw new Error('no DLQ configured');
    },
  },
);
