/**
 * A sequence of steps per key within a time bound, each step an event filter with a repeat count ("failed_login
 * x3 then login_success within 5 min"). The pattern matches when the key's latest relevant events (those matching
 * any step) are exactly the steps in order, each repeated `times`, and span at most `withinMs`. Events matching
 * no step are ignored, so they neither advance nor break the sequence; more repeats of the first step than
 * required still match (only the latest ones count). A match alerts once, and its events are not reused.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { CepOperator, formatDuration, type CepRuleBase } from './cep-operator.js';
import { matchesFilter, type EventFilter } from './event-match.js';
import type { Alert } from './operator.js';

export interface SequenceStep extends EventFilter {
  /** Consecutive events this step needs. @default 1 */
  times: number;
}

export interface SequenceWithinRule extends CepRuleBase {
  kind: 'sequence_within';
  steps: SequenceStep[];
  withinMs: number;
}

type RecentEvent = {
  tsMs: number;
  id: string;
  /** Bit i set: the event matches step i. */
  steps: number;
};

type SequenceState = { recent: RecentEvent[] };

export const SEQUENCE_WITHIN_KIND = 'sequence_within';

export class SequenceWithinOperator extends CepOperator<SequenceState> {
  /** Step index expected at each position of a match, e.g. [0, 0, 0, 1] for "x3 then x1". */
  private readonly expected: number[];

  constructor(readonly definition: SequenceWithinRule) {
    super(SEQUENCE_WITHIN_KIND, definition);
    this.expected = definition.steps.flatMap((step, i) => Array<number>(step.times).fill(i));
  }

  protected accepts(event: WireEvent): boolean {
    return this.definition.steps.some((step) => matchesFilter(event, step));
  }

  protected process(key: string, event: WireEvent, tsMs: number): Alert[] {
    let steps = 0;
    this.definition.steps.forEach((step, i) => {
      if (matchesFilter(event, step)) steps |= 1 << i;
    });
    const state = this.keys.get(key) ?? { recent: [] };
    // Only the latest `expected.length` relevant events within the bound can take part in a match.
    state.recent = [...state.recent, { tsMs, id: event.id, steps }]
      .slice(-this.expected.length)
      .filter((recent) => tsMs - recent.tsMs <= this.definition.withinMs);
    const matched = state.recent.length === this.expected.length && state.recent.every((recent, i) => (recent.steps >> this.expected[i]!) & 1);
    if (!matched) {
      this.keys.set(key, state);
      return [];
    }
    this.keys.delete(key);
    const startedAt = state.recent[0]!.tsMs;
    return [
      this.alert(key, tsMs, `${this.describe()} within ${formatDuration(this.definition.withinMs)} for ${key}`, {
        startedAt,
        durationMs: tsMs - startedAt,
        events: state.recent.map((recent) => recent.id),
      }),
    ];
  }

  /** Drops events too old to be in any match that can still complete; forgets keys left with none. */
  protected override afterWatermark(watermarkMs: number): Alert[] {
    for (const [key, state] of this.keys) {
      state.recent = state.recent.filter((recent) => watermarkMs - recent.tsMs <= this.definition.withinMs);
      if (state.recent.length === 0) this.keys.delete(key);
    }
    return [];
  }

  private describe(): string {
    return this.definition.steps
      .map((step) => {
        const what = step.where ? Object.values(step.where).join(',') : step.eventType;
        return step.times > 1 ? `${what} x${step.times}` : what;
      })
      .join(' then ');
  }
}
