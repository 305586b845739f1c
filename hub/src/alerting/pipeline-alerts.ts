/**
 * Raises the pipeline alerts (pipeline-alert-rules.ts) from the dashboard's snapshots and sends each where the CEP
 * alerts go: the ALERTS stream (message id rule:key:ts, so a resend is dropped as a duplicate, and the webhooks
 * consume it from there) and QuestDB's `alerts` table (DEDUP UPSERT KEYS ts, rule, key). An alert that could not be
 * stored is kept (at most `maxPending`, the oldest dropped past it and logged) and sent again with the next snapshot.
 * The data-quality thresholds (quality/quality-alerts.ts) send their alerts through `raise` the same way.
 */
import type { Logger } from '../../../shared/logger.js';
import type { DashboardSnapshot } from '../dashboard/pipeline-observer.js';
import { errorMessage } from '../errors.js';
import type { Alert } from '../operators/operator.js';
import type { JetStreamAlertSink } from '../sinks/jetstream-alert-sink.js';
import type { QuestDbAnalyticsSink } from '../sinks/questdb-analytics-sink.js';
import { PipelineAlertEvaluator } from './pipeline-alert-rules.js';

export class PipelineAlerts {
  private pending: Alert[] = [];
  private sending = false;
  private inFlight: Promise<void> = Promise.resolve();

  constructor(
    private readonly evaluator: Pick<PipelineAlertEvaluator, 'evaluate'>,
    private readonly stream: Pick<JetStreamAlertSink, 'publish'>,
    private readonly table: Pick<QuestDbAnalyticsSink, 'write' | 'flush'>,
    private readonly log: Logger,
    private readonly maxPending = 1000,
  ) {}

  offer(snapshot: DashboardSnapshot): void {
    this.raise(this.evaluator.evaluate(snapshot));
  }

  /** Sends alerts raised elsewhere (the data-quality thresholds) the same way, with the same retries. */
  raise(alerts: readonly Alert[]): void {
    for (const alert of alerts) this.log.warn({ rule: alert.rule, key: alert.key, severity: alert.severity }, alert.message);
    this.pending.push(...alerts);
    if (this.pending.length > this.maxPending) {
      const dropped = this.pending.splice(0, this.pending.length - this.maxPending);
      this.log.error({ dropped: dropped.length }, 'pipeline alerts dropped: neither the ALERTS stream nor QuestDB took them for too long');
    }
    if (!this.sending && this.pending.length > 0) this.inFlight = this.send();
  }

  /** Waits for the alerts being sent now (before the QuestDB sink is closed at shutdown). */
  async drain(): Promise<void> {
    await this.inFlight;
  }

  private async send(): Promise<void> {
    this.sending = true;
    const batch = this.pending.slice();
    try {
      await this.stream.publish(batch);
      this.table.write(batch);
      await this.table.flush();
      this.pending.splice(0, batch.length);
    } catch (error) {
      this.log.warn({ err: errorMessage(error), waiting: this.pending.length }, 'pipeline alerts not stored yet; sent again with the next snapshot');
    } finally {
      this.sending = false;
    }
  }
}
