/**
 * Data-quality thresholds become alerts: the `alerts` of each schemas/<type>/quality.json are checked against the
 * minutes of each source, every partition's row of a minute added up (data_quality) and the source's refusals of
 * that minute counted (edge_refusals). A measure is raised when it breached in each of the last `forMinutes`
 * minutes of the source (consecutive minutes, by event time), once per episode, and resolved (severity info,
 * details.state = resolved) when the source's latest minute is fine again:
 *
 *   quality.<type>.validity         events / (events + refusals) below validityBelow
 *   quality.<type>.completeness     complete / events below completenessBelow
 *   quality.<type>.lag              ingest lag p95 (worst partition) above lagP95AboveMs
 *   quality.<type>.duplicates       duplicates / events above duplicateShareAbove
 *   quality.<type>.future           events from the future / events above futureShareAbove
 *   quality.<type>.out_of_range     out-of-range / events above outOfRangeShareAbove
 *
 * The alert's `ts` is the first minute of the breaching run, so its identity (rule, key = source, ts) and its
 * message id in the ALERTS stream stay the same on every later check and on every hub. Silence and drift are alerts
 * of the operators themselves (quality.<type>.silent, quality.<type>.drift), raised in event time.
 *
 * The evaluator is pure (minutes in, alerts out); QualityAlertChecker reads the minutes from QuestDB.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../../../shared/logger.js';
import { errorMessage } from '../errors.js';
import type { Alert, Severity } from '../operators/operator.js';
import { QUALITY_MINUTE_MS } from '../operators/data-quality.js';
import type { QuestDbRest } from '../sinks/questdb-rest.js';
import { DATA_QUALITY_TABLE, EDGE_REFUSALS_TABLE } from '../sinks/questdb-analytics-sink.js';
import type { QualityAlertThresholds } from './quality-rules.js';

/** One source's minute, summed over partitions. */
export interface SourceMinute {
  /** Minute start, epoch ms. */
  ts: number;
  source: string;
  events: number;
  complete: number;
  duplicates: number;
  future: number;
  outOfRange: number;
  /** Worst partition's ingest lag p95; null without events. */
  lagP95Ms: number | null;
  /** Events the source's agent refused in this minute (refusal time). */
  refusals: number;
}

interface Measure {
  name: string;
  /** The measured value of a minute, or undefined when it cannot be measured (no events). */
  value: (m: SourceMinute) => number | undefined;
  threshold: (t: QualityAlertThresholds) => number | undefined;
  breaches: (value: number, threshold: number) => boolean;
  describe: (value: number, threshold: number) => string;
}

const share = (n: number, d: number) => (d > 0 ? n / d : undefined);
const pct = (v: number) => `${(v * 100).toFixed(2)} %`;

export const QUALITY_MEASURES: readonly Measure[] = [
  {
    name: 'validity',
    value: (m) => share(m.events, m.events + m.refusals),
    threshold: (t) => t.validityBelow,
    breaches: (v, t) => v < t,
    describe: (v, t) => `validity ${pct(v)} below ${pct(t)}`,
  },
  {
    name: 'completeness',
    value: (m) => share(m.complete, m.events),
    threshold: (t) => t.completenessBelow,
    breaches: (v, t) => v < t,
    describe: (v, t) => `completeness ${pct(v)} below ${pct(t)}`,
  },
  {
    name: 'lag',
    value: (m) => m.lagP95Ms ?? undefined,
    threshold: (t) => t.lagP95AboveMs,
    breaches: (v, t) => v > t,
    describe: (v, t) => `ingest lag p95 ${Math.round(v)} ms above ${t} ms`,
  },
  {
    name: 'duplicates',
    value: (m) => share(m.duplicates, m.events),
    threshold: (t) => t.duplicateShareAbove,
    breaches: (v, t) => v > t,
    describe: (v, t) => `duplicates ${pct(v)} above ${pct(t)}`,
  },
  {
    name: 'future',
    value: (m) => share(m.future, m.events),
    threshold: (t) => t.futureShareAbove,
    breaches: (v, t) => v > t,
    describe: (v, t) => `events from the future ${pct(v)} above ${pct(t)}`,
  },
  {
    name: 'out_of_range',
    value: (m) => share(m.outOfRange, m.events),
    threshold: (t) => t.outOfRangeShareAbove,
    breaches: (v, t) => v > t,
    describe: (v, t) => `out-of-range values ${pct(v)} above ${pct(t)}`,
  },
];

