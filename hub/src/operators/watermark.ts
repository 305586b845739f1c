/**
 * Event-time watermarks per partition, combined into the one watermark the operators are driven by.
 *
 * A partition's watermark is its highest event time minus `maxOutOfOrdernessMs` (bounded out-of-orderness, as
 * Flink's BoundedOutOfOrdernessWatermarks): events of that partition may arrive out of order by up to that much.
 * The combined watermark is the minimum over the active partitions, so no partition's events are declared late
 * because another partition is ahead. A partition that received nothing for `idleTimeoutMs` of processing time is
 * idle and stops holding the combined watermark back (otherwise one quiet edge agent would stall every window);
 * it becomes active again with its next event. The combined watermark never goes back.
 *
 * Processing time (`nowMs`) is passed in; nothing here reads a clock.
 */
export interface WatermarkSettings {
  /** How far behind a partition's newest event another of its events may still be in time. @default 5000 */
  maxOutOfOrdernessMs: number;
  /** Processing time without events after which a partition no longer holds back the watermark. @default 30000 */
  idleTimeoutMs: number;
  /**
   * When every partition is idle, let event time advance with processing time from the last event seen (so a
   * rule such as "device silent" fires even when all traffic stops). Events that then arrive are late.
   * @default false
   */
  advanceWhenAllIdle: boolean;
}

/** JSON Schema of the settings, for the hub config (ajv, defaults filled in). */
export const watermarkSettingsSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'Event-time watermark: bounded out-of-orderness per partition, idle partitions ignored.',
  properties: {
    maxOutOfOrdernessMs: {
      type: 'integer',
      minimum: 0,
      default: 5000,
      description: "How far behind a partition's newest event another of its events may still be in time.",
    },
    idleTimeoutMs: {
      type: 'integer',
      minimum: 1,
      default: 30000,
      description: 'Processing time without events after which a partition no longer holds back the watermark.',
    },
    advanceWhenAllIdle: {
      type: 'boolean',
      default: false,
      description: 'When every partition is idle, advance event time with processing time from the last event.',
    },
  },
} as const;

type PartitionState = {
  /** Highest event time seen, epoch ms. */
  maxEventTimeMs: number;
  /** Processing time of the partition's last event, epoch ms. */
  lastSeenAtMs: number;
};

export interface PartitionWatermark {
  partition: string;
  watermark: number;
  idle: boolean;
}

/** Plain JSON, for a checkpoint. */
export type WatermarkSnapshot = {
  partitions: Array<{ partition: string } & PartitionState>;
  combined: number | null;
};

export class PartitionedWatermark {
  private readonly partitions = new Map<string, PartitionState>();
  private combined: number | null = null;

  constructor(readonly settings: WatermarkSettings) {}

  /** Records an event of `partition` with event time `eventTimeMs`, received at processing time `nowMs`. */
  observe(partition: string, eventTimeMs: number, nowMs: number): void {
    const state = this.partitions.get(partition);
    if (!state) {
      this.partitions.set(partition, { maxEventTimeMs: eventTimeMs, lastSeenAtMs: nowMs });
      return;
    }
    state.maxEventTimeMs = Math.max(state.maxEventTimeMs, eventTimeMs);
    state.lastSeenAtMs = Math.max(state.lastSeenAtMs, nowMs);
  }

  /** The combined watermark at processing time `nowMs`, or null before any event. */
  current(nowMs: number): number | null {
    let activeMin = Infinity;
    let idleMax = -Infinity;
    let lastSeenAtMs = -Infinity;
    for (const { watermark, idle, state } of this.states(nowMs)) {
      if (idle) idleMax = Math.max(idleMax, watermark);
      else activeMin = Math.min(activeMin, watermark);
      lastSeenAtMs = Math.max(lastSeenAtMs, state.lastSeenAtMs);
    }
    let candidate: number | null = null;
    if (activeMin !== Infinity) candidate = activeMin;
    else if (idleMax !== -Infinity) {
      // Every partition idle: none holds the others back, so event time is at least the most advanced one.
      candidate = this.settings.advanceWhenAllIdle ? idleMax + (nowMs - lastSeenAtMs) : idleMax;
    }
    if (candidate !== null && (this.combined === null || candidate > this.combined)) this.combined = candidate;
    return this.combined;
  }

  /** Each partition's watermark and whether it is idle (for status pages). */
  partitionWatermarks(nowMs: number): PartitionWatermark[] {
    return [...this.states(nowMs)].map(({ partition, watermark, idle }) => ({ partition, watermark, idle }));
  }

  snapshot(): WatermarkSnapshot {
    return {
      partitions: [...this.partitions].map(([partition, state]) => ({ partition, ...state })),
      combined: this.combined,
    };
  }

  restore(snapshot: WatermarkSnapshot): void {
    this.partitions.clear();
    for (const { partition, maxEventTimeMs, lastSeenAtMs } of snapshot.partitions) {
      this.partitions.set(partition, { maxEventTimeMs, lastSeenAtMs });
    }
    this.combined = snapshot.combined;
  }

  private *states(nowMs: number): Iterable<{ partition: string; watermark: number; idle: boolean; state: PartitionState }> {
    for (const [partition, state] of this.partitions) {
      yield {
        partition,
        state,
        watermark: state.maxEventTimeMs - this.settings.maxOutOfOrdernessMs,
        idle: nowMs - state.lastSeenAtMs >= this.settings.idleTimeoutMs,
      };
    }
  }
}
