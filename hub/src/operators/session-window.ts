/**
 * Session windows: a key's events closer than `gapMs` to each other form one session. Each event starts the
 * window [ts, ts + gap); the operator merges windows of a key that overlap, so a late event that falls in the gap
 * between two sessions bridges them into one.
 */
import type { WindowBounds } from './operator.js';
import type { TimeWindowAssigner } from './window-assigner.js';

export class SessionWindows implements TimeWindowAssigner {
  readonly kind = 'time';
  readonly merging = true;

  constructor(readonly gapMs: number) {}

  assign(tsMs: number): WindowBounds[] {
    return [{ windowStart: tsMs, windowEnd: tsMs + this.gapMs }];
  }
}

/** Whether two half-open windows share time (touching windows, end == start, do not). */
export function overlaps(a: WindowBounds, b: WindowBounds): boolean {
  return a.windowStart < b.windowEnd && b.windowStart < a.windowEnd;
}
