/**
 * Keyed windowed aggregation driven by a rule: events are assigned to windows of their key (tumbling, sliding,
 * session or count), aggregated with mergeable accumulators, and emitted when the watermark reaches the window's
 * end. Lateness is handled the way Flink does it: an event behind the watermark still updates its window while the
 * watermark has not passed windowEnd + allowedLatenessMs, and the window is then emitted again with a higher
 * revision; once past that, the window's state is purged, and an event that finds none of its windows alive goes
 * to the late-event side output.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { aggregateFunctions, type Accumulator, type AggregateFn, type AggregateFunction } from './aggregates.js';
import { compare, type CompareOp } from './compare.js';
import { eventTimeMs, fieldValue, keyOf, matchesFilter, type EventFilter, type KeyBy } from './event-match.js';
import {
  checkSnapshot,
  emptyCounters,
  type Json,
  type LateEvent,
  type OperatorCounters,
  type OperatorOutput,
  type OperatorSnapshot,
  type StreamOperator,
  type WindowBounds,
  type WindowResult,
} from './operator.js';
import { overlaps } from './session-window.js';
import { createWindowAssigner, type TimeWindowAssigner, type WindowAssigner, type WindowSpec } from './window-assigner.js';

export interface AggregateSpec {
  /** Name of the value in the result, e.g. `avg_value`. */
  name: string;
  fn: AggregateFn;
  /** Field to aggregate (dotted body path, or `key`); `count` without a field counts events. */
  field?: string;
}

/** Emit a window only when one of its aggregates passes a comparison (SQL's HAVING), e.g. `completions >= 3`. */
export interface HavingCondition {
  aggregate: string;
  op: CompareOp;
  value: number;
}

export interface WindowRule extends EventFilter {
  kind: 'window';
  name: string;
  description?: string;
  keyBy: KeyBy;
  window: WindowSpec;
  aggregates: AggregateSpec[];
  /** How long after a window's end a late event still revises it (event time). */
  allowedLatenessMs: number;
  /**
   * Filters emissions: a window is first emitted only when this holds. Once emitted, its later revisions are
   * always emitted, so an upserting consumer never keeps a stale row.
   */
  having?: HavingCondition;
}

interface OpenWindow {
  start: number;
  end: number;
  accumulators: Accumulator[];
  /** Events added (count windows close at the assigner's size). */
  events: number;
  /** The watermark reached `end`: the window was evaluated (emitted, or held back by `having`). */
  fired: boolean;
  /** Revision of the last emission; -1 before the first. */
  revision: number;
  /** Emitted sessions absorbed since the last emission, to report in `replaces`. */
  replaces: WindowBounds[];
}

type WindowStateJson = {
  key: string;
  start: number;
  end: number;
  events: number;
  fired: boolean;
  revision: number;
  replaces: WindowBounds[];
  accumulators: Json[];
};

export const WINDOW_OPERATOR_KIND = 'window';

export class WindowOperator implements StreamOperator {
  readonly rule: string;
  private readonly assigner: WindowAssigner;
  private readonly functions: AggregateFunction[];
  /** Open windows per key, by ascending start. */
  private readonly windows = new Map<string, OpenWindow[]>();
  private watermark: number | null = null;
  private stats = emptyCounters();

  constructor(readonly definition: WindowRule) {
    this.rule = definition.name;
    this.assigner = createWindowAssigner(definition.window);
    this.functions = definition.aggregates.map((aggregate) => aggregateFunctions[aggregate.fn]);
  }

  onEvent(event: WireEvent): OperatorOutput[] {
    this.stats.eventsIn++;
    if (!matchesFilter(event, this.definition)) return [];
    const key = keyOf(event, this.definition.keyBy);
    if (key === undefined) {
      this.stats.eventsWithoutKey++;
      return [];
    }
    const tsMs = eventTimeMs(event);
    if (this.assigner.kind === 'count') return this.addToCountWindow(key, event, tsMs, this.assigner.size);

    const touched = this.assigner.merging ? this.addToSession(key, event, tsMs, this.assigner) : this.addToTimeWindows(key, event, tsMs, this.assigner);
    if (touched.length === 0) {
      this.stats.lateEvents++;
      const late: LateEvent = { type: 'late_event', rule: this.rule, event, reason: 'beyond_allowed_lateness', watermark: this.watermark! };
      return [late];
    }
    this.stats.eventsMatched++;
    // A window the watermark already passed was evaluated: this late event revises it.
    return touched.filter((window) => window.fired).flatMap((window) => this.emit(key, window, false));
  }

