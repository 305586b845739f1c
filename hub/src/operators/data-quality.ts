/**
 * Data quality of one event type, per source (edge agent) and per minute of event time: how complete, timely,
 * unique and plausible the events are. The rule is compiled from the type's quality file beside its schemas
 * (schemas/<type>/quality.json, see hub/src/quality/quality-rules.ts); it runs in each partition's operator set like
 * any window rule, so its state is in the partition's snapshot and a replay never counts an event twice.
 *
 * Per (source, minute) it counts:
 *   events            events of the type
 *   complete          events with every field of `expectedFields` present (required and expected-optional ones)
 *   missing.<field>   events without that field
 *   late              events that arrived behind the watermark (their minute may have been reported already)
 *   future            events stamped more than `futureToleranceMs` after the agent received them (clock skew)
 *   duplicates        events whose id was seen among the last `duplicateMemory` ids of the partition
 *   out_of_range      values outside a declared range (`ranges`), per field too
 *   drift             values while the key's recent mean is more than `maxStdDevs` from its long-run mean
 *   ingest lag        p50 / p95 / max of (agent received - event time), from a DDSketch (1 % relative error)
 * A minute is emitted when the watermark passes its end; a late event within `allowedLatenessMs` updates it and it
 * is emitted again with a higher revision (the table's upsert keys make that a correction, not a second row). A
 * later event is counted in `counters().lateEvents` only: its minute is gone from memory.
 *
 * The duplicate memory is not in the snapshot (tens of thousands of ids at every checkpoint would cost more than
 * the counts): after a takeover it starts empty, so a duplicate of an event from before the takeover's snapshot is
 * not counted. Everything else is restored exactly.
 *
 * Drift raises one alert per episode and key (`<rule>.drift`); it re-arms when the recent mean is back in range.
 * Silence (`<rule>.silent`): a key without an event for `silence.afterMs` of event time, one alert per silence, known
 * once the watermark passes its last event + afterMs (looked for every tenth of afterMs of event time), or when its
 * next event shows the gap. It costs a map update per event, where the CEP absence operator holds every event until
 * the watermark passes it.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { formatDuration } from './cep-operator.js';
import { DDSketch, type DDSketchState } from './ddsketch.js';
import { bodyFieldReader, eventTimeMs, keyOf, matchesFilter, type BodyFieldReader, type EventFilter, type KeyBy, type Scalar } from './event-match.js';
import { checkSnapshot, emptyCounters, type Alert, type Json, type OperatorCounters, type OperatorOutput, type OperatorSnapshot, type Severity, type StreamOperator } from './operator.js';

export const DATA_QUALITY_KIND = 'data_quality';
/** Returned for most events: callers only read it (the operator set checks its length). */
const NOTHING: OperatorOutput[] = [];
/**
 * Keys (devices) that sent nothing for this long of event time are forgotten: their drift baseline, and their silent
 * mark (its alert was raised). Without it a fleet whose device ids change would grow the state, and every checkpoint,
 * forever. A forgotten key that comes back starts anew.
 */
const FORGET_KEYS_AFTER_MS = 24 * 3_600_000;
export const QUALITY_MINUTE_MS = 60_000;

export interface RangeCheck {
  /** Dotted body path of a numeric field. */
  field: string;
  min?: number;
  max?: number;
  /** Only events whose fields equal these (e.g. `{ metric: temperature }`). */
  where?: Record<string, Scalar>;
}

export interface DriftCheck {
  field: string;
  where?: Record<string, Scalar>;
  /** What a mean is kept per (default: the wire key, the device). */
  keyBy: KeyBy;
  /** Events the long-run mean and deviation remember (exponential weights). */
  baselineEvents: number;
  /** Events the recent mean remembers. */
  recentEvents: number;
  maxStdDevs: number;
  /** No verdict before a key has this many events. */
  minEvents: number;
}

export interface DataQualityRule {
  kind: 'data_quality';
  name: string;
  description?: string;
  eventType: string;
  expectedFields: string[];
  ranges: RangeCheck[];
  drift: DriftCheck[];
  futureToleranceMs: number;
  allowedLatenessMs: number;
  duplicateMemory: number;
  severity: Severity;
  /** Alert `<name>.silent` when a key sends nothing for `afterMs` of event time (one alert per silence). */
  silence?: { afterMs: number; keyBy: KeyBy };
}

