/**
 * Pipeline alerts: conditions on the dashboard's snapshots that an operator must hear about, each raised once per
 * episode after it held for a while, and resolved (an `info` alert with `details.state = resolved`) when it clears:
 *
 *   pipeline.consumer_lag    a durable consumer on EVENTS has more than `consumerLagMessages` pending       (per consumer)
 *   pipeline.edge_silent     no status report from an agent for `edgeSilentMs`                            (per agent)
 *   pipeline.outbox_filling  an agent's outbox is more than `outboxFill` of its bound                       (per agent)
 *   pipeline.edge_errors     an agent refuses more than `edgeErrorRatio` of its input                        (per agent)
 *   pipeline.hub_errors      the hub dead-letters events or its QuestDB flushes fail                        (per hub)
 *   pipeline.questdb_down    QuestDB does not answer /ping                                                  (one)
 *   pipeline.node_behind     a NATS node of the EVENTS stream is offline or not current                    (per node)
 *
 * Pure: time is the snapshots' `at`. The alert's `ts` is when the condition began, so its identity (rule, key, ts)
 * and its message id in the ALERTS stream stay the same whichever later snapshot raises it.
 */
import { createHash } from 'node:crypto';
import type { DashboardSnapshot } from '../dashboard/pipeline-observer.js';
import type { Alert, Severity } from '../operators/operator.js';

export interface PipelineAlertThresholds {
  consumerLagMessages: number;
  edgeSilentMs: number;
  outboxFill: number;
  edgeErrorRatio: number;
  /** How long a condition must hold before it is raised (edge_silent has its own threshold and fires at once). */
  forMs: number;
}

export const DEFAULT_PIPELINE_ALERT_THRESHOLDS: Readonly<PipelineAlertThresholds> = Object.freeze({
  consumerLagMessages: 10_000,
  edgeSilentMs: 60_000,
  outboxFill: 0.8,
  edgeErrorRatio: 0.05,
  forMs: 30_000,
});

interface Condition {
  rule: string;
  key: string;
  severity: Severity;
  message: string;
  details: Record<string, number | string | boolean>;
  /** Raise as soon as it holds (its threshold is a duration already). */
  immediate?: boolean;
}

interface Episode {
  since: number;
  raised: Alert | undefined;
}

export class PipelineAlertEvaluator {
  private readonly episodes = new Map<string, Episode>();
  /** Lineage (rule_version in QuestDB): the thresholds that raised an alert, as a content hash. */
  readonly version: string;

  constructor(private readonly thresholds: PipelineAlertThresholds = DEFAULT_PIPELINE_ALERT_THRESHOLDS) {
    const { consumerLagMessages, edgeSilentMs, outboxFill, edgeErrorRatio, forMs } = thresholds;
    this.version = createHash('sha256').update(JSON.stringify({ consumerLagMessages, edgeSilentMs, outboxFill, edgeErrorRatio, forMs })).digest('hex').slice(0, 16);
  }

  /** The alerts this snapshot raises or resolves. */
  evaluate(snapshot: DashboardSnapshot): Alert[] {
    const at = snapshot.at;
    const holding = new Map(this.conditions(snapshot).map((c) => [`${c.rule}|${c.key}`, c]));
    const alerts: Alert[] = [];
    for (const [id, condition] of holding) {
      let episode = this.episodes.get(id);
      if (!episode) this.episodes.set(id, (episode = { since: at, raised: undefined }));
      if (!episode.raised && (condition.immediate || at - episode.since >= this.thresholds.forMs)) {
        episode.raised = {
          type: 'alert',
          rule: condition.rule,
          key: condition.key,
          severity: condition.severity,
          ts: episode.since,
          message: condition.message,
          details: { state: 'firing', ...condition.details },
          ruleVersion: this.version,
        };
        alerts.push(episode.raised);
      }
    }
    for (const [id, episode] of this.episodes) {
      if (holding.has(id)) continue;
      this.episodes.delete(id);
      if (!episode.raised) continue;
      alerts.push({
        type: 'alert',
        rule: episode.raised.rule,
        key: episode.raised.key,
        severity: 'info',
        ts: at,
        message: `resolved: ${episode.raised.message}`,
        details: { state: 'resolved', firedAt: episode.raised.ts, lastedMs: at - episode.since },
        ruleVersion: this.version,
      });
    }
    return alerts;
  }

  private conditions(s: DashboardSnapshot): Condition[] {
    const t = this.thresholds;
    const found: Condition[] = [];
    for (const c of s.consumers ?? []) {
      const lag = c.pending + c.ackPending;
      if (lag > t.consumerLagMessages) {
        found.push({ rule: 'pipeline.consumer_lag', key: c.name, severity: 'warning', message: `consumer ${c.name} is ${lag} messages behind (over ${t.consumerLagMessages})`, details: { pending: c.pending, ackPending: c.ackPending } });
      }
    }
    for (const e of s.edges) {
      if (e.silentForMs >= t.edgeSilentMs) {
        found.push({ rule: 'pipeline.edge_silent', key: e.agent, severity: 'critical', message: `agent ${e.agent} silent for ${Math.round(e.silentForMs / 1000)} s`, details: { silentForMs: e.silentForMs }, immediate: true });
        continue; // its last report's numbers are stale
      }
      if (e.outboxFill > t.outboxFill) {
        found.push({ rule: 'pipeline.outbox_filling', key: e.agent, severity: 'warning', message: `agent ${e.agent} outbox ${(e.outboxFill * 100).toFixed(0)}% full (${e.outboxRows} events waiting)`, details: { outboxFill: e.outboxFill, outboxRows: e.outboxRows, hubConnected: e.hubConnected } });
      }
      const input = e.acceptedPerSec + e.refusedPerSec;
      if (input > 0 && e.refusedPerSec / input > t.edgeErrorRatio) {
        found.push({ rule: 'pipeline.edge_errors', key: e.agent, severity: 'warning', message: `agent ${e.agent} refuses ${((e.refusedPerSec / input) * 100).toFixed(1)}% of its input`, details: { refusedPerSec: e.refusedPerSec, acceptedPerSec: e.acceptedPerSec } });
      }
    }
    if (s.hub.deadLetteredPerSec > 0 || s.hub.flushFailuresPerSec > 0) {
      found.push({ rule: 'pipeline.hub_errors', key: s.hub.name, severity: 'warning', message: `hub ${s.hub.name}: ${s.hub.deadLetteredPerSec} events/s dead-lettered, ${s.hub.flushFailuresPerSec} failed flushes/s`, details: { deadLetteredPerSec: s.hub.deadLetteredPerSec, flushFailuresPerSec: s.hub.flushFailuresPerSec } });
    }
    if (!s.questdb.ok) found.push({ rule: 'pipeline.questdb_down', key: 'questdb', severity: 'critical', message: `QuestDB does not answer: ${s.questdb.error ?? 'no answer'}`, details: {} });
    for (const n of s.stream?.nodes ?? []) {
      if (n.offline || !n.current) {
        found.push({ rule: 'pipeline.node_behind', key: n.name, severity: 'warning', message: `NATS node ${n.name} is ${n.offline ? 'offline' : `behind (lag ${n.lag})`} for the EVENTS stream`, details: { lag: n.lag, offline: n.offline } });
      }
    }
    return found;
  }
}
