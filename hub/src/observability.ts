/**
 * Wires what watches the pipeline, from one stream of snapshots (dashboard/pipeline-observer.ts):
 *   - the live dashboard routes on the status server (dashboard.enabled),
 *   - the pipeline's metrics into QuestDB (dashboard.metricsIntervalMs),
 *   - pipeline alerts into the ALERTS stream and QuestDB's alerts table (alerting.pipeline.enabled),
 * and one webhook notifier per configured webhook, consuming the ALERTS stream.
 */
import { jetstream, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../shared/logger.js';
import { PipelineAlertEvaluator } from './alerting/pipeline-alert-rules.js';
import { PipelineAlerts } from './alerting/pipeline-alerts.js';
import { WebhookNotifier } from './alerting/webhook-notifier.js';
import type { HubConfig } from './config.js';
import { dashboardRoutes } from './dashboard/dashboard-routes.js';
import { PipelineObserver } from './dashboard/pipeline-observer.js';
import type { StatusServerOptions } from './http-status-server.js';
import type { HubMetrics } from './metrics.js';
import type { DashboardSnapshot } from './dashboard/pipeline-observer.js';
import { JetStreamAlertSink } from './sinks/jetstream-alert-sink.js';
import { createQuestDbAnalyticsSink, type QuestDbAnalyticsSink } from './sinks/questdb-analytics-sink.js';
import { ensurePipelineMetricsTable, PipelineMetricsWriter } from './sinks/questdb-pipeline-metrics.js';
import type { QuestDbRest } from './sinks/questdb-rest.js';

export interface ObservabilityDeps {
  nc: NatsConnection;
  jsm: JetStreamManager;
  metrics: HubMetrics;
  rest: QuestDbRest;
  questdb: { httpUrl: string; username?: string | undefined; password?: string | undefined };
  /** The running status server's options (routes are added to them) and port; undefined when http.port is 0. */
  status: { options: StatusServerOptions; port: number } | undefined;
  log: Logger;
}

export interface Observability {
  stop(): Promise<void>;
}

/** Throws when a table cannot be made or a webhook consumer cannot be created (the caller retries). */
export async function startObservability(config: HubConfig, deps: ObservabilityDeps): Promise<Observability> {
  const { nc, jsm, metrics, rest, questdb, status, log } = deps;
  const webhooks: WebhookNotifier[] = [];
  let observer: PipelineObserver | undefined;
  let metricsWriter: PipelineMetricsWriter | undefined;
  let alertsTable: QuestDbAnalyticsSink | undefined;
  const stop = async () => {
    observer?.stop();
    for (const webhook of webhooks) await webhook.stop();
    await metricsWriter?.close();
    await alertsTable?.close();
  };
  try {
    const dashboard = config.dashboard.enabled && status !== undefined;
    if (dashboard || config.alerting.pipeline.enabled || config.dashboard.metricsIntervalMs > 0) {
      observer = new PipelineObserver(nc, jsm, metrics.registry, rest, { intervalMs: config.dashboard.intervalMs, hubName: config.nats.name }, log);
      if (config.dashboard.metricsIntervalMs > 0) {
        const { metricsTable: table, metricsIntervalMs: intervalMs } = config.dashboard;
        await ensurePipelineMetricsTable(rest, table, log);
        const writer = new PipelineMetricsWriter({ ...questdb, requestTimeoutMs: config.questdb.requestTimeoutMs, hubName: config.nats.name, table, intervalMs }, log);
        metricsWriter = writer;
        observer.subscribe((snapshot) => writer.offer(snapshot));
      }
      if (config.alerting.pipeline.enabled) {
        const table = await createQuestDbAnalyticsSink({
          ...questdb,
          requestTimeoutMs: config.questdb.requestTimeoutMs,
          retryTimeoutMs: config.questdb.retryTimeoutMs,
          nowMicros: () => Date.now() * 1000,
          log,
        });
        alertsTable = table;
        const alerts = new PipelineAlerts(new PipelineAlertEvaluator(config.alerting.pipeline), new JetStreamAlertSink(jetstream(nc), config.deadLetters.publishTimeoutMs), table, log);
        observer.subscribe((snapshot) => alerts.offer(snapshot));
      }
      observer.subscribe((snapshot) => exportGauges(metrics, snapshot));
      observer.start();
      if (dashboard) {
        status.options.routes = dashboardRoutes(observer, config.dashboard.maxClients);
        log.info({ url: `http://${config.http.host}:${status.port}/dashboard` }, 'dashboard served');
      }
    }
    for (const webhook of config.alerting.webhooks) {
      const notifier = new WebhookNotifier(jsm, jetstream(nc), webhook, log);
      await notifier.start();
      webhooks.push(notifier);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { stop };
}

/** The snapshot's cluster-wide numbers on /metrics too, so Prometheus can alert on lag and silent agents. */
function exportGauges(metrics: HubMetrics, snapshot: DashboardSnapshot): void {
  if (snapshot.consumers) {
    metrics.consumerPending.reset();
    metrics.consumerAckPending.reset();
    for (const c of snapshot.consumers) {
      metrics.consumerPending.set({ consumer: c.name }, c.pending);
      metrics.consumerAckPending.set({ consumer: c.name }, c.ackPending);
    }
  }
  metrics.edgeOutboxRows.reset();
  metrics.edgeLastReportAge.reset();
  for (const e of snapshot.edges) {
    metrics.edgeOutboxRows.set({ agent: e.agent }, e.outboxRows);
    metrics.edgeLastReportAge.set({ agent: e.agent }, e.silentForMs / 1000);
  }
}
