/**
 * More than `threshold` events per key within any `windowMs` of event time ("> 100 events per user per minute"):
 * a continuous sliding window ending at each event, (ts - windowMs, ts]. One alert per episode: the rule re-arms
 * at the first event whose window is back at or below the threshold. Only the latest threshold + 1 event times of
 * a key are kept, which is all the test needs, so memory per key is bounded whatever the rate.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { CepOperator, formatDuration, type CepRuleBase } from './cep-operator.js';
import { matchesFilter, type EventFilter } from './event-match.js';
import type { Alert } from './operator.js';

export interface CountInWindowRule extends CepRuleBase, EventFilter {
  kind: 'count_in_window';
  windowMs: number;
  /** Alert when the count exceeds this. */
  threshold: number;
}

type RateState = { recent: number[]; alerting: boolean };

export const COUNT_IN_WINDOW_KIND = 'count_in_window';

export class CountInWindowOperator extends CepOperator<RateState> {
  constructor(readonly definition: CountInWindowRule) {
    super(COUNT_IN_WINDOW_KIND, definition);
  }

  protected accepts(event: WireEvent): boolean {
    return matchesFilter(event, this.definition);
  }

  protected process(key: string, _event: WireEvent, tsMs: number): Alert[] {
    const { threshold, windowMs, eventType } = this.definition;
    const state = this.keys.get(key) ?? { recent: [], alerting: false };
    state.recent.push(tsMs);
    state.recent = state.recent.slice(-(threshold + 1)).filter((ts) => ts > tsMs - windowMs);
    this.keys.set(key, state);
    const over = state.recent.length > threshold;
    const starts = over && !state.alerting;
    state.alerting = over;
    if (!starts) return [];
    return [
      this.alert(key, tsMs, `more than ${threshold} ${eventType} events in ${formatDuration(windowMs)} for ${key}`, {
        threshold,
        windowMs,
        firstAt: state.recent[0]!,
      }),
    ];
  }

  /** Forgets keys with no event left in the window: their next event starts from zero either way. */
  protected override afterWatermark(watermarkMs: number): Alert[] {
    for (const [key, state] of this.keys) {
      const newest = state.recent[state.recent.length - 1];
      if (newest === undefined || newest <= watermarkMs - this.definition.windowMs) this.keys.delete(key);
    }
    return [];
  }
}