export class QualityAlertEvaluator {
  /** Raised alerts by `${rule}|${source}`, until resolved. */
  private readonly raised = new Map<string, Alert>();

  constructor(private readonly severity: Severity = 'warning') {}

  /** The alerts the minutes of one event type raise or resolve (minutes of any sources, any order). */
  evaluate(eventType: string, minutes: readonly SourceMinute[], thresholds: QualityAlertThresholds): Alert[] {
    const version = createHash('sha256').update(JSON.stringify(thresholds)).digest('hex').slice(0, 16);
    const bySource = new Map<string, SourceMinute[]>();
    for (const m of minutes) {
      const list = bySource.get(m.source);
      if (list) list.push(m);
      else bySource.set(m.source, [m]);
    }
    const alerts: Alert[] = [];
    for (const [source, list] of bySource) {
      list.sort((a, b) => a.ts - b.ts);
      for (const measure of QUALITY_MEASURES) {
        const threshold = measure.threshold(thresholds);
        const rule = `quality.${eventType}.${measure.name}`;
        const id = `${rule}|${source}`;
        const earlier = this.raised.get(id);
        if (threshold === undefined) continue;
        // The run of consecutive breaching minutes that ends at the source's latest minute.
        let start = list.length;
        let last: number | undefined;
        for (let i = list.length - 1; i >= 0; i--) {
          const value = measure.value(list[i]!);
          const consecutive = i === list.length - 1 || list[i + 1]!.ts - list[i]!.ts === QUALITY_MINUTE_MS;
          if (value === undefined || !consecutive || !measure.breaches(value, threshold)) break;
          last ??= value;
          start = i;
        }
        const run = list.length - start;
        if (run >= thresholds.forMinutes && last !== undefined) {
          if (earlier) continue;
          const first = list[start]!;
          const alert: Alert = {
            type: 'alert',
            rule,
            key: source,
            severity: this.severity,
            ts: first.ts,
            message: `${eventType} from ${source}: ${measure.describe(last, threshold)} for ${run} minutes`,
            details: { state: 'firing', measure: measure.name, value: last, threshold, minutes: run },
            ruleVersion: version,
          };
          this.raised.set(id, alert);
          alerts.push(alert);
        } else if (earlier && run === 0 && list.length > 0) {
          this.raised.delete(id);
          // The first fine minute after the alert's: the same time (and message id) whichever check, on whichever hub.
          const fine = list.find((m) => {
            if (m.ts <= earlier.ts) return false;
            const value = measure.value(m);
            return value !== undefined && !measure.breaches(value, threshold);
          });
          alerts.push({
            type: 'alert',
            rule,
            key: source,
            severity: 'info',
            ts: (fine ?? list[list.length - 1]!).ts,
            message: `resolved: ${earlier.message}`,
            details: { state: 'resolved', firedAt: earlier.ts },
            ruleVersion: version,
          });
        }
      }
    }
    return alerts;
  }
}

export interface QualityAlertCheckerOptions {
  rest: Pick<QuestDbRest, 'exec'>;
  thresholds: () => Map<string, QualityAlertThresholds>;
  raise: (alerts: readonly Alert[]) => void;
  evaluateIntervalMs: number;
  log: Logger;
  /** How far back (wall clock of the rows' event time is not used: the newest minutes of each source are). @default 120 */
  lookbackMinutes?: number;
  tables?: { dataQuality: string; edgeRefusals: string };
}

