/**
 * What the dashboard shows, gathered once per interval into one JSON snapshot:
 *
 *   edges        each agent's own report (status.<agent>, core NATS, every 5 s): ingest and publish rates, outbox
 *                backlog and how full it is, dead letters waiting, and how long since it was last heard of
 *   stream       the EVENTS stream: messages stored per second, backlog, and per NATS node (leader and replicas) whether
 *                it is current, its lag and when it was last active: JetStream's own view of the nodes' health
 *   consumers    each durable consumer on EVENTS: pending (lag), waiting for ack, redelivered, acked per second
 *   hub          this hub process: events consumed and rows written per second, end-to-end latency percentiles over
 *                the interval (edge acceptance to QuestDB's confirmation, hub_ingest_latency_seconds)
 *   questdb      answered /ping or not, and how fast
 *   windows      window results per rule and 10 s of event time over the last 10 minutes, and the latest results
 *   alerts       the latest alerts (QuestDB's alerts table)
 *   quality      per source and event type, minutes of the last 10 minutes of wall-clock time: the data_quality
 *                scores (partitions added up) and validity from edge_refusals
 *   deadLetters  the latest dead letters seen on the DLQ stream's subjects since this hub started (agents' and hub's)
 *
 * Every part is fetched on its own: a part that fails is null with its error in `errors`, the rest still shows.
 * With several hub processes, `hub` is this process only; stream and consumers are the whole cluster's.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import { decodeDeadLetters } from '../../../shared/dead-letter-records.js';
import type { Logger } from '../../../shared/logger.js';
import { AGENT_ID_PATTERN, AGENT_STATUS_SUBJECTS, DLQ_SUBJECTS, EVENTS_STREAM, type AgentStatus } from '../../../shared/wire.js';
import { errorMessage } from '../errors.js';
import { decodeHubDeadLetter } from '../sinks/dead-letter-sink.js';
import type { QuestDbRest } from '../sinks/questdb-rest.js';
import { bucketDelta, quantile, type Buckets } from './histogram-window.js';

/** One source and event type over the minutes of the last 10 minutes (wall clock; shares in 0..1; null without events). */
export interface QualityView {
  source: string;
  eventType: string;
  events: number;
  refused: number;
  validity: number | null;
  completeness: number | null;
  lateShare: number | null;
  futureShare: number | null;
  duplicateShare: number | null;
  outOfRangeShare: number | null;
  worstLagP95Ms: number | null;
}

export interface EdgeView {
  agent: string;
  acceptedPerSec: number;
  refusedPerSec: number;
  publishedPerSec: number;
  outboxRows: number;
  outboxBytes: number;
  /** Share of the outbox bound in use, 0..1. */
  outboxFill: number;
  oldestAgeMs: number | null;
  deadLettersUnforwarded: number;
  hubConnected: boolean;
  /** Since the last report reached the hub. */
  silentForMs: number;
  /** The agent process's CPU (% of one core, between its last two reports) and resident memory. */
  cpuPercent: number | null;
  rssBytes: number | null;
}

export interface NodeView {
  name: string;
  role: 'leader' | 'replica';
  current: boolean;
  offline: boolean;
  lag: number;
  /** Since the leader last heard from this replica, ms (0 for the leader). */
  activeAgoMs: number;
}

export interface DashboardSnapshot {
  at: number;
  intervalMs: number;
  nats: { connected: boolean; server: string | null };
  edges: EdgeView[];
  stream: { name: string; messages: number; bytes: number; messagesPerSec: number; nodes: NodeView[] } | null;
  consumers: Array<{ name: string; pending: number; ackPending: number; redelivered: number; ackedPerSec: number }> | null;
  hub: {
    name: string;
    eventsPerSec: number;
    rowsPerSec: number;
    deadLetteredPerSec: number;
    /** Sink flushes that failed, per second (QuestDB refusing or unreachable). */
    flushFailuresPerSec: number;
    latencyMs: { p50: number; p95: number; p99: number } | null;
    /** This hub process: CPU (% of one core over the interval), resident memory and JS heap in use. */
    cpuPercent: number;
    rssBytes: number;
    heapUsedBytes: number;
  };
  questdb: { ok: boolean; latencyMs: number | null; error?: string };
  windows: { perRule: Array<{ rule: string; points: Array<[number, number]> }>; latest: Array<Record<string, unknown>> } | null;
  alerts: Array<{ ts: string; rule: string; key: string; severity: string; message: string }> | null;
  quality: QualityView[] | null;
  deadLetters: Array<{ at: number; agent: string; source: string; code: string; reason: string }>;
  errors: Record<string, string>;
}

