/**
 * When to add or remove hub workers: a pure decision from the measured load (consumer lag and end-to-end latency),
 * with hysteresis and cool-downs so that the pool does not flap. `hub scale` (scale-supervisor.ts) feeds it one sample
 * per interval and applies what it returns; time is passed in.
 *
 * - Wanted by lag: ceil(lag / targetLagPerWorker) workers, the rule KEDA's JetStream scaler applies with
 *   `lagThreshold` (deploy/k8s/autoscaling), so both scale alike.
 * - Up when the lag wants more workers than run, or ingest latency p95 is above `latencyHighMs`, continuously for
 *   `scaleUpAfterMs`, and no change happened in the last `coolDownMs` (a new worker needs that long to start, take its
 *   partitions and show its effect). The target is the larger of "one more" and what the lag wants, up to max.
 * - Down, one worker at a time, when the lag would fit in half the workers that would remain and latency p95 is at
 *   most `latencyLowMs` (or nothing was measured: no traffic), continuously for `scaleDownAfterMs`, and no change
 *   happened in the last `scaleDownCoolDownMs`. The gap between the up and the down thresholds is the hysteresis:
 *   after a scale-up the lag must fall to a quarter of what triggered it before a worker is taken away.
 * - Outside [min, max] the count is corrected at once.
 */

export interface ScalingSettings {
  minWorkers: number;
  maxWorkers: number;
  /** Unprocessed messages one worker is expected to keep up with. */
  targetLagPerWorker: number;
  latencyHighMs: number;
  latencyLowMs: number;
  scaleUpAfterMs: number;
  scaleDownAfterMs: number;
  coolDownMs: number;
  scaleDownCoolDownMs: number;
}

export interface LoadSample {
  atMs: number;
  /** Messages stored and not yet processed (the largest of the hub's consumers). */
  lagMessages: number;
  /** Ingest latency p95 over the last interval; undefined when no message was written in it. */
  latencyP95Ms: number | undefined;
}

export type Direction = 'up' | 'down' | 'hold';

export interface ScalingDecision {
  direction: Direction;
  /** Workers wanted after this decision (= current for 'hold'). */
  target: number;
  reason: string;
}

export class ScalingPolicy {
  private highSince: number | undefined;
  private lowSince: number | undefined;
  private lastChangeAt = -Infinity;

  constructor(private readonly settings: ScalingSettings) {
    if (settings.minWorkers < 1 || settings.maxWorkers < settings.minWorkers) {
      throw new Error(`scaling: need 1 <= minWorkers <= maxWorkers, got ${settings.minWorkers} and ${settings.maxWorkers}`);
    }
  }

  /** The decision for `workers` running now; a change also starts its cool-down. */
  decide(sample: LoadSample, workers: number): ScalingDecision {
    const s = this.settings;
    const now = sample.atMs;
    if (workers < s.minWorkers) return this.change('up', s.minWorkers, now, `${workers} workers is below the minimum ${s.minWorkers}`);
    if (workers > s.maxWorkers) return this.change('down', s.maxWorkers, now, `${workers} workers is above the maximum ${s.maxWorkers}`);

    const lag = Math.max(0, sample.lagMessages);
    const wantedByLag = Math.ceil(lag / s.targetLagPerWorker);
    const latency = sample.latencyP95Ms;
    const highReasons: string[] = [];
    if (wantedByLag > workers) highReasons.push(`lag ${lag} messages > ${s.targetLagPerWorker} per worker x ${workers}`);
    if (latency !== undefined && latency > s.latencyHighMs) highReasons.push(`ingest latency p95 ${Math.round(latency)} ms > ${s.latencyHighMs} ms`);
    const low = lag * 2 <= s.targetLagPerWorker * (workers - 1) && (latency === undefined || latency <= s.latencyLowMs);

    this.highSince = highReasons.length > 0 ? (this.highSince ?? now) : undefined;
    this.lowSince = low ? (this.lowSince ?? now) : undefined;

    if (this.highSince !== undefined && workers < s.maxWorkers) {
      const heldMs = now - this.highSince;
      if (heldMs >= s.scaleUpAfterMs && now - this.lastChangeAt >= s.coolDownMs) {
        const target = Math.min(s.maxWorkers, Math.max(workers + 1, wantedByLag));
        return this.change('up', target, now, `${highReasons.join(' and ')} for ${seconds(heldMs)}`);
      }
    }
    if (this.lowSince !== undefined && workers > s.minWorkers) {
      const heldMs = now - this.lowSince;
      if (heldMs >= s.scaleDownAfterMs && now - this.lastChangeAt >= s.scaleDownCoolDownMs) {
        const latencyText = latency === undefined ? 'no messages written' : `ingest latency p95 ${Math.round(latency)} ms <= ${s.latencyLowMs} ms`;
        return this.change(
          'down',
          workers - 1,
          now,
          `lag ${lag} messages fits half of ${workers - 1} workers (${s.targetLagPerWorker} each) and ${latencyText} for ${seconds(heldMs)}`,
        );
      }
    }
    return { direction: 'hold', target: workers, reason: this.holdReason(highReasons, workers, now) };
  }

  private holdReason(highReasons: string[], workers: number, now: number): string {
    const s = this.settings;
    if (highReasons.length > 0) {
      if (workers >= s.maxWorkers) return `${highReasons.join(' and ')}, but already at the maximum ${s.maxWorkers}`;
      if (now - this.lastChangeAt < s.coolDownMs) return `${highReasons.join(' and ')}; cooling down`;
      return `${highReasons.join(' and ')}; waiting ${seconds(s.scaleUpAfterMs)} before adding`;
    }
    if (this.lowSince !== undefined && workers > s.minWorkers) return 'load low; waiting before removing a worker';
    return 'load within the band';
  }

  private change(direction: Direction, target: number, now: number, reason: string): ScalingDecision {
    this.lastChangeAt = now;
    this.highSince = undefined;
    this.lowSince = undefined;
    return { direction, target, reason };
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}