  onWatermark(watermarkMs: number): OperatorOutput[] {
    if (this.watermark !== null && watermarkMs <= this.watermark) return [];
    this.watermark = watermarkMs;
    if (this.assigner.kind === 'count') return [];
    const results: WindowResult[] = [];
    for (const [key, windows] of this.windows) {
      const open: OpenWindow[] = [];
      for (const window of windows) {
        const closed = watermarkMs >= window.end + this.definition.allowedLatenessMs;
        if (!window.fired && watermarkMs >= window.end) {
          window.fired = true;
          results.push(...this.emit(key, window, closed));
        } else if (closed && window.revision >= 0) {
          // Purged after revisions were possible: say that the last revision is final.
          this.stats.windowUpdates++;
          results.push(this.resultOf(key, window, true));
        }
        if (!closed) open.push(window);
      }
      if (open.length > 0) this.windows.set(key, open);
      else this.windows.delete(key);
    }
    return results.sort((a, b) => a.windowEnd - b.windowEnd || a.windowStart - b.windowStart || compareStrings(a.key, b.key));
  }

  counters(): OperatorCounters {
    return { ...this.stats };
  }

  /** Open windows over all keys (a gauge for metrics). */
  openWindows(): number {
    let open = 0;
    for (const windows of this.windows.values()) open += windows.length;
    return open;
  }

  snapshot(): OperatorSnapshot {
    const windows: WindowStateJson[] = [];
    for (const [key, list] of this.windows) {
      for (const window of list) {
        windows.push({
          key,
          start: window.start,
          end: window.end,
          events: window.events,
          fired: window.fired,
          revision: window.revision,
          replaces: window.replaces.map((bounds) => ({ ...bounds })),
          accumulators: window.accumulators.map((accumulator) => accumulator.toState()),
        });
      }
    }
    return { v: 1, kind: WINDOW_OPERATOR_KIND, rule: this.rule, watermark: this.watermark, counters: this.counters(), state: { windows } as unknown as Json };
  }

  restore(snapshot: OperatorSnapshot): void {
    checkSnapshot(snapshot, WINDOW_OPERATOR_KIND, this.rule);
    this.windows.clear();
    for (const saved of (snapshot.state as unknown as { windows: WindowStateJson[] }).windows) {
      const list = this.windows.get(saved.key) ?? [];
      list.push({
        start: saved.start,
        end: saved.end,
        events: saved.events,
        fired: saved.fired,
        revision: saved.revision,
        replaces: saved.replaces.map((bounds) => ({ ...bounds })),
        accumulators: saved.accumulators.map((state, i) => this.functions[i]!.fromState(state)),
      });
      this.windows.set(saved.key, list);
    }
    this.watermark = snapshot.watermark;
    this.stats = { ...snapshot.counters };
  }

  private isAlive(windowEnd: number): boolean {
    return this.watermark === null || this.watermark < windowEnd + this.definition.allowedLatenessMs;
  }

  private newWindow(start: number, end: number): OpenWindow {
    return {
      start,
      end,
      accumulators: this.functions.map((fn) => fn.create()),
      events: 0,
      fired: this.watermark !== null && this.watermark >= end,
      revision: -1,
      replaces: [],
    };
  }

  private addEvent(window: OpenWindow, event: WireEvent, tsMs: number): void {
    this.definition.aggregates.forEach((aggregate, i) => {
      window.accumulators[i]!.add(aggregate.field === undefined ? true : fieldValue(event, aggregate.field), tsMs);
    });
    window.events++;
  }