/** What is counted per source and minute. */
interface QualityCounts {
  source: string;
  minuteStart: number;
  events: number;
  complete: number;
  late: number;
  future: number;
  duplicates: number;
  outOfRange: number;
  drift: number;
  /** Per expected field, events without it; per range field, values out of range. Fields with 0 are left out. */
  missing: Record<string, number>;
  outOfRangeByField: Record<string, number>;
  /** -1 before the first emission. */
  revision: number;
}

/** One (source, minute) of one event type, as the operator emits it (a row of `data_quality`). */
export interface QualityMinute extends QualityCounts {
  type: 'quality_minute';
  rule: string;
  eventType: string;
  /** Ingest lag (agent received - event time), ms; null without events. */
  lagP50Ms: number | null;
  lagP95Ms: number | null;
  lagMaxMs: number | null;
  final: boolean;
  ruleVersion?: string;
}

interface MinuteState extends QualityCounts {
  lag: DDSketch;
  /** Changed since its last emission. */
  dirty: boolean;
}

/** Exponentially weighted long-run mean and variance, and a faster recent mean, of one key's values. */
interface DriftState {
  /** Event time of the key's last value (for forgetting keys that stopped). */
  lastTs: number;
  n: number;
  mean: number;
  variance: number;
  recent: number;
  alerted: boolean;
}

type MinuteJson = Omit<MinuteState, 'lag'> & { lag: DDSketchState };

/**
 * A bounded set of the most recent ids: a ring of `capacity` ids over a Set for lookups. It keeps a 52-bit hash of
 * each id, not the string: a number in a Set is smaller than an id string and holds nothing of the decoded message
 * alive (the first version, keeping strings, peaked at 832 MB in the hub benchmark against 510-531 MB now). Two ids
 * share a hash with odds of about capacity / 2^52.
 */
class RecentIds {
  private readonly ring: number[] = [];
  private readonly seen = new Set<number>();
  private next = 0;
  constructor(private readonly capacity: number) {}

  /** True when `id` is among the remembered ones; remembers it otherwise. */
  seenBefore(text: string): boolean {
    const id = hash52(text);
    if (this.seen.has(id)) return true;
    if (this.capacity <= 0) return false;
    if (this.ring.length < this.capacity) this.ring.push(id);
    else {
      this.seen.delete(this.ring[this.next]!);
      this.ring[this.next] = id;
      this.next = (this.next + 1) % this.capacity;
    }
    this.seen.add(id);
    return false;
  }
}

export class DataQualityOperator implements StreamOperator {
  private readonly minutes = new Map<string, MinuteState>();
  private readonly driftByKey: Array<Map<string, DriftState>>;
  /** Last event time per key not (yet) silent. */
  private readonly lastSeen = new Map<string, number>();
  /** Watermark of the last look for silent keys, and of the last time stopped keys were forgotten. */
  private lastSilenceScan = -Infinity;
  private lastForget = -Infinity;
  /** Keys alerted as silent, with their last event time, until their next event. */
  private readonly silent = new Map<string, number>();
  private readonly recentIds: RecentIds;
  private watermark: number | null = null;
  private source = 'unknown';
  /** The minute the last event went to. */
  private lastMinute: MinuteState | undefined;
  private stats: OperatorCounters = emptyCounters();
  private readonly baselineAlpha: number[];
  private readonly recentAlpha: number[];
  private readonly expected: Array<{ field: string; read: BodyFieldReader }>;
  private readonly rangeReaders: Array<BodyFieldReader>;
  /** The `where` of each range and drift check as a filter, built once. */
  private readonly rangeFilters: Array<EventFilter | undefined>;
  private readonly driftFilters: Array<EventFilter | undefined>;
  private readonly driftReaders: Array<BodyFieldReader>;

