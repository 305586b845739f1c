/**
 * The pipeline's own history: every `intervalMs` (5 s) the dashboard's latest snapshot becomes rows of the QuestDB
 * table `pipeline_metrics`, so that throughput, latency, error rates, lag, backlog, CPU and memory of every stage can be
 * queried and charted over days like any other data:
 *
 *   ts        snapshot time, whole seconds (designated timestamp, daily partitions, WAL)
 *   hub       the hub process that wrote it (its NATS name)
 *   stage     edge | jetstream | node | consumer | hub | questdb
 *   subject   the agent, stream, node, consumer or hub it is about
 *   metric    e.g. accepted_per_s, outbox_fill, pending, latency_p95_ms, cpu_percent, rss_bytes
 *   value     DOUBLE
 *
 * Long rather than wide: stages have different measures, and a new measure needs no ALTER. DEDUP UPSERT KEYS(ts,
 * hub, stage, subject, metric) makes a retried write harmless. Samples are best effort: while QuestDB is down they
 * are skipped (logged once per outage), not buffered; the dashboard and /metrics still show the present.
 * Agent ids come from the agents' status reports: they reach QuestDB only as ILP symbol values, escaped by the writer.
 */
import type { Logger } from '../../../shared/logger.js';
import type { DashboardSnapshot } from '../dashboard/pipeline-observer.js';
import { errorMessage } from '../errors.js';
import { IlpHttpWriter, type IlpHttpWriterOptions } from './ilp-http-writer.js';
import { ensureSpecTable, type AnalyticsTableSpec } from './questdb-analytics-sink.js';
import type { QuestDbRest } from './questdb-rest.js';

export const PIPELINE_METRICS_TABLE = 'pipeline_metrics';

export function pipelineMetricsTableSpec(table = PIPELINE_METRICS_TABLE): AnalyticsTableSpec {
  return {
    table,
    columns: [
      { name: 'ts', sqlType: 'TIMESTAMP' },
      { name: 'hub', sqlType: 'SYMBOL' },
      { name: 'stage', sqlType: 'SYMBOL' },
      { name: 'subject', sqlType: 'SYMBOL' },
      { name: 'metric', sqlType: 'SYMBOL' },
      { name: 'value', sqlType: 'DOUBLE' },
    ],
    dedupKeys: ['ts', 'hub', 'stage', 'subject', 'metric'],
  };
}

export async function ensurePipelineMetricsTable(rest: QuestDbRest, table: string, log: Logger): Promise<void> {
  await ensureSpecTable(rest, pipelineMetricsTableSpec(table), log);
}

export interface MetricSample {
  stage: 'edge' | 'jetstream' | 'node' | 'consumer' | 'hub' | 'questdb';
  subject: string;
  metric: string;
  value: number;
}

/** Pure: the samples of one snapshot. Parts the snapshot could not fetch (null) give no sample. */
export function metricSamples(s: DashboardSnapshot): MetricSample[] {
  const samples: MetricSample[] = [];
  const add = (stage: MetricSample['stage'], subject: string, values: Record<string, number | boolean | null | undefined>) => {
    for (const [metric, value] of Object.entries(values)) {
      if (value === null || value === undefined) continue;
      const number = typeof value === 'boolean' ? Number(value) : value;
      if (Number.isFinite(number)) samples.push({ stage, subject, metric, value: number });
    }
  };
  for (const e of s.edges) {
    add('edge', e.agent, {
      accepted_per_s: e.acceptedPerSec,
      refused_per_s: e.refusedPerSec,
      published_per_s: e.publishedPerSec,
      error_ratio: e.acceptedPerSec + e.refusedPerSec > 0 ? e.refusedPerSec / (e.acceptedPerSec + e.refusedPerSec) : 0,
      outbox_rows: e.outboxRows,
      outbox_bytes: e.outboxBytes,
      outbox_fill: e.outboxFill,
      outbox_oldest_age_s: e.oldestAgeMs === null ? null : e.oldestAgeMs / 1000,
      dead_letters_waiting: e.deadLettersUnforwarded,
      hub_connected: e.hubConnected,
      silent_s: e.silentForMs / 1000,
      cpu_percent: e.cpuPercent,
      rss_bytes: e.rssBytes,
    });
  }
  if (s.stream) {
    add('jetstream', s.stream.name, { messages_per_s: s.stream.messagesPerSec, messages: s.stream.messages, bytes: s.stream.bytes });
    for (const n of s.stream.nodes) add('node', n.name, { current: n.current && !n.offline, lag: n.lag, leader: n.role === 'leader' });
  }
  for (const c of s.consumers ?? []) add('consumer', c.name, { pending: c.pending, ack_pending: c.ackPending, redelivered: c.redelivered, acked_per_s: c.ackedPerSec });
  add('hub', s.hub.name, {
    events_per_s: s.hub.eventsPerSec,
    rows_per_s: s.hub.rowsPerSec,
    dead_lettered_per_s: s.hub.deadLetteredPerSec,
    flush_failures_per_s: s.hub.flushFailuresPerSec,
    latency_p50_ms: s.hub.latencyMs?.p50,
    latency_p95_ms: s.hub.latencyMs?.p95,
    latency_p99_ms: s.hub.latencyMs?.p99,
    cpu_percent: s.hub.cpuPercent,
    rss_bytes: s.hub.rssBytes,
    heap_used_bytes: s.hub.heapUsedBytes,
  });
  add('questdb', 'questdb', { up: s.questdb.ok, ping_ms: s.questdb.latencyMs });
  return samples;
}

export interface PipelineMetricsWriterOptions extends Omit<IlpHttpWriterOptions, 'retryTimeoutMs'> {
  hubName: string;
  table: string;
  intervalMs: number;
}

export class PipelineMetricsWriter {
  private readonly writer: IlpHttpWriter;
  private lastWrittenAt = 0;
  private writing = false;
  private failing = false;

  constructor(
    private readonly options: PipelineMetricsWriterOptions,
    private readonly log: Logger,
  ) {
    this.writer = new IlpHttpWriter({ ...options, retryTimeoutMs: 0 });
  }

  /** Give it every snapshot; it writes one every intervalMs. */
  offer(snapshot: DashboardSnapshot): void {
    if (this.writing || snapshot.at - this.lastWrittenAt < this.options.intervalMs) return;
    this.lastWrittenAt = snapshot.at;
    void this.write(snapshot);
  }

  private async write(snapshot: DashboardSnapshot): Promise<void> {
    this.writing = true;
    const micros = Math.floor(snapshot.at / 1000) * 1_000_000;
    try {
      this.writer.reset();
      const samples = metricSamples(snapshot);
      for (const sample of samples) {
        this.writer
          .table(this.options.table)
          .symbol('hub', this.options.hubName)
          .symbol('stage', sample.stage)
          .symbol('subject', sample.subject)
          .symbol('metric', sample.metric)
          .floatColumn('value', sample.value)
          .at(micros, 'us');
      }
      await this.writer.flush();
      if (this.failing) this.log.info('pipeline metrics written again');
      this.failing = false;
    } catch (error) {
      this.writer.reset();
      if (!this.failing) this.log.warn({ err: errorMessage(error) }, 'pipeline metrics not written; samples are skipped until QuestDB takes them again');
      this.failing = true;
    } finally {
      this.writing = false;
    }
  }

  async close(): Promise<void> {
    await this.writer.close();
  }
}