export interface PipelineObserverOptions {
  intervalMs: number;
  /** This hub's name (its NATS connection name), for the metrics it writes. */
  hubName: string;
  /** How long an agent may stay unheard of before it leaves the list (and its silence alert resolves). @default 1 day */
  forgetAgentsAfterMs?: number;
  tables?: { windowResults: string; alerts: string };
  now?: () => number;
}

const RECENT_DEAD_LETTERS = 30;
const AGENT_ID = new RegExp(AGENT_ID_PATTERN);

export class PipelineObserver {
  private readonly agents = new Map<string, { status: AgentStatus; heardAt: number; previous?: { status: AgentStatus; heardAt: number } }>();
  private readonly recentDeadLetters: DashboardSnapshot['deadLetters'] = [];
  private readonly listeners = new Set<(snapshot: DashboardSnapshot) => void>();
  private readonly subscriptions: Subscription[] = [];
  private timer: NodeJS.Timeout | undefined;
  private previous:
    | { at: number; counters: Map<string, number>; latency: Buckets | undefined; lastSeq?: number; ackFloors: Map<string, number>; cpuSeconds: number }
    | undefined;
  private latest: DashboardSnapshot | undefined;
  private collecting = false;
  private readonly now: () => number;

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly registry: Registry,
    private readonly questdb: QuestDbRest,
    private readonly options: PipelineObserverOptions,
    private readonly log: Logger,
  ) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.subscriptions.push(this.nc.subscribe(AGENT_STATUS_SUBJECTS, { callback: (error, message) => {
      if (!error) this.onAgentStatus(message.data);
    } }));
    this.subscriptions.push(this.nc.subscribe(DLQ_SUBJECTS, { callback: (error, message) => {
      if (!error) this.onDeadLetter(message.subject, message.data);
    } }));
    const tick = () => void this.collect();
    tick();
    this.timer = setInterval(tick, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const subscription of this.subscriptions.splice(0)) subscription.unsubscribe();
    this.listeners.clear();
  }

  /** The last snapshot (undefined until the first is gathered). */
  snapshot(): DashboardSnapshot | undefined {
    return this.latest;
  }

  /** Called with every new snapshot; returns the function that stops it. */
  subscribe(listener: (snapshot: DashboardSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private onAgentStatus(data: Uint8Array): void {
    let status: AgentStatus;
    try {
      status = JSON.parse(new TextDecoder().decode(data)) as AgentStatus;
    } catch {
      return;
    }
    // Only well-formed ids: they become symbols in pipeline_metrics.
    if (typeof status?.agent !== 'string' || !AGENT_ID.test(status.agent) || typeof status.at !== 'number') return;
    const known = this.agents.get(status.agent);
    // A restarted agent starts its counters again: rates are taken from its new reports only.
    const previous = known && known.status.startedAt === status.startedAt ? { status: known.status, heardAt: known.heardAt } : undefined;
    this.agents.set(status.agent, { status, heardAt: this.now(), ...(previous ? { previous } : {}) });
  }

  private onDeadLetter(subject: string, data: Uint8Array): void {
    try {
      if (subject.startsWith('dlq.hub.')) {
        const record = decodeHubDeadLetter(data);
        this.remember([{ at: record.at, agent: record.agent, source: `hub ${record.hub}`, code: record.code, reason: record.detail }]);
      } else {
        this.remember(decodeDeadLetters(data).map((l) => ({ at: l.at, agent: l.agent, source: l.source, code: l.code, reason: l.reason })));
      }
    } catch (error) {
      this.log.debug({ subject, err: errorMessage(error) }, 'dashboard: a DLQ message it cannot read');
    }
  }

  private remember(letters: DashboardSnapshot['deadLetters']): void {
    this.recentDeadLetters.unshift(...letters.reverse());
    this.recentDeadLetters.splice(RECENT_DEAD_LETTERS);
  }

  private async collect(): Promise<void> {
    if (this.collecting) return; // a slow QuestDB must not pile up requests
    this.collecting = true;
    try {
      const snapshot = await this.gather();
      this.latest = snapshot;
      for (const listener of this.listeners) listener(snapshot);
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, 'dashboard snapshot failed');
    } finally {
      this.collecting = false;
    }
  }

  private async gather(): Promise<DashboardSnapshot> {
    const at = this.now();
    const errors: Record<string, string> = {};
    const part = async <T>(name: string, fetch: () => Promise<T>): Promise<T | null> => {
      try {
        return await fetch();
      } catch (error) {
        errors[name] = errorMessage(error);
        return null;
      }
    };
    const before = this.previous;
    const seconds = before ? Math.max(0.001, (at - before.at) / 1000) : 0;
    const rate = (nowValue: number, previousValue: number | undefined) => (before && previousValue !== undefined ? Math.max(0, nowValue - previousValue) / seconds : 0);

    const [streamInfo, consumerInfos, questdb, windows, alerts, quality, counters, latency] = await Promise.all([
      part('stream', () => this.jsm.streams.info(EVENTS_STREAM)),
      part('consumers', async () => (await this.jsm.consumers.list(EVENTS_STREAM).next()) as Array<{ name: string; num_pending: number; num_ack_pending: number; num_redelivered: number; ack_floor: { stream_seq: number } }>),
      this.pingQuestDb(),
      part('windows', () => this.windowResults()),
      part('alerts', () => this.latestAlerts()),
      part('quality', () => this.qualityBySource()),
      this.counters(['hub_events_consumed_total', 'hub_rows_written_total', 'hub_events_dead_lettered_total', 'hub_flushes_total{result="error"}']),
      this.buckets('hub_ingest_latency_seconds'),
    ]);

    const latencyWindow = latency ? bucketDelta(latency, before?.latency) : undefined;
    const p = (q: number) => (latencyWindow ? quantile(q, latencyWindow) : null);
    const [p50, p95, p99] = [p(0.5), p(0.95), p(0.99)];
    const ackFloors = new Map((consumerInfos ?? []).map((c) => [c.name, c.ack_floor.stream_seq]));
    const lastSeq = streamInfo?.state.last_seq;
    const cpu = process.cpuUsage();
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    this.previous = { at, counters, latency: latency ?? undefined, ...(lastSeq !== undefined ? { lastSeq } : {}), ackFloors, cpuSeconds };
    const memory = process.memoryUsage();

    return {
      at,
      intervalMs: this.options.intervalMs,
      nats: { connected: !this.nc.isClosed(), server: this.nc.info?.server_name ?? null },
      edges: this.edgeViews(at),
      stream: streamInfo
        ? {
            name: streamInfo.config.name,
            messages: streamInfo.state.messages,
            bytes: streamInfo.state.bytes,
            messagesPerSec: round(rate(streamInfo.state.last_seq, before?.lastSeq)),
            nodes: [
              ...(streamInfo.cluster?.leader ? [{ name: streamInfo.cluster.leader, role: 'leader' as const, current: true, offline: false, lag: 0, activeAgoMs: 0 }] : []),
              ...(streamInfo.cluster?.replicas ?? []).map((r) => ({
                name: r.name,
                role: 'replica' as const,
                current: r.current,
                offline: r.offline ?? false,
                lag: r.lag ?? 0,
                activeAgoMs: Math.round(Number(r.active) / 1e6),
              })),
            ],
          }
        : null,
      consumers: consumerInfos
        ? consumerInfos.map((c) => ({
            name: c.name,
            pending: c.num_pending,
            ackPending: c.num_ack_pending,
            redelivered: c.num_redelivered,
            ackedPerSec: round(rate(c.ack_floor.stream_seq, before?.ackFloors.get(c.name))),
          }))
        : null,
      hub: {
        name: this.options.hubName,
        flushFailuresPerSec: round(rate(counters.get('hub_flushes_total{result="error"}') ?? 0, before?.counters.get('hub_flushes_total{result="error"}')), 2),
        cpuPercent: round(rate(cpuSeconds, before?.cpuSeconds) * 100),
        rssBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        eventsPerSec: round(rate(counters.get('hub_events_consumed_total') ?? 0, before?.counters.get('hub_events_consumed_total'))),
        rowsPerSec: round(rate(counters.get('hub_rows_written_total') ?? 0, before?.counters.get('hub_rows_written_total'))),
        deadLetteredPerSec: round(rate(counters.get('hub_events_dead_lettered_total') ?? 0, before?.counters.get('hub_events_dead_lettered_total'))),
        latencyMs: p50 !== null && p95 !== null && p99 !== null ? { p50: round(p50 * 1000), p95: round(p95 * 1000), p99: round(p99 * 1000) } : null,
      },
      questdb,
      windows,
      alerts,
      quality,
      deadLetters: [...this.recentDeadLetters],
      errors,
    };
  }

  private edgeViews(at: number): EdgeView[] {
    const forgetAfter = this.options.forgetAgentsAfterMs ?? 86_400_000;
    const views: EdgeView[] = [];
    for (const [agent, { status, heardAt, previous }] of this.agents) {
      if (at - heardAt > forgetAfter) {
        this.agents.delete(agent);
        continue;
      }
      const seconds = previous ? Math.max(0.001, (status.at - previous.status.at) / 1000) : 0;
      const perSec = (pick: (s: AgentStatus) => number) => (previous ? round(Math.max(0, pick(status) - pick(previous.status)) / seconds) : 0);
      views.push({
        agent,
        acceptedPerSec: perSec((s) => s.accepted),
        refusedPerSec: perSec((s) => s.refused),
        publishedPerSec: perSec((s) => s.published),
        outboxRows: status.outbox.rows,
        outboxBytes: status.outbox.bytes,
        outboxFill: status.outbox.maxBytes > 0 ? round(status.outbox.bytes / status.outbox.maxBytes, 4) : 0,
        oldestAgeMs: status.outbox.oldestAgeMs,
        deadLettersUnforwarded: status.deadLetters.unforwarded,
        hubConnected: status.hubConnected,
        silentForMs: Math.max(0, at - heardAt),
        cpuPercent: previous && status.process && previous.status.process ? round(((status.process.cpuSeconds - previous.status.process.cpuSeconds) / seconds) * 100) : null,
        rssBytes: status.process?.rssBytes ?? null,
      });
    }
    return views.sort((a, b) => a.agent.localeCompare(b.agent));
  }

  private async pingQuestDb(): Promise<DashboardSnapshot['questdb']> {
    const started = performance.now();
    try {
      await this.questdb.ping();
      return { ok: true, latencyMs: round(performance.now() - started) };
    } catch (error) {
      return { ok: false, latencyMs: null, error: errorMessage(error) };
    }
  }

  private async windowResults(): Promise<NonNullable<DashboardSnapshot['windows']>> {
    const table = this.options.tables?.windowResults ?? 'window_results';
    const perRule = await this.questdb.exec(
      `SELECT ts, rule, count() n FROM ${table} WHERE ts > dateadd('m', -10, now()) AND NOT superseded SAMPLE BY 10s ALIGN TO CALENDAR ORDER BY ts`,
    );
    const series = new Map<string, Array<[number, number]>>();
    for (const [ts, rule, n] of (perRule.dataset ?? []) as Array<[string, string, number]>) {
      const points = series.get(rule) ?? [];
      points.push([Date.parse(ts), Number(n)]);
      series.set(rule, points);
    }
    const latest = await this.questdb.exec(`SELECT * FROM ${table} WHERE ts > dateadd('m', -10, now()) AND NOT superseded ORDER BY written_at DESC LIMIT 10`);
    const columns = (latest.columns ?? []).map((c) => c.name);
    const rows = ((latest.dataset ?? []) as unknown[][]).map((values) => {
      const row: Record<string, unknown> = {};
      columns.forEach((name, i) => {
        if (values[i] !== null && name !== 'superseded' && name !== 'written_at') row[name] = values[i];
      });
      return row;
    });
    return { perRule: [...series].map(([rule, points]) => ({ rule, points })), latest: rows };
  }

  private async qualityBySource(): Promise<QualityView[]> {
    const result = await this.questdb.exec(
      `SELECT source, event_type, sum(events) events, sum(complete) complete, sum(late) late, sum(future) future, sum(duplicates) duplicates, sum(out_of_range) out_of_range, max(lag_p95_ms) lag ` +
        `FROM data_quality WHERE ts > dateadd('m', -10, now()) GROUP BY source, event_type ORDER BY source, event_type LIMIT 50`,
    );
    const refused = await this.questdb
      .exec(`SELECT source, event_type, count() n FROM edge_refusals WHERE ts > dateadd('m', -10, now()) GROUP BY source, event_type`)
      .catch(() => ({ dataset: [] as unknown[][] }));
    const refusedBy = new Map(((refused.dataset ?? []) as Array<[string, string, number]>).map(([source, type, n]) => [`${source}|${type}`, Number(n)]));
    return ((result.dataset ?? []) as Array<[string, string, number, number, number, number, number, number, number | null]>).map(([source, eventType, events, complete, late, future, duplicates, outOfRange, lag]) => {
      const share = (n: number) => (events > 0 ? round(n / events, 4) : null);
      const refusedCount = refusedBy.get(`${source}|${eventType}`) ?? 0;
      return {
        source,
        eventType,
        events: Number(events),
        refused: refusedCount,
        validity: events + refusedCount > 0 ? round(events / (events + refusedCount), 4) : null,
        completeness: share(complete),
        lateShare: share(late),
        futureShare: share(future),
        duplicateShare: share(duplicates),
        outOfRangeShare: share(outOfRange),
        worstLagP95Ms: lag === null ? null : round(Number(lag)),
      };
    });
  }

  private async latestAlerts(): Promise<NonNullable<DashboardSnapshot['alerts']>> {
    const table = this.options.tables?.alerts ?? 'alerts';
    const result = await this.questdb.exec(`SELECT ts, rule, key, severity, message FROM ${table} WHERE ts > dateadd('d', -1, now()) ORDER BY ts DESC LIMIT 20`);
    return ((result.dataset ?? []) as Array<[string, string, string, string, string]>).map(([ts, rule, key, severity, message]) => ({ ts, rule, key, severity, message }));
  }

  private async counters(names: string[]): Promise<Map<string, number>> {
    const values = new Map<string, number>();
    for (const wanted of names) {
      // `name{label="value"}` sums only the series with that label value.
      const [, name, label, labelValue] = /^([a-z_]+)(?:\{([a-z_]+)="([^"]*)"\})?$/.exec(wanted)!;
      const metric = this.registry.getSingleMetric(name!);
      if (!metric) continue;
      const reading = await metric.get();
      const series = label ? reading.values.filter((v) => v.labels[label] === labelValue) : reading.values;
      values.set(wanted, series.reduce((sum, v) => sum + v.value, 0));
    }
    return values;
  }

  private async buckets(name: string): Promise<Buckets | null> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return null;
    const reading = await metric.get();
    const buckets = new Map<number, number>();
    for (const v of reading.values) {
      if (!(v as { metricName?: string }).metricName?.endsWith('_bucket')) continue;
      const le = v.labels.le;
      buckets.set(le === '+Inf' ? Infinity : Number(le), (buckets.get(le === '+Inf' ? Infinity : Number(le)) ?? 0) + v.value);
    }
    return buckets;
  }
}

function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