  constructor(readonly definition: DataQualityRule) {
    this.expected = definition.expectedFields.map((field) => ({ field, read: bodyFieldReader(field) }));
    this.rangeReaders = definition.ranges.map((range) => bodyFieldReader(range.field));
    this.rangeFilters = definition.ranges.map((range) => (range.where ? { eventType: definition.eventType, where: range.where } : undefined));
    this.driftFilters = definition.drift.map((check) => (check.where ? { eventType: definition.eventType, where: check.where } : undefined));
    this.driftReaders = definition.drift.map((check) => bodyFieldReader(check.field));
    this.driftByKey = definition.drift.map(() => new Map());
    this.baselineAlpha = definition.drift.map((d) => 2 / (d.baselineEvents + 1));
    this.recentAlpha = definition.drift.map((d) => 2 / (d.recentEvents + 1));
    this.recentIds = new RecentIds(definition.duplicateMemory);
  }

  get rule(): string {
    return this.definition.name;
  }

  onEvent(event: WireEvent): OperatorOutput[] {
    this.stats.eventsIn++;
    if (event.type !== this.definition.eventType) return NOTHING;
    const tsMs = eventTimeMs(event);
    const minuteStart = Math.floor(tsMs / QUALITY_MINUTE_MS) * QUALITY_MINUTE_MS;
    const late = this.watermark !== null && tsMs < this.watermark;
    if (late && minuteStart + QUALITY_MINUTE_MS + this.definition.allowedLatenessMs <= this.watermark!) {
      // Its minute was emitted for the last time and forgotten: nothing left to correct.
      this.stats.lateEvents++;
      return NOTHING;
    }
    this.stats.eventsMatched++;
    const source = this.source;
    // Consecutive events almost always share their source and minute: skip building the key then.
    let minute = this.lastMinute;
    if (!minute || minute.minuteStart !== minuteStart || minute.source !== source) {
      const id = `${source}\u0000${minuteStart}`;
      minute = this.minutes.get(id);
      if (!minute) this.minutes.set(id, (minute = emptyMinute(source, minuteStart)));
      this.lastMinute = minute;
    }
    minute.dirty = true;
    minute.events++;
    if (late) minute.late++;

    let complete = true;
    for (const { field, read } of this.expected) {
      const value = read(event);
      if (value === undefined || value === null || value === '') {
        complete = false;
        minute.missing[field] = (minute.missing[field] ?? 0) + 1;
      }
    }
    if (complete) minute.complete++;

    const lagMs = (event.its - event.ts) / 1000;
    minute.lag.add(lagMs);
    if (-lagMs > this.definition.futureToleranceMs) minute.future++;
    if (this.recentIds.seenBefore(event.id)) minute.duplicates++;

    let outOfRange = false;
    for (let i = 0; i < this.definition.ranges.length; i++) {
      const range = this.definition.ranges[i]!;
      const filter = this.rangeFilters[i];
      if (filter && !matchesFilter(event, filter)) continue;
      const value = this.rangeReaders[i]!(event);
      if (typeof value !== 'number') continue;
      if ((range.min !== undefined && value < range.min) || (range.max !== undefined && value > range.max)) {
        outOfRange = true;
        minute.outOfRangeByField[range.field] = (minute.outOfRangeByField[range.field] ?? 0) + 1;
      }
    }
    if (outOfRange) minute.outOfRange++;

    let outputs: OperatorOutput[] | undefined;
    const silence = this.definition.silence;
    if (silence) {
      const key = keyOf(event, silence.keyBy);
      if (key !== undefined) {
        const before = this.lastSeen.get(key);
        if (before === undefined) {
          const alerted = this.silent.get(key);
          if (alerted !== undefined) this.silent.delete(key);
          this.lastSeen.set(key, Math.max(alerted ?? tsMs, tsMs));
        } else if (tsMs > before) {
          // The gap before this event may be a silence the watermark jumped over.
          if (tsMs - before >= silence.afterMs) (outputs ??= []).push(this.silenceAlert(key, before, silence.afterMs));
          this.lastSeen.set(key, tsMs);
        }
      }
    }
    let drifting = false;
    for (let i = 0; i < this.definition.drift.length; i++) {
      const check = this.definition.drift[i]!;
      const filter = this.driftFilters[i];
      if (filter && !matchesFilter(event, filter)) continue;
      const value = this.driftReaders[i]!(event);
      if (typeof value !== 'number' || !Number.isFinite(value)) continue;
      const key = keyOf(event, check.keyBy);
      if (key === undefined) continue;
      const alert = this.observeDrift(i, check, key, value, tsMs);
      if (alert === undefined) continue;
      drifting = true;
      if (alert !== null) (outputs ??= []).push(alert);
    }
    if (drifting) minute.drift++;

    // A correction of a minute already reported goes out with the next watermark (several late events, one row).
    return outputs ?? NOTHING;
  }

