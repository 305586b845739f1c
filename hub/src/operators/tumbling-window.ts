/** Fixed, non-overlapping windows of `sizeMs`, aligned to the epoch: every event is in exactly one. */
import type { WindowBounds } from './operator.js';
import type { TimeWindowAssigner } from './window-assigner.js';

export class TumblingWindows implements TimeWindowAssigner {
  readonly kind = 'time';
  readonly merging = false;

  constructor(readonly sizeMs: number) {}

  assign(tsMs: number): WindowBounds[] {
    const windowStart = alignedStart(tsMs, this.sizeMs);
    return [{ windowStart, windowEnd: windowStart + this.sizeMs }];
  }
}

/** The latest multiple of `stepMs` at or before `tsMs` (also for times before 1970). */
export function alignedStart(tsMs: number, stepMs: number): number {
  return tsMs - (((tsMs % stepMs) + stepMs) % stepMs);
}
