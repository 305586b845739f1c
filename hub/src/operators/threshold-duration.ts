/**
 * A numeric field's condition held continuously for a duration, per key ("temperature > 80 for 30 s"): the
 * episode starts at the first reading that meets the condition and alerts once a reading at least `durationMs`
 * later still meets it, with no reading in between that broke it. One alert per episode; a reading that breaks
 * the condition ends the episode and re-arms the rule. Readings are evidence: without a reading the duration is
 * not known to have passed, so the alert comes with the first reading at or after it.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { CepOperator, formatDuration, type CepRuleBase } from './cep-operator.js';
import { compare, finiteNumber, type CompareOp } from './compare.js';
import { fieldValue, matchesFilter, type EventFilter } from './event-match.js';
import type { Alert } from './operator.js';

export interface ThresholdDurationRule extends CepRuleBase, EventFilter {
  kind: 'threshold_duration';
  /** Numeric field compared (dotted body path), e.g. `value`. */
  field: string;
  op: CompareOp;
  value: number;
  durationMs: number;
  /** Readings further apart than this end the episode (nothing says the condition held in between). @default unset */
  maxGapMs?: number;
}

type EpisodeState = {
  /** Event time of the first reading of the episode. */
  since: number;
  /** Event time of its latest reading. */
  lastTs: number;
  alerted: boolean;
};

export const THRESHOLD_DURATION_KIND = 'threshold_duration';

export class ThresholdDurationOperator extends CepOperator<EpisodeState> {
  constructor(readonly definition: ThresholdDurationRule) {
    super(THRESHOLD_DURATION_KIND, definition);
  }

  protected accepts(event: WireEvent): boolean {
    return matchesFilter(event, this.definition);
  }

  protected process(key: string, event: WireEvent, tsMs: number): Alert[] {
    const { field, op, value: threshold, durationMs, maxGapMs } = this.definition;
    const reading = finiteNumber(fieldValue(event, field));
    if (reading === undefined) return [];
    let episode = this.keys.get(key);
    if (episode && maxGapMs !== undefined && tsMs - episode.lastTs > maxGapMs) episode = undefined;
    if (!compare(reading, op, threshold)) {
      this.keys.delete(key);
      return [];
    }
    if (!episode) episode = { since: tsMs, lastTs: tsMs, alerted: false };
    episode.lastTs = tsMs;
    this.keys.set(key, episode);
    if (episode.alerted || tsMs - episode.since < durationMs) return [];
    episode.alerted = true;
    return [
      this.alert(key, tsMs, `${field} ${op} ${threshold} for ${formatDuration(durationMs)} on ${key} (now ${reading})`, {
        field,
        op,
        threshold,
        value: reading,
        since: episode.since,
        durationMs,
      }),
    ];
  }
}
