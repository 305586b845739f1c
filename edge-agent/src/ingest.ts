/**
 * The one path every source uses: validate each event, then commit the accepted ones to the outbox and the
 * refused ones to the dead-letter table in a single durable transaction, and only then resolve, so that the
 * source acknowledges its client after the commit (PUBACK, HTTP 2xx).
 *
 * Group commit: submissions that arrive in the same event-loop turn share one transaction, and the transactions
 * written while one fdatasync runs share the next one (the sync runs off the event loop, see SqliteOutbox).
 */
import { encodeEvent, partitionOf, type WireEvent } from '../../shared/wire.js';
import type { PreAggregation } from './aggregation/pre-aggregation.js';
import type { Logger } from '../../shared/logger.js';
import type { DeadLetter, Outbox, OutboxEvent } from './buffer/outbox.js';
import { packRecords } from './buffer/outbox-records.js';
import { EdgeError, EdgeErrorCode, OutboxFullError } from './errors.js';
import type { EventContext, EventValidator, Rejection } from './validation/event-validator.js';

/** One item a source hands over: a parsed JSON value, or a piece the source already refused (bad JSON, too large). */
export type IngestItem = { value: unknown; raw?: Uint8Array } | { refused: Rejection; raw: Uint8Array };

export interface IngestRejection extends Rejection {
  /** Position of the event in the submission (array index or NDJSON line index). */
  index: number;
}

export interface IngestResult {
  accepted: number;
  rejected: IngestRejection[];
}

export interface IngestCounters {
  accepted: number;
  rejected: number;
  refusedFull: number;
  commits: number;
}

export interface IngestSource {
  /** Source kind, e.g. `mqtt`. */
  source: string;
  /** Where it came from: topic, route, file. */
  origin?: string;
}

/** Pre-aggregation and a way to run several outbox appends as one transaction. */
export interface AggregationStage {
  pre: PreAggregation;
  runInTransaction(work: () => void): void;
  /** How often idle devices' windows are checked, ms. */
  idleCheckMs: number;
}

interface Pending {
  events: OutboxEvent[];
  aggregateInputs: WireEvent[];
  deadLetters: DeadLetter[];
  result: IngestResult;
  resolve: (result: IngestResult) => void;
  reject: (error: Error) => void;
}

