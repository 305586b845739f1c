/**
 * Event-time tumbling windows per (device, metric): count, sum, min, max and last value.
 *
 * Each key has its own watermark (its highest event time minus the allowed lateness), so one device's skewed
 * clock does not make every other device's events late. A window is emitted when its key's watermark passes its
 * end, or when the key has been silent for `idleMs` of processing time (so a device that stops does not hold its
 * last window forever). An event whose window was already emitted is late: it is reported, not counted.
 *
 * Pure logic: time comes in as arguments; persistence is the caller's (see the state snapshot methods).
 */

export interface AggregationRule {
  /** Event type to aggregate, e.g. `device.telemetry`. */
  type: string;
  /** `raw`: forward events only; `aggregate`: forward window results only; `both`. */
  mode: 'raw' | 'aggregate' | 'both';
  windowMs: number;
  allowedLatenessMs: number;
  idleMs: number;
}

export interface AggregateInput {
  device: string;
  metric: string;
  /** Event time, epoch ms. */
  ts: number;
  value: number;
}

export interface WindowState {
  key: string;
  device: string;
  metric: string;
  start: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  lastTs: number;
  last: number;
}

export interface KeyState {
  key: string;
  /** Highest event time seen for the key. */
  maxTs: number;
  /** Processing time of the key's last event, epoch ms. */
  seenAt: number;
}

export interface WindowResult {
  device: string;
  metric: string;
  start: number;
  windowMs: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  last: number;
}

/** What changed since the last snapshot: windows to upsert or delete, keys to upsert. */
export interface AggregatorChanges {
  upsertWindows: WindowState[];
  deleteWindows: Array<{ key: string; start: number }>;
  upsertKeys: KeyState[];
}

export class TumblingAggregator {
  private readonly windows = new Map<string, Map<number, WindowState>>();
  private readonly keys = new Map<string, KeyState>();
  private changedWindows = new Map<string, WindowState>();
  private deletedWindows = new Map<string, { key: string; start: number }>();
  private changedKeys = new Set<string>();

  constructor(readonly rule: AggregationRule) {}

  /** Restores state saved from `changes()` (after a restart). */
  restore(windows: WindowState[], keys: KeyState[]): void {
    for (const key of keys) this.keys.set(key.key, { ...key });
    for (const window of windows) this.windowsOf(window.key).set(window.start, { ...window });
  }

  /** Adds one event; returns false when it is late (its window was already emitted). */
  add(input: AggregateInput, nowMs: number): boolean {
    const key = `${input.device}\u0000${input.metric}`;
    const start = Math.floor(input.ts / this.rule.windowMs) * this.rule.windowMs;
    let keyState = this.keys.get(key);
    const windows = this.windowsOf(key);
    let window = windows.get(start);
    // Late means: the window is no longer open and the key's watermark has passed its end (it was emitted).
    if (!window && keyState && start + this.rule.windowMs <= keyState.maxTs - this.rule.allowedLatenessMs) return false;
    if (!keyState) {
      keyState = { key, maxTs: input.ts, seenAt: nowMs };
      this.keys.set(key, keyState);
    }
    keyState.maxTs = Math.max(keyState.maxTs, input.ts);
    keyState.seenAt = nowMs;
    this.changedKeys.add(key);
    if (!window) {
      window = { key, device: input.device, metric: input.metric, start, count: 0, sum: 0, min: Infinity, max: -Infinity, lastTs: -Infinity, last: 0 };
      windows.set(start, window);
    }
    window.count++;
    window.sum += input.value;
    window.min = Math.min(window.min, input.value);
    window.max = Math.max(window.max, input.value);
    if (input.ts >= window.lastTs) {
      window.lastTs = input.ts;
      window.last = input.value;
    }
    this.changedWindows.set(`${key}\u0000${start}`, window);
    return true;
  }

  /** Emits and forgets every window its key's watermark has passed, or whose key has been idle for idleMs. */
  emitReady(nowMs: number): WindowResult[] {
    const results: WindowResult[] = [];
    for (const [key, windows] of this.windows) {
      const keyState = this.keys.get(key)!;
      const watermark = keyState.maxTs - this.rule.allowedLatenessMs;
      const idle = nowMs - keyState.seenAt >= this.rule.idleMs;
      let lastEnd = 0;
      for (const [start, window] of windows) {
        if (!idle && start + this.rule.windowMs > watermark) continue;
        const { device, metric, count, sum, min, max, last } = window;
        results.push({ device, metric, start, windowMs: this.rule.windowMs, count, sum, min, max, last });
        lastEnd = Math.max(lastEnd, start + this.rule.windowMs);
        windows.delete(start);
        const id = `${key}\u0000${start}`;
        this.changedWindows.delete(id);
        this.deletedWindows.set(id, { key, start });
      }
      if (idle && windows.size === 0) {
        // An idle key closes all its windows; its watermark moves past them so a straggler counts as late.
        keyState.maxTs = Math.max(keyState.maxTs, lastEnd + this.rule.allowedLatenessMs);
        this.changedKeys.add(key);
        this.windows.delete(key);
      }
    }
    return results.sort((a, b) => a.start - b.start);
  }

  /** Changes since the last call, for the caller to persist in the same transaction as the events. */
  changes(): AggregatorChanges {
    const changes: AggregatorChanges = {
      upsertWindows: [...this.changedWindows.values()],
      deleteWindows: [...this.deletedWindows.values()],
      upsertKeys: [...this.changedKeys].map((k) => this.keys.get(k)!).filter(Boolean),
    };
    this.changedWindows = new Map();
    this.deletedWindows = new Map();
    this.changedKeys = new Set();
    return changes;
  }

  openWindows(): number {
    let n = 0;
    for (const windows of this.windows.values()) n += windows.size;
    return n;
  }

  private windowsOf(key: string): Map<number, WindowState> {
    let windows = this.windows.get(key);
    if (!windows) this.windows.set(key, (windows = new Map()));
    return windows;
  }
}