  onWatermark(watermarkMs: number): OperatorOutput[] {
    if (this.watermark !== null && watermarkMs <= this.watermark) return [];
    this.watermark = watermarkMs;
    const outputs: OperatorOutput[] = [];
    const silence = this.definition.silence;
    // Silent keys are looked for every tenth of the silence (at least every second) of event time, not at every
    // advance: a scan of every key per batch cost more than the rest of the rule. The alert's time is exact.
    if (silence && watermarkMs - this.lastSilenceScan >= Math.max(1000, silence.afterMs / 10)) {
      this.lastSilenceScan = watermarkMs;
      for (const [key, lastTs] of this.lastSeen) {
        if (lastTs + silence.afterMs > watermarkMs) continue;
        this.lastSeen.delete(key);
        this.silent.set(key, lastTs);
        outputs.push(this.silenceAlert(key, lastTs, silence.afterMs));
      }
    }
    if (watermarkMs - this.lastForget >= 3_600_000) {
      this.lastForget = watermarkMs;
      const horizon = watermarkMs - FORGET_KEYS_AFTER_MS;
      for (const [key, lastTs] of this.silent) if (lastTs < horizon) this.silent.delete(key);
      for (const keys of this.driftByKey) for (const [key, state] of keys) if (state.lastTs < horizon) keys.delete(key);
    }
    for (const [id, minute] of this.minutes) {
      const end = minute.minuteStart + QUALITY_MINUTE_MS;
      if (end > watermarkMs) continue;
      const final = end + this.definition.allowedLatenessMs <= watermarkMs;
      if (minute.dirty || final) {
        minute.revision++;
        minute.dirty = false;
        if (minute.revision === 0) this.stats.windowResults++;
        else this.stats.windowUpdates++;
        outputs.push(this.row(minute, final));
      }
      if (final) {
        this.minutes.delete(id);
        if (this.lastMinute === minute) this.lastMinute = undefined;
      }
    }
    return outputs.sort((a, b) => outputTime(a) - outputTime(b));
  }

  counters(): OperatorCounters {
    return { ...this.stats };
  }

  snapshot(): OperatorSnapshot {
    const minutes: MinuteJson[] = [...this.minutes.values()].map((m) => ({ ...m, lag: m.lag.toState() }));
    const drift = this.driftByKey.map((keys) => [...keys]);
    const lastSeen = [...this.lastSeen];
    const silent = [...this.silent];
    return {
      v: 1,
      kind: DATA_QUALITY_KIND,
      rule: this.rule,
      watermark: this.watermark,
      counters: { ...this.stats },
      state: { minutes, drift, lastSeen, silent, lastSilenceScan: Number.isFinite(this.lastSilenceScan) ? this.lastSilenceScan : null } as unknown as Json,
    };
  }

  restore(snapshot: OperatorSnapshot): void {
    checkSnapshot(snapshot, DATA_QUALITY_KIND, this.rule);
    const state = snapshot.state as unknown as { minutes: MinuteJson[]; drift: Array<Array<[string, DriftState]>>; lastSeen?: Array<[string, number]>; silent?: Array<[string, number]>; lastSilenceScan?: number | null };
    this.watermark = snapshot.watermark;
    this.stats = { ...snapshot.counters };
    this.minutes.clear();
    this.lastMinute = undefined;
    for (const m of state.minutes) this.minutes.set(`${m.source}\u0000${m.minuteStart}`, { ...m, lag: DDSketch.fromState(m.lag) });
    this.lastSeen.clear();
    for (const [key, ts] of state.lastSeen ?? []) this.lastSeen.set(key, ts);
    this.silent.clear();
    for (const [key, ts] of state.silent ?? []) this.silent.set(key, ts);
    this.lastSilenceScan = state.lastSilenceScan ?? -Infinity;
    this.driftByKey.forEach((keys, i) => {
      keys.clear();
      for (const [key, value] of state.drift[i] ?? []) keys.set(key, { ...value });
    });
  }