export class IngestPipeline {
  readonly counters: IngestCounters = { accepted: 0, rejected: 0, refusedFull: 0, commits: 0 };
  private pending: Pending[] = [];
  private scheduled = false;
  /** Group commits written but waiting for their fdatasync. */
  private syncing = 0;
  private closed = false;
  private readonly committedListeners: Array<() => void> = [];
  private readonly idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly validator: EventValidator,
    private readonly outbox: Outbox,
    private readonly partitions: number,
    private readonly log: Logger,
    private readonly nowUs: () => number = () => Date.now() * 1000,
    private readonly aggregation?: AggregationStage,
  ) {
    if (aggregation) {
      this.idleTimer = setInterval(() => this.emitIdleWindows(), aggregation.idleCheckMs);
      this.idleTimer.unref();
    }
  }

  /** Pre-aggregation counters, when pre-aggregation is configured. */
  aggregationStats(): { lateEvents: number; windowsEmitted: number; openWindows: number } | undefined {
    const pre = this.aggregation?.pre;
    return pre && { lateEvents: pre.lateEvents, windowsEmitted: pre.windowsEmitted, openWindows: pre.openWindows() };
  }

  /** Called after each commit that added events (the publisher listens to start a batch). */
  onCommitted(listener: () => void): void {
    this.committedListeners.push(listener);
  }

  /**
   * Validates and durably stores `items`. Resolves after the commit with per-event results; rejects (nothing
   * stored) with OutboxFullError when the outbox is full under the `reject` policy, or when shutting down.
   */
  submit(items: IngestItem[], context: Omit<EventContext, 'ingestTimeUs'> & IngestSource): Promise<IngestResult> {
    if (this.closed) return Promise.reject(new EdgeError(EdgeErrorCode.SHUTTING_DOWN, 'agent is shutting down'));
    const eventContext: EventContext = { ...context, ingestTimeUs: this.nowUs() };
    const events: OutboxEvent[] = [];
    const aggregateInputs: WireEvent[] = [];
    const deadLetters: DeadLetter[] = [];
    const result: IngestResult = { accepted: 0, rejected: [] };
    for (let index = 0; index < items.length; index++) {
      const item = items[index]!;
      let rejection: Rejection;
      if ('refused' in item) {
        rejection = item.refused;
      } else {
        const validation = this.validator.validate(item.value, eventContext);
        if (validation.ok) {
          const mode = this.aggregation?.pre.modeOf(validation.event.type) ?? 'raw';
          if (mode !== 'raw') aggregateInputs.push(validation.event);
          if (mode !== 'aggregate') events.push({ partition: partitionOf(validation.event.key, this.partitions), data: encodeEvent(validation.event) });
          result.accepted++;
          continue;
        }
        rejection = validation.rejection;
      }
      result.rejected.push({ index, ...rejection });
      deadLetters.push({
        source: context.source,
        code: rejection.code,
        reason: rejection.field ? `${rejection.reason} (field ${rejection.field})` : rejection.reason,
        payload: 'refused' in item ? item.raw : (item.raw ?? Buffer.from(JSON.stringify(item.value) ?? 'undefined')),
        ...(context.origin ? { origin: context.origin } : {}),
      });
    }
    return new Promise((resolve, reject) => {
      this.pending.push({ events, aggregateInputs, deadLetters, result, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.commit());
      }
    });
  }

  /** Waits for pending commits and refuses new submissions. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    while (this.pending.length > 0 || this.scheduled || this.syncing > 0) await new Promise((r) => setImmediate(r));
  }

  private commit(): void {
    this.scheduled = false;
    const group = this.pending;
    this.pending = [];
    if (group.length === 0) return;
    const committed: Pending[] = [];
    try {
      this.append(group.flatMap((p) => p.events), group.flatMap((p) => p.deadLetters), group.flatMap((p) => p.aggregateInputs));
      this.counters.commits++;
      committed.push(...group);
    } catch (error) {
      if (!(error instanceof OutboxFullError) || group.length === 1) {
        for (const p of group) this.failed(p, error as Error);
      } else {
        // The group does not fit as a whole: commit submission by submission so the ones that fit still go in.
        for (const p of group) {
          try {
            this.append(p.events, p.deadLetters, p.aggregateInputs);
            this.counters.commits++;
            committed.push(p);
          } catch (single) {
            this.failed(p, single as Error);
          }
        }
      }
    }
    if (committed.length === 0) return;
    const addedEvents = committed.some((p) => p.events.length > 0 || p.aggregateInputs.length > 0);
    const acknowledge = () => {
      for (const p of committed) this.settled(p);
      if (addedEvents) for (const listener of this.committedListeners) listener();
    };
    if (!this.outbox.syncBeforeAck) {
      acknowledge();
      return;
    }
    // The fdatasync runs off the event loop; the next group commits meanwhile and shares the next sync.
    this.syncing++;
    this.outbox
      .durable()
      .then(acknowledge, (error: Error) => {
        this.log.error({ err: error }, 'syncing the outbox failed; not acknowledging');
        for (const p of committed) this.failed(p, error);
      })
      .finally(() => this.syncing--);
  }

  /**
   * Appends events and dead letters; with pre-aggregation, the window update and the results it emits commit in
   * the same transaction, so the state after a crash covers exactly the acknowledged events.
   */
  private append(events: OutboxEvent[], deadLetters: DeadLetter[], aggregateInputs: WireEvent[]): void {
    const stage = this.aggregation;
    events = packRecords(events);
    if (!stage || aggregateInputs.length === 0) {
      this.outbox.append(events, deadLetters);
      return;
    }
    let applied = false;
    try {
      stage.runInTransaction(() => {
        this.outbox.append(events, deadLetters);
        applied = true;
        const output = stage.pre.apply(aggregateInputs, Math.floor(this.nowUs() / 1000));
        this.outbox.append(packRecords(output.events), output.deadLetters);
      });
    } catch (error) {
      // The transaction rolled back but the windows in memory already took the events: re-read them from disk.
      if (applied) stage.pre.reload();
      throw error;
    }
  }

  private emitIdleWindows(): void {
    const stage = this.aggregation!;
    if (stage.pre.openWindows() === 0) return;
    let emitted = 0;
    try {
      stage.runInTransaction(() => {
        const output = stage.pre.flushIdle(Math.floor(this.nowUs() / 1000));
        this.outbox.append(output.events, output.deadLetters);
        emitted = output.events.length;
      });
    } catch (error) {
      stage.pre.reload();
      if (!(error instanceof OutboxFullError)) this.log.error({ err: error }, 'emitting idle windows failed');
      return;
    }
    if (emitted > 0) for (const listener of this.committedListeners) listener();
  }

  private settled(p: Pending): void {
    this.counters.accepted += p.result.accepted;
    this.counters.rejected += p.result.rejected.length;
    p.resolve(p.result);
  }

  private failed(p: Pending, error: Error): void {
    if (error instanceof OutboxFullError) this.counters.refusedFull += p.events.length;
    else this.log.error({ err: error }, 'outbox commit failed');
    p.reject(error);
  }
}
