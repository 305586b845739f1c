/**
 * Count windows: every `size` events of a key form one window, in arrival order, emitted as soon as the last one
 * arrives. They do not depend on event time, so they have no watermark, no lateness and no late events; the
 * result's windowStart and windowEnd are the earliest and the latest event time among its events.
 */
import type { CountWindowAssigner } from './window-assigner.js';

export class CountWindows implements CountWindowAssigner {
  readonly kind = 'count';

  constructor(readonly size: number) {}
}