  /** The events that follow come from this edge agent (the batch names it, the wire event does not). */
  onBatchStart(agent: string): void {
    this.source = agent;
  }

  /**
   * Updates the key's means; returns undefined when the value is not drifting, null when it is and the episode was
   * alerted before, or the episode's alert.
   */
  private observeDrift(i: number, check: DriftCheck, key: string, value: number, tsMs: number): Alert | null | undefined {
    const keys = this.driftByKey[i]!;
    let state = keys.get(key);
    if (!state) {
      keys.set(key, { lastTs: tsMs, n: 1, mean: value, variance: 0, recent: value, alerted: false });
      return undefined;
    }
    if (tsMs > state.lastTs) state.lastTs = tsMs;
    // Judged against the baseline before this value moves it.
    state.recent += this.recentAlpha[i]! * (value - state.recent);
    const deviation = Math.sqrt(state.variance);
    const drifting = state.n >= check.minEvents && Math.abs(state.recent - state.mean) > check.maxStdDevs * Math.max(deviation, 1e-9);
    const a = this.baselineAlpha[i]!;
    const delta = value - state.mean;
    state.mean += a * delta;
    state.variance = (1 - a) * (state.variance + a * delta * delta);
    state.n++;
    if (!drifting) {
      state.alerted = false;
      return undefined;
    }
    if (state.alerted) return null;
    state.alerted = true;
    this.stats.alerts++;
    return {
      type: 'alert',
      rule: `${this.rule}.drift`,
      key,
      severity: this.definition.severity,
      ts: tsMs,
      message: `${this.definition.eventType} ${check.field} of ${key} drifted: recent mean ${round(state.recent)} is more than ${check.maxStdDevs} standard deviations (${round(deviation)}) from its usual ${round(state.mean)}`,
      details: { field: check.field, recentMean: round(state.recent), baselineMean: round(state.mean), stdDev: round(deviation), maxStdDevs: check.maxStdDevs },
    };
  }

  private silenceAlert(key: string, lastTs: number, afterMs: number): Alert {
    this.stats.alerts++;
    return {
      type: 'alert',
      rule: `${this.rule}.silent`,
      key,
      severity: this.definition.severity,
      ts: lastTs + afterMs,
      message: `no ${this.definition.eventType} from ${key} for ${formatDuration(afterMs)}`,
      details: { lastSeenAt: lastTs, silenceMs: afterMs },
    };
  }

  private row(minute: MinuteState, final: boolean): QualityMinute {
    const { lag } = minute;
    return {
      type: 'quality_minute',
      rule: this.rule,
      eventType: this.definition.eventType,
      source: minute.source,
      minuteStart: minute.minuteStart,
      events: minute.events,
      complete: minute.complete,
      late: minute.late,
      future: minute.future,
      duplicates: minute.duplicates,
      outOfRange: minute.outOfRange,
      drift: minute.drift,
      missing: { ...minute.missing },
      outOfRangeByField: { ...minute.outOfRangeByField },
      lagP50Ms: roundOrNull(lag.quantile(0.5)),
      lagP95Ms: roundOrNull(lag.quantile(0.95)),
      lagMaxMs: roundOrNull(lag.toState().max),
      revision: minute.revision,
      final,
    };
  }
}

/** Two 32-bit FNV-1a variants combined into a 52-bit integer (exact as a double). */
function hash52(text: string): number {
  let a = 0x811c9dc5;
  let b = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15);
  }
  return (a >>> 0) * 0x100000 + ((b >>> 0) & 0xfffff);
}

function outputTime(output: OperatorOutput): number {
  return output.type === 'quality_minute' ? output.minuteStart : output.type === 'alert' ? output.ts : 0;
}

function emptyMinute(source: string, minuteStart: number): MinuteState {
  return { source, minuteStart, events: 0, complete: 0, late: 0, future: 0, duplicates: 0, outOfRange: 0, drift: 0, missing: {}, outOfRangeByField: {}, lag: new DDSketch(), revision: -1, dirty: false };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

function roundOrNull(value: number | null): number | null {
  return value === null ? null : Math.round(value * 10) / 10;
}
