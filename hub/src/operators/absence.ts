/**
 * No event of a type for a key for `silenceMs` ("device silent for 60 s"). Driven by event time: the silence is
 * known once the watermark reaches the key's last event + silenceMs (no event of the key can still arrive before
 * that), or once the key's next event shows the gap. One alert per silence episode; the key's next event re-arms
 * it. Only keys seen at least once are watched.
 */
import type { WireEvent } from '../../../shared/wire.js';
import { CepOperator, formatDuration, type CepRuleBase } from './cep-operator.js';
import { matchesFilter, type EventFilter } from './event-match.js';
import type { Alert } from './operator.js';

export interface AbsenceRule extends CepRuleBase, EventFilter {
  kind: 'absence';
  silenceMs: number;
}

type SilenceState = { lastTs: number; alerted: boolean };

export const ABSENCE_KIND = 'absence';

export class AbsenceOperator extends CepOperator<SilenceState> {
  constructor(readonly definition: AbsenceRule) {
    super(ABSENCE_KIND, definition);
  }

  protected accepts(event: WireEvent): boolean {
    return matchesFilter(event, this.definition);
  }

  protected process(key: string, _event: WireEvent, tsMs: number): Alert[] {
    const state = this.keys.get(key);
    // The gap before this event may itself be a silence the watermark jumped over.
    const alerts = state && !state.alerted && tsMs - state.lastTs >= this.definition.silenceMs ? [this.silenceAlert(key, state.lastTs)] : [];
    this.keys.set(key, { lastTs: Math.max(state?.lastTs ?? tsMs, tsMs), alerted: false });
    return alerts;
  }

  protected override afterWatermark(watermarkMs: number): Alert[] {
    const alerts: Alert[] = [];
    for (const [key, state] of this.keys) {
      if (state.alerted || watermarkMs - state.lastTs < this.definition.silenceMs) continue;
      state.alerted = true;
      alerts.push(this.silenceAlert(key, state.lastTs));
    }
    return alerts.sort((a, b) => a.ts - b.ts || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private silenceAlert(key: string, lastTs: number): Alert {
    const { eventType, silenceMs } = this.definition;
    return this.alert(key, lastTs + silenceMs, `no ${eventType} from ${key} for ${formatDuration(silenceMs)}`, { lastSeenAt: lastTs, silenceMs });
  }
}