  private addToTimeWindows(key: string, event: WireEvent, tsMs: number, assigner: TimeWindowAssigner): OpenWindow[] {
    const windows = this.windows.get(key) ?? [];
    const touched: OpenWindow[] = [];
    for (const bounds of assigner.assign(tsMs)) {
      if (!this.isAlive(bounds.windowEnd)) continue;
      let window = windows.find((open) => open.start === bounds.windowStart);
      if (!window) {
        window = this.newWindow(bounds.windowStart, bounds.windowEnd);
        windows.push(window);
      }
      this.addEvent(window, event, tsMs);
      touched.push(window);
    }
    if (touched.length > 0) this.windows.set(key, windows.sort((a, b) => a.start - b.start));
    return touched;
  }

  /**
   * Merges the event's window [ts, ts + gap) with every session of the key it overlaps (a late event in the gap
   * between two sessions bridges them). Lateness is judged on the merged session, as an event inside a
   * still-open session is never late.
   */
  private addToSession(key: string, event: WireEvent, tsMs: number, assigner: TimeWindowAssigner): OpenWindow[] {
    const [own] = assigner.assign(tsMs);
    const windows = this.windows.get(key) ?? [];
    const absorbed = windows.filter((open) => overlaps({ windowStart: open.start, windowEnd: open.end }, own!));
    const start = Math.min(own!.windowStart, ...absorbed.map((window) => window.start));
    const end = Math.max(own!.windowEnd, ...absorbed.map((window) => window.end));
    if (!this.isAlive(end)) return [];

    const session = this.newWindow(start, end);
    for (const window of absorbed) {
      window.accumulators.forEach((accumulator, i) => session.accumulators[i]!.merge(accumulator));
      session.events += window.events;
      session.revision = Math.max(session.revision, window.revision);
      session.replaces.push(...window.replaces.filter((bounds) => bounds.windowStart !== start));
      if (window.revision >= 0 && window.start !== start) session.replaces.push({ windowStart: window.start, windowEnd: window.end });
    }
    this.addEvent(session, event, tsMs);
    const kept = windows.filter((window) => !absorbed.includes(window));
    this.windows.set(key, [...kept, session].sort((a, b) => a.start - b.start));
    return [session];
  }

  private addToCountWindow(key: string, event: WireEvent, tsMs: number, size: number): OperatorOutput[] {
    this.stats.eventsMatched++;
    const [window] = this.windows.get(key) ?? [this.newWindow(tsMs, tsMs)];
    window!.start = Math.min(window!.start, tsMs);
    window!.end = Math.max(window!.end, tsMs);
    this.addEvent(window!, event, tsMs);
    if (window!.events < size) {
      this.windows.set(key, [window!]);
      return [];
    }
    this.windows.delete(key);
    window!.fired = true;
    return this.emit(key, window!, true);
  }

  /** Emits a new revision of the window, unless `having` holds back its first emission. */
  private emit(key: string, window: OpenWindow, final: boolean): WindowResult[] {
    if (window.revision < 0 && !this.passesHaving(window)) return [];
    window.revision++;
    if (window.revision === 0) this.stats.windowResults++;
    else this.stats.windowUpdates++;
    const result = this.resultOf(key, window, final);
    window.replaces = [];
    return [result];
  }

  private resultOf(key: string, window: OpenWindow, final: boolean): WindowResult {
    const values: Record<string, Json> = {};
    this.definition.aggregates.forEach((aggregate, i) => (values[aggregate.name] = window.accumulators[i]!.result()));
    const result: WindowResult = {
      type: 'window_result',
      rule: this.rule,
      key,
      windowStart: window.start,
      windowEnd: window.end,
      values,
      final,
      revision: window.revision,
    };
    if (window.replaces.length > 0) result.replaces = window.replaces.map((bounds) => ({ ...bounds }));
    return result;
  }

  private passesHaving(window: OpenWindow): boolean {
    const having = this.definition.having;
    if (!having) return true;
    const index = this.definition.aggregates.findIndex((aggregate) => aggregate.name === having.aggregate);
    const value = window.accumulators[index]?.result();
    return typeof value === 'number' && compare(value, having.op, having.value);
  }
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
