/**
 * What every stream operator (windowed aggregation, CEP pattern) consumes and produces, so the hub can drive a
 * list of them the same way: events in, watermark advances in, a discriminated union of outputs back, and a
 * plain-JSON snapshot of the whole state (for a NATS KV checkpoint) that `restore` turns back into the operator.
 *
 * Time: every time value an operator takes or returns (watermarks, window bounds, alert `ts`) is epoch
 * milliseconds of event time. The one conversion from the wire's microseconds is `eventTimeMs` (event-match.ts).
 * Operators never read a clock: processing time, where needed (idle partitions), is passed in by the caller.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { OperatorError, OperatorErrorCode } from './errors.js';

/** A value that survives `JSON.stringify` / `JSON.parse` unchanged (no undefined, Infinity, NaN, Map). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type Severity = 'info' | 'warning' | 'critical';

/** Half-open event-time interval [windowStart, windowEnd), epoch ms. */
export interface WindowBounds {
  windowStart: number;
  windowEnd: number;
}

/**
 * One key's aggregates over one window. Emitted when the watermark reaches `windowEnd`; emitted again, with a
 * higher `revision`, when a late event within the allowed lateness changes it. Consumers upsert on
 * (rule, key, windowStart) and keep the highest revision. `final` says no further revision can come (the
 * watermark passed windowEnd + allowedLatenessMs); with a lateness > 0 that is a last emission of the same
 * revision when the window's state is purged.
 */
export interface WindowResult {
  type: 'window_result';
  rule: string;
  key: string;
  windowStart: number;
  windowEnd: number;
  values: Record<string, Json>;
  final: boolean;
  revision: number;
  /** Session windows only: earlier emitted sessions this one absorbed (a late event bridged them); delete them. */
  replaces?: WindowBounds[];
  /** Lineage: the version (content hash) of the rule that made it; stamped by the operator set. */
  ruleVersion?: string;
}

/** Side output: an event too late for the rule. It is never dropped silently; the caller logs or dead-letters it. */
export interface LateEvent {
  type: 'late_event';
  rule: string;
  event: WireEvent;
  reason: 'beyond_allowed_lateness';
  /** The operator's watermark when the event arrived, epoch ms. */
  watermark: number;
}

/** A CEP rule matched. `ts` is the event time (epoch ms) at which the pattern became true. */
export interface Alert {
  type: 'alert';
  rule: string;
  key: string;
  severity: Severity;
  ts: number;
  message: string;
  details: { [field: string]: Json };
  /** Lineage: the version (content hash) of the rule that raised it; stamped by the operator set. */
  ruleVersion?: string;
}

/** Data quality of one event type, one source and one minute (data-quality.ts): a row of `data_quality`. */
export type { QualityMinute } from './data-quality.js';
import type { QualityMinute } from './data-quality.js';

export type OperatorOutput = WindowResult | LateEvent | Alert | QualityMinute;

/** Counters every operator keeps (eKuiper-style test expectations; later, metrics). Unused ones stay 0. */
export interface OperatorCounters {
  /** Events offered to the operator, of any type. */
  eventsIn: number;
  /** Events of the rule's type that passed its filter, had a key and were not late. */
  eventsMatched: number;
  /** Events of the rule's type and filter whose key field is missing. */
  eventsWithoutKey: number;
  /** Events sent to the late-event side output. */
  lateEvents: number;
  /** Window results emitted for the first time (revision 0). */
  windowResults: number;
  /** Later emissions of a window: revisions after a late event, and the final emission at purge. */
  windowUpdates: number;
  alerts: number;
}

export function emptyCounters(): OperatorCounters {
  return { eventsIn: 0, eventsMatched: 0, eventsWithoutKey: 0, lateEvents: 0, windowResults: 0, windowUpdates: 0, alerts: 0 };
}

/** The whole state of an operator as plain JSON. `kind` and `rule` guard against restoring into another rule. */
export interface OperatorSnapshot {
  v: 1;
  kind: string;
  rule: string;
  /** Last watermark seen, epoch ms; null before the first. */
  watermark: number | null;
  counters: OperatorCounters;
  state: Json;
}

export interface StreamOperator {
  /** Name of the rule the operator runs. */
  readonly rule: string;
  /** Feeds one event; returns what it causes at once (late side output, revisions of fired windows, count windows). */
  onEvent(event: WireEvent): OperatorOutput[];
  /** Optional: the events that follow are one batch of this edge agent (for operators that measure per source). */
  onBatchStart?(agent: string): void;
  /**
   * Advances event time: every later event is expected at or after `watermarkMs`. Returns what that completes.
   * A watermark not above the current one is ignored (watermarks never go back).
   */
  onWatermark(watermarkMs: number): OperatorOutput[];
  counters(): OperatorCounters;
  snapshot(): OperatorSnapshot;
  /** Replaces the state with a snapshot of an operator of the same rule. */
  restore(snapshot: OperatorSnapshot): void;
}

/** Refuses a snapshot of another operator kind, rule or snapshot version. */
export function checkSnapshot(snapshot: OperatorSnapshot, kind: string, rule: string): void {
  if (snapshot.v !== 1 || snapshot.kind !== kind || snapshot.rule !== rule) {
    throw new OperatorError(
      OperatorErrorCode.SNAPSHOT_MISMATCH,
      `snapshot of ${snapshot.kind} rule "${snapshot.rule}" (v${snapshot.v}) cannot restore ${kind} rule "${rule}" (v1)`,
    );
  }
}
