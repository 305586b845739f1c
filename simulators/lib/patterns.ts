/**
 * Patterns a scenario plants in its traffic so that the run can report found vs planted: each is a short script of
 * events for one device or user that one of the ready rules (hub/rules) must turn into an alert. Pure: offsets are
 * relative to the pattern's start; the runner sends them at their time, with the current time as event time.
 */

export type PatternName = 'overheating' | 'suspicious-login' | 'hyperactive-user' | 'device-silent';

export interface PlantedEvent {
  /** Offset from the pattern's start, ms. */
  atMs: number;
  channel: 'mqtt' | 'http';
  /** Body without `timestamp` (the sender adds the send time). */
  body: Record<string, unknown>;
}

export interface PlantedPattern {
  /** The rule that must find it (its name in hub/rules). */
  rule: PatternName;
  /** The rule's key: the device id or the user id. */
  key: string;
  /** When the pattern starts, ms after the run started. */
  startMs: number;
  events: PlantedEvent[];
  /** How long after the pattern's last event its alert can come at the earliest (the rule's own time). */
  settleMs: number;
}

/** The rules' parameters, as in hub/rules (a scenario against changed rules must change these too). */
const OVERHEAT = { value: 90, everyMs: 5000, forMs: 40_000 }; // overheating: > 80 for 30 s, readings <= 20 s apart
const LOGIN = { failures: 3, gapMs: 2000 }; // suspicious-login: failed_login x3 then login_success within 5 min
const HYPERACTIVE = { events: 130, overMs: 30_000 }; // hyperactive-user: > 100 app events in 60 s
const SILENCE = { readings: 5, everyMs: 2000, silentMs: 60_000 }; // device-silent: no telemetry for 60 s

export function plantPattern(rule: PatternName, key: string, startMs: number, idPrefix: string): PlantedPattern {
  let n = 0;
  const id = () => `${idPrefix}-${rule}-${key}-${n++}`;
  const telemetry = (atMs: number, value: number): PlantedEvent => ({
    atMs,
    channel: 'mqtt',
    body: { event_id: id(), device_id: key, metric: 'temperature', value, unit: 'C' },
  });
  const app = (atMs: number, eventType: string): PlantedEvent => ({
    atMs,
    channel: 'http',
    body: { type: 'app.event', event_id: id(), event_type: eventType, user_id: key, session_id: `${key}-s`, context: { device_type: 'web', location: 'DE' } },
  });
  switch (rule) {
    case 'overheating': {
      const events: PlantedEvent[] = [];
      for (let at = 0; at <= OVERHEAT.forMs; at += OVERHEAT.everyMs) events.push(telemetry(at, OVERHEAT.value));
      return { rule, key, startMs, events, settleMs: 0 };
    }
    case 'suspicious-login': {
      const events = Array.from({ length: LOGIN.failures }, (_, i) => app(i * LOGIN.gapMs, 'failed_login'));
      events.push(app(LOGIN.failures * LOGIN.gapMs, 'login_success'));
      return { rule, key, startMs, events, settleMs: 0 };
    }
    case 'hyperactive-user': {
      const events = Array.from({ length: HYPERACTIVE.events }, (_, i) => app(Math.floor((i * HYPERACTIVE.overMs) / HYPERACTIVE.events), 'page_view'));
      return { rule, key, startMs, events, settleMs: 0 };
    }
    case 'device-silent': {
      const events = Array.from({ length: SILENCE.readings }, (_, i) => telemetry(i * SILENCE.everyMs, 21));
      return { rule, key, startMs, events, settleMs: SILENCE.silentMs };
    }
  }
}

/** When the last planted alert can come at the earliest, ms after the run started. */
export function lastSettleMs(patterns: readonly PlantedPattern[]): number {
  return Math.max(0, ...patterns.map((p) => p.startMs + (p.events[p.events.length - 1]?.atMs ?? 0) + p.settleMs));
}
