/**
 * What the CEP operators share: events of the rule are held until the watermark passes them and then handed to
 * the pattern in event-time order (ties in arrival order), so an out-of-order arrival within the watermark's bound
 * gives the same alerts as an in-order one. An event already behind the watermark goes to the late-event side
 * output. Alerts therefore come out of `onWatermark`, at most the out-of-orderness bound after the fact.
 *
 * Each pattern keeps one plain-JSON state per key, so the snapshot is the key map, the held events and the
 * watermark.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { eventTimeMs, keyOf, type KeyBy } from './event-match.js';
import {
  checkSnapshot,
  emptyCounters,
  type Alert,
  type Json,
  type LateEvent,
  type OperatorCounters,
  type OperatorOutput,
  type OperatorSnapshot,
  type Severity,
  type StreamOperator,
} from './operator.js';

/** Fields every CEP rule has. */
export interface CepRuleBase {
  name: string;
  description?: string;
  severity: Severity;
  /** What a pattern is tracked per: `key` (device or user id) or body field path(s). */
  keyBy: KeyBy;
}

interface HeldEvent {
  key: string;
  tsMs: number;
  /** Arrival order, to keep ties in event time stable. */
  seq: number;
  event: WireEvent;
}

type CepStateJson<KeyState> = { keys: Array<[string, KeyState]>; held: HeldEvent[]; nextSeq: number };

export abstract class CepOperator<KeyState extends Json> implements StreamOperator {
  /** Pattern state per key; a key without state has nothing in progress. */
  protected readonly keys = new Map<string, KeyState>();
  /** Events waiting for the watermark, by (tsMs, seq). */
  private held: HeldEvent[] = [];
  private nextSeq = 0;
  private watermark: number | null = null;
  private stats = emptyCounters();

  protected constructor(
    private readonly kind: string,
    private readonly base: CepRuleBase,
  ) {}

  get rule(): string {
    return this.base.name;
  }

  /** Whether the event is one the pattern looks at (type and filter). */
  protected abstract accepts(event: WireEvent): boolean;

  /** Advances the key's pattern by one event, in event-time order. */
  protected abstract process(key: string, event: WireEvent, tsMs: number): Alert[];

  /** Runs after the events before a new watermark were processed: patterns that time alone completes. */
  protected afterWatermark(_watermarkMs: number): Alert[] {
    return [];
  }

  onEvent(event: WireEvent): OperatorOutput[] {
    this.stats.eventsIn++;
    if (!this.accepts(event)) return [];
    const key = keyOf(event, this.base.keyBy);
    if (key === undefined) {
      this.stats.eventsWithoutKey++;
      return [];
    }
    const tsMs = eventTimeMs(event);
    if (this.watermark !== null && tsMs < this.watermark) {
      this.stats.lateEvents++;
      const late: LateEvent = { type: 'late_event', rule: this.rule, event, reason: 'beyond_allowed_lateness', watermark: this.watermark };
      return [late];
    }
    this.stats.eventsMatched++;
    const held: HeldEvent = { key, tsMs, seq: this.nextSeq++, event };
    this.held.splice(this.insertionIndex(tsMs), 0, held);
    return [];
  }

  onWatermark(watermarkMs: number): OperatorOutput[] {
    if (this.watermark !== null && watermarkMs <= this.watermark) return [];
    this.watermark = watermarkMs;
    let ready = 0;
    while (ready < this.held.length && this.held[ready]!.tsMs < watermarkMs) ready++;
    const alerts: Alert[] = [];
    for (const { key, event, tsMs } of this.held.splice(0, ready)) alerts.push(...this.process(key, event, tsMs));
    alerts.push(...this.afterWatermark(watermarkMs));
    this.stats.alerts += alerts.length;
    return alerts;
  }

  counters(): OperatorCounters {
    return { ...this.stats };
  }

  snapshot(): OperatorSnapshot {
    const state: CepStateJson<KeyState> = {
      // Key states change with every event: copied. Held events never change (operators only read events).
      keys: [...this.keys].map(([key, keyState]) => [key, cloneJson(keyState)]),
      held: this.held.map((held) => ({ ...held })),
      nextSeq: this.nextSeq,
    };
    return { v: 1, kind: this.kind, rule: this.rule, watermark: this.watermark, counters: this.counters(), state: state as unknown as Json };
  }

  restore(snapshot: OperatorSnapshot): void {
    checkSnapshot(snapshot, this.kind, this.rule);
    const state = snapshot.state as unknown as CepStateJson<KeyState>;
    this.keys.clear();
    for (const [key, keyState] of state.keys) this.keys.set(key, cloneJson(keyState));
    this.held = state.held.map((held) => ({ ...held }));
    this.nextSeq = state.nextSeq;
    this.watermark = snapshot.watermark;
    this.stats = { ...snapshot.counters };
  }

  protected alert(key: string, tsMs: number, message: string, details: Alert['details']): Alert {
    return { type: 'alert', rule: this.rule, key, severity: this.base.severity, ts: tsMs, message, details };
  }

  /** After every held event with tsMs' <= tsMs (binary search: held events are mostly in order). */
  private insertionIndex(tsMs: number): number {
    let low = 0;
    let high = this.held.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.held[middle]!.tsMs <= tsMs) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}

/**
 * A deep copy of JSON data. structuredClone does the same for any value but costs a serialisation per call, which
 * made snapshots of thousands of small key states the hub's largest cost after row encoding.
 */
export function cloneJson<T extends Json>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((item) => cloneJson(item)) as T;
  const copy: Record<string, Json> = {};
  for (const key in value) copy[key] = cloneJson((value as Record<string, Json>)[key]!);
  return copy as T;
}

/** Milliseconds as a short human duration for alert messages: `30 s`, `5 min`, `4 h`. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}
