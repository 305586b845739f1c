/**
 * The agent's pre-aggregation stage: per event type, forward raw events, window results, or both. Runs inside the
 * outbox transaction of the events it consumes (see IngestPipeline), so window state, emitted results and the
 * device acknowledgement are one atomic step.
 */
import { encodeEvent, partitionOf, type WireEvent } from '../../../shared/wire.js';
import type { DeadLetter, OutboxEvent } from '../buffer/outbox.js';
import { EdgeErrorCode } from '../errors.js';
import type { SqliteWindowStore } from './sqlite-window-store.js';
import { TumblingAggregator, type AggregationRule, type WindowResult } from './tumbling-aggregator.js';

export type { AggregationRule };

export const AGGREGATE_TYPE = 'device.telemetry.aggregate';

export const aggregationConfigSchema = {
  type: 'array',
  default: [],
  description: 'Pre-aggregation per event type (event-time tumbling windows per device and metric). Types not listed are forwarded raw.',
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['type'],
    properties: {
      type: { type: 'string', description: 'Event type with device_id, metric and numeric value, e.g. device.telemetry.' },
      mode: { enum: ['raw', 'aggregate', 'both'], default: 'both', description: 'Forward raw events, window results, or both.' },
      windowMs: { type: 'integer', minimum: 1000, default: 10000, description: 'Tumbling window length.' },
      allowedLatenessMs: { type: 'integer', minimum: 0, default: 5000, description: 'How far behind a device\'s newest event its events may arrive and still count.' },
      idleMs: { type: 'integer', minimum: 1000, default: 30000, description: 'A device silent this long (processing time) has its open windows emitted.' },
    },
  },
} as const;

export interface AggregationOutput {
  events: OutboxEvent[];
  deadLetters: DeadLetter[];
}

export class PreAggregation {
  private readonly aggregators = new Map<string, TumblingAggregator>();
  /** Events that arrived after their window was emitted. */
  lateEvents = 0;
  windowsEmitted = 0;

  constructor(
    rules: AggregationRule[],
    private readonly store: SqliteWindowStore,
    private readonly agentId: string,
    private readonly partitions: number,
  ) {
    for (const rule of rules) if (rule.mode !== 'raw') this.aggregators.set(rule.type, new TumblingAggregator(rule));
    this.reload();
  }

  /** How events of `type` are forwarded. */
  modeOf(type: string): AggregationRule['mode'] {
    return this.aggregators.get(type)?.rule.mode ?? 'raw';
  }

  /** Re-reads state from the store (at start, and after a failed transaction left memory ahead of disk). */
  reload(): void {
    for (const [type, aggregator] of this.aggregators) {
      const fresh = new TumblingAggregator(aggregator.rule);
      const { windows, keys } = this.store.load(type);
      fresh.restore(windows, keys);
      this.aggregators.set(type, fresh);
    }
  }

  openWindows(): number {
    let n = 0;
    for (const aggregator of this.aggregators.values()) n += aggregator.openWindows();
    return n;
  }

  /** Adds events and emits the windows they close. Call inside the outbox transaction. */
  apply(events: WireEvent[], nowMs: number): AggregationOutput {
    const output: AggregationOutput = { events: [], deadLetters: [] };
    for (const event of events) {
      const aggregator = this.aggregators.get(event.type)!;
      const body = event.body;
      const accepted = aggregator.add({ device: event.key, metric: String(body.metric), ts: Math.floor(event.ts / 1000), value: Number(body.value) }, nowMs);
      if (!accepted) {
        this.lateEvents++;
        if (aggregator.rule.mode === 'aggregate') {
          // Not forwarded raw and too late for its window: keep it as a dead letter rather than lose it.
          output.deadLetters.push({
            source: event.src,
            code: EdgeErrorCode.LATE_EVENT,
            reason: `event time is more than allowedLatenessMs ${aggregator.rule.allowedLatenessMs} behind ${event.key}'s newest event; its window was already emitted`,
            payload: Buffer.from(JSON.stringify(body)),
          });
        }
      }
    }
    this.emit(nowMs, output);
    return output;
  }

  /** Emits windows of idle devices. Call inside the outbox transaction. */
  flushIdle(nowMs: number): AggregationOutput {
    const output: AggregationOutput = { events: [], deadLetters: [] };
    this.emit(nowMs, output);
    return output;
  }

  private emit(nowMs: number, output: AggregationOutput): void {
    for (const [type, aggregator] of this.aggregators) {
      for (const result of aggregator.emitReady(nowMs)) {
        output.events.push(this.toOutboxEvent(result, nowMs));
        this.windowsEmitted++;
      }
      this.store.save(type, aggregator.changes());
    }
  }

  private toOutboxEvent(result: WindowResult, nowMs: number): OutboxEvent {
    const id = `agg:${this.agentId}:${result.device}:${result.metric}:${result.windowMs}:${result.start}`;
    const event: WireEvent = {
      id,
      type: AGGREGATE_TYPE,
      sv: 1,
      key: result.device,
      ts: result.start * 1000,
      its: nowMs * 1000,
      src: 'aggregation',
      body: {
        type: AGGREGATE_TYPE,
        event_id: id,
        device_id: result.device,
        timestamp: result.start,
        metric: result.metric,
        window_ms: result.windowMs,
        count: result.count,
        sum: result.sum,
        min: result.min,
        max: result.max,
        last: result.last,
      },
    };
    return { partition: partitionOf(result.device, this.partitions), data: encodeEvent(event) };
  }
}
