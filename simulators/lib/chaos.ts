/**
 * Chaos for simulated traffic, seeded so a failing run can be repeated: per-source clock skew, out-of-order delivery
 * (events held back for a while), late events (timestamps far in the past), duplicates (the same payload twice) and
 * malformed payloads (bad JSON, wrong types, missing fields), plus bursts. Pure: the caller passes the time in and
 * sends what `due()` returns.
 */

export interface ChaosOptions {
  /** Share of events held back before sending, so they arrive after newer ones (0..1). */
  outOfOrderShare: number;
  /** Mean hold-back of an out-of-order event, ms (exponentially distributed, capped at 5x the mean). */
  meanDelayMs: number;
  /** Share of events whose timestamp is moved `lateByMs` into the past (late beyond any watermark). */
  lateShare: number;
  lateByMs: number;
  /** Share of events sent twice (identical payload and event id). */
  duplicateShare: number;
  /** Share of events replaced by a malformed payload. */
  malformedShare: number;
  /** Each source's clock is off by a fixed amount drawn uniformly from [-clockSkewMs, +clockSkewMs]. */
  clockSkewMs: number;
  /** Every `burstEverySeconds` the rate is multiplied by `burstFactor` for `burstSeconds` (0: no bursts). */
  burstEverySeconds: number;
  burstSeconds: number;
  burstFactor: number;
}

export const NO_CHAOS: ChaosOptions = {
  outOfOrderShare: 0,
  meanDelayMs: 0,
  lateShare: 0,
  lateByMs: 0,
  duplicateShare: 0,
  malformedShare: 0,
  clockSkewMs: 0,
  burstEverySeconds: 0,
  burstSeconds: 0,
  burstFactor: 1,
};

/** An event as the generator made it: its source (device or user), timestamp field, and body. */
export interface GeneratedEvent {
  source: string;
  /** Event time, ms; chaos may change it (skew, late) before the body is serialised. */
  timestampMs: number;
  body: Record<string, unknown>;
  /** Planted events (patterns the CEP rules must find) are never dropped, delayed, corrupted or made late. */
  planted?: boolean;
}

export interface OutgoingPayload {
  source: string;
  payload: string;
  /** What the chaos did to it, for the run's report. */
  kind: 'normal' | 'out_of_order' | 'late' | 'duplicate' | 'malformed';
  /** The event id, when the payload has one (malformed ones may not). */
  eventId?: string;
}

export interface ChaosCounts {
  normal: number;
  out_of_order: number;
  late: number;
  duplicate: number;
  malformed: number;
}

const MALFORMATIONS: Array<(body: Record<string, unknown>) => string> = [
  (body) => JSON.stringify(body).slice(0, -3), // truncated JSON
  (body) => JSON.stringify({ ...body, value: 'not-a-number' }), // wrong type
  (body) => {
    const { timestamp: _dropped, ...rest } = body; // required field missing
    return JSON.stringify(rest);
  },
  () => '{"event_id": "\u0000\u0000", ', // garbage
];

export class ChaosMixer {
  private readonly skew = new Map<string, number>();
  private held: Array<{ releaseAt: number; out: OutgoingPayload }> = [];
  private ready: OutgoingPayload[] = [];
  readonly counts: ChaosCounts = { normal: 0, out_of_order: 0, late: 0, duplicate: 0, malformed: 0 };

  constructor(
    private readonly options: ChaosOptions,
    private readonly random: () => number,
    private readonly eventIdField = 'event_id',
  ) {}

  /** The rate multiplier at `elapsedSeconds` into the run (bursts). */
  rateFactor(elapsedSeconds: number): number {
    const { burstEverySeconds, burstSeconds, burstFactor } = this.options;
    if (burstEverySeconds <= 0 || burstSeconds <= 0) return 1;
    return elapsedSeconds % burstEverySeconds >= burstEverySeconds - burstSeconds ? burstFactor : 1;
  }

  /** The fixed clock offset of a source, ms. */
  skewOf(source: string): number {
    let skew = this.skew.get(source);
    if (skew === undefined) {
      skew = Math.round((this.random() * 2 - 1) * this.options.clockSkewMs);
      this.skew.set(source, skew);
    }
    return skew;
  }

  /** Takes one event at `nowMs`; what is due now is returned by the next `due(nowMs)`. */
  push(event: GeneratedEvent, nowMs: number): void {
    const o = this.options;
    const body = { ...event.body };
    const id = typeof body[this.eventIdField] === 'string' ? (body[this.eventIdField] as string) : undefined;
    if (event.planted) {
      this.emit(nowMs, { source: event.source, payload: JSON.stringify({ ...body, timestamp: event.timestampMs }), kind: 'normal', ...(id ? { eventId: id } : {}) });
      return;
    }
    let timestamp = event.timestampMs + this.skewOf(event.source);
    const roll = this.random();
    if (roll < o.malformedShare) {
      const malform = MALFORMATIONS[Math.floor(this.random() * MALFORMATIONS.length)]!;
      this.emit(nowMs, { source: event.source, payload: malform({ ...body, timestamp }), kind: 'malformed' });
      return;
    }
    let kind: OutgoingPayload['kind'] = 'normal';
    if (roll < o.malformedShare + o.lateShare) {
      timestamp -= o.lateByMs;
      kind = 'late';
    }
    const out: OutgoingPayload = { source: event.source, payload: JSON.stringify({ ...body, timestamp }), kind, ...(id ? { eventId: id } : {}) };
    if (kind === 'normal' && this.random() < o.outOfOrderShare) {
      const delay = Math.min(5 * o.meanDelayMs, -Math.log(1 - this.random()) * o.meanDelayMs);
      this.held.push({ releaseAt: nowMs + delay, out: { ...out, kind: 'out_of_order' } });
    } else {
      this.emit(nowMs, out);
    }
    if (this.random() < o.duplicateShare) this.emit(nowMs, { ...out, kind: 'duplicate' });
  }

  /** Payloads to send at `nowMs`, in order; held-back ones once their time has come. */
  due(nowMs: number): OutgoingPayload[] {
    const ready = this.ready;
    this.ready = [];
    if (this.held.length > 0) {
      const still: typeof this.held = [];
      for (const h of this.held) {
        if (h.releaseAt <= nowMs) {
          ready.push(h.out);
          this.counts.out_of_order++;
        } else still.push(h);
      }
      this.held = still;
    }
    return ready;
  }

  /** Everything still held back, for the end of a run. */
  drain(): OutgoingPayload[] {
    const rest = [...this.ready, ...this.held.map((h) => h.out)];
    this.counts.out_of_order += this.held.length;
    this.ready = [];
    this.held = [];
    return rest;
  }

  private emit(_nowMs: number, out: OutgoingPayload): void {
    this.ready.push(out);
    this.counts[out.kind]++;
  }
}