/** Reads each type's recent minutes from QuestDB every interval and raises what the evaluator finds. */
export class QualityAlertChecker {
  private readonly evaluator = new QualityAlertEvaluator();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly options: QualityAlertCheckerOptions) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.check()
        .then(() => undefined)
        .catch((error: unknown) => this.options.log.warn({ err: errorMessage(error) }, 'quality thresholds not checked; next interval'))
        .finally(() => {
          this.running = undefined;
        });
    }, this.options.evaluateIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One check of every type with thresholds. */
  async check(): Promise<Alert[]> {
    const raised: Alert[] = [];
    for (const [eventType, thresholds] of this.options.thresholds()) {
      if (QUALITY_MEASURES.every((m) => m.threshold(thresholds) === undefined)) continue;
      const minutes = await this.minutes(eventType);
      const alerts = this.evaluator.evaluate(eventType, minutes, thresholds);
      if (alerts.length > 0) {
        this.options.raise(alerts);
        raised.push(...alerts);
      }
    }
    return raised;
  }

  private async minutes(eventType: string): Promise<SourceMinute[]> {
    const tables = this.options.tables ?? { dataQuality: DATA_QUALITY_TABLE, edgeRefusals: EDGE_REFUSALS_TABLE };
    const lookback = this.options.lookbackMinutes ?? 120;
    const type = eventType.replace(/'/g, "''");
    // The newest minute of the type bounds the lookback: event time, not the wall clock (a drained backlog's
    // minutes are hours old and still judged).
    const newest = (await this.options.rest.exec(`SELECT max(ts) FROM ${tables.dataQuality} WHERE event_type = '${type}'`)).dataset?.[0]?.[0];
    if (typeof newest !== 'string') return [];
    const newestMs = Date.parse(newest);
    const from = (newestMs - lookback * QUALITY_MINUTE_MS) * 1000;
    const quality = await this.options.rest.exec(
      `SELECT ts, source, sum(events) events, sum(complete) complete, sum(duplicates) duplicates, sum(future) future, sum(out_of_range) out_of_range, max(lag_p95_ms) lag_p95 ` +
        `FROM ${tables.dataQuality} WHERE event_type = '${type}' AND ts >= ${from} GROUP BY ts, source ORDER BY ts`,
    );
    const minutes = new Map<string, SourceMinute>();
    for (const row of quality.dataset ?? []) {
      const [ts, source, events, complete, duplicates, future, outOfRange, lag] = row as [string, string, number, number, number, number, number, number | null];
      const minute: SourceMinute = { ts: Date.parse(ts), source, events, complete, duplicates, future, outOfRange, lagP95Ms: lag, refusals: 0 };
      minutes.set(`${source}|${minute.ts}`, minute);
    }
    if (minutes.size === 0) return [];
    const refusals = await this.options.rest.exec(
      `SELECT timestamp_floor('m', ts) minute, source, count() n FROM ${tables.edgeRefusals} ` +
        `WHERE event_type = '${type}' AND ts >= ${from} GROUP BY minute, source`,
    ).catch(() => ({ dataset: [] as unknown[][] }));
    for (const row of refusals.dataset ?? []) {
      const [ts, source, n] = row as [string, string, number];
      const minute = minutes.get(`${source}|${Date.parse(ts)}`);
      // A minute with refusals only (every event of the source refused) has no row in data_quality: judged as such,
      // but only once the type's minutes got that far (rows appear when the watermark passes the minute's end; the
      // refusals of the minutes still open are already there).
      if (minute) minute.refusals = n;
      else if (Date.parse(ts) <= newestMs) minutes.set(`${source}|${Date.parse(ts)}`, { ts: Date.parse(ts), source, events: 0, complete: 0, duplicates: 0, future: 0, outOfRange: 0, lagP95Ms: null, refusals: n });
    }
    return [...minutes.values()];
  }
}
