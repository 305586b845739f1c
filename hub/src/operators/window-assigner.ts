/**
 * Which windows an event belongs to. Time windows (tumbling, sliding, session) map an event time to window
 * bounds; a merging assigner (session) asks the operator to merge overlapping windows of a key. Count windows
 * are not about time at all: they close after N events of a key, so the operator handles them apart.
 */
import { CountWindows } from './count-window.js';
import type { WindowBounds } from './operator.js';
import { SessionWindows } from './session-window.js';
import { SlidingWindows } from './sliding-window.js';
import { TumblingWindows } from './tumbling-window.js';

export type WindowSpec =
  | { type: 'tumbling'; sizeMs: number }
  | { type: 'sliding'; sizeMs: number; slideMs: number }
  | { type: 'session'; gapMs: number }
  | { type: 'count'; size: number };

export interface TimeWindowAssigner {
  readonly kind: 'time';
  /** True when windows of one key that overlap must be merged into one (sessions). */
  readonly merging: boolean;
  /** The windows an event at `tsMs` falls in, by ascending start. */
  assign(tsMs: number): WindowBounds[];
}

export interface CountWindowAssigner {
  readonly kind: 'count';
  /** Events per window. */
  readonly size: number;
}

export type WindowAssigner = TimeWindowAssigner | CountWindowAssigner;

export function createWindowAssigner(spec: WindowSpec): WindowAssigner {
  switch (spec.type) {
    case 'tumbling':
      return new TumblingWindows(spec.sizeMs);
    case 'sliding':
      return new SlidingWindows(spec.sizeMs, spec.slideMs);
    case 'session':
      return new SessionWindows(spec.gapMs);
    case 'count':
      return new CountWindows(spec.size);
  }
}
