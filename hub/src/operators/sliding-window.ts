/**
 * Hopping windows: `sizeMs` long, a new one starting every `slideMs` (aligned to the epoch), so an event falls in
 * ceil(size / slide) overlapping windows. Requires slide <= size (checked by the rule), so no event falls between
 * windows.
 */
import type { WindowBounds } from './operator.js';
import { alignedStart } from './tumbling-window.js';
import type { TimeWindowAssigner } from './window-assigner.js';

export class SlidingWindows implements TimeWindowAssigner {
  readonly kind = 'time';
  readonly merging = false;

  constructor(
    readonly sizeMs: number,
    readonly slideMs: number,
  ) {}

  assign(tsMs: number): WindowBounds[] {
    const windows: WindowBounds[] = [];
    const lastStart = alignedStart(tsMs, this.slideMs);
    for (let windowStart = lastStart; windowStart > tsMs - this.sizeMs; windowStart -= this.slideMs) {
      windows.push({ windowStart, windowEnd: windowStart + this.sizeMs });
    }
    return windows.reverse();
  }
}
