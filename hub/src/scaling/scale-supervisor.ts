/**
 * `hub scale`: every `intervalMs`, reads the consumer lag (consumer-lag.ts) and the workers' ingest latency p95 over
 * the interval (their /metrics, worker-metrics.ts), asks the policy (scaling-policy.ts) and resizes the pool
 * (worker-pool.ts). Every change is logged with its reason, counted in `hub_scale_changes_total{direction}` and kept in
 * the timeline of /status (the last 100).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from '../../../shared/logger.js';
import type { ConsumerLag, ConsumerLagReading } from './consumer-lag.js';
import { ScalingPolicy, type ScalingDecision, type ScalingSettings } from './scaling-policy.js';
import { addHistograms, histogramQuantileMs, scrapeHistogram, subtractHistogram, type Histogram } from './worker-metrics.js';
import type { WorkerInfo, WorkerPool } from './worker-pool.js';

const LATENCY_HISTOGRAM = 'hub_ingest_latency_seconds';
const TIMELINE_LENGTH = 100;

export interface ScaleChange {
  at: string;
  from: number;
  to: number;
  direction: 'up' | 'down';
  reason: string;
  lag: ConsumerLagReading;
  latencyP95Ms: number | undefined;
}

export interface ScaleStatus {
  workers: WorkerInfo[];
  target: number;
  last: { at: string; lag: ConsumerLagReading; latencyP95Ms: number | undefined; decision: string } | undefined;
  changes: ScaleChange[];
  settings: ScalingSettings;
}

export class ScaleSupervisor {
  private readonly policy: ScalingPolicy;
  private readonly registry = new Registry();
  private readonly gauges;
  private readonly changesTotal: Counter<'direction'>;
  private readonly exitsTotal: Counter;
  private readonly previousScrapes = new Map<number, Histogram>();
  private readonly changes: ScaleChange[] = [];
  private last: ScaleStatus['last'];
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private server: Server | undefined;

  constructor(
    private readonly pool: WorkerPool,
    private readonly lag: ConsumerLag,
    private readonly settings: ScalingSettings & { intervalMs: number },
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.policy = new ScalingPolicy(settings);
    const registers = [this.registry];
    this.gauges = {
      workers: new Gauge({ name: 'hub_scale_workers', help: 'Hub worker processes running (not counting those stopping)', registers }),
      target: new Gauge({ name: 'hub_scale_target_workers', help: 'Hub worker processes wanted by the last decision', registers }),
      lag: new Gauge({ name: 'hub_scale_lag_messages', help: 'Unprocessed EVENTS messages per path, as the scaling decision saw them', labelNames: ['path'], registers }),
      latency: new Gauge({ name: 'hub_scale_ingest_latency_p95_seconds', help: "Workers' ingest latency p95 over the last interval (NaN: none written)", registers }),
      min: new Gauge({ name: 'hub_scale_min_workers', help: 'scaling.minWorkers', registers }),
      max: new Gauge({ name: 'hub_scale_max_workers', help: 'scaling.maxWorkers', registers }),
    };
    this.gauges.min.set(settings.minWorkers);
    this.gauges.max.set(settings.maxWorkers);
    this.changesTotal = new Counter({ name: 'hub_scale_changes_total', help: 'Scaling decisions applied, by direction', labelNames: ['direction'], registers });
    this.exitsTotal = new Counter({ name: 'hub_scale_worker_exits_total', help: 'Workers that exited without being told to (restarted)', registers });
  }

  /** Call from the pool's onUnexpectedExit. */
  workerExited(): void {
    this.exitsTotal.inc();
  }

  async start(httpHost: string, httpPort: number): Promise<number> {
    this.gauges.target.set(this.settings.minWorkers);
    await this.pool.scaleTo(this.settings.minWorkers);
    this.log.info({ workers: this.settings.minWorkers, reason: `the minimum ${this.settings.minWorkers}` }, 'hub workers started');
    const port = await this.listen(httpHost, httpPort);
    this.timer = setInterval(() => {
      if (!this.ticking) this.ticking = this.tick().finally(() => (this.ticking = undefined));
    }, this.settings.intervalMs);
    return port;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.ticking;
    await this.pool.close();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** One measurement and decision; a failed measurement changes nothing (logged). */
  async tick(): Promise<void> {
    let lag: ConsumerLagReading;
    try {
      lag = await this.lag.read();
    } catch (error) {
      this.log.warn({ err: String(error) }, 'could not read the consumer lag; no scaling decision this interval');
      return;
    }
    const latencyP95Ms = await this.intervalLatencyP95();
    const workers = this.pool.size;
    const decision = this.policy.decide({ atMs: this.now(), lagMessages: lag.lag, latencyP95Ms }, workers);
    this.record(lag, latencyP95Ms, workers, decision);
    if (decision.direction !== 'hold') await this.pool.scaleTo(decision.target);
    this.gauges.workers.set(this.pool.size);
  }

  status(): ScaleStatus {
    return { workers: this.pool.list(), target: this.pool.wanted, last: this.last, changes: [...this.changes], settings: this.settings };
  }

  private record(lag: ConsumerLagReading, latencyP95Ms: number | undefined, workers: number, decision: ScalingDecision): void {
    const at = new Date(this.now()).toISOString();
    this.last = { at, lag, latencyP95Ms, decision: decision.reason };
    this.gauges.lag.set({ path: 'raw' }, lag.raw);
    this.gauges.lag.set({ path: 'analytics' }, lag.analytics);
    this.gauges.latency.set(latencyP95Ms === undefined ? Number.NaN : latencyP95Ms / 1000);
    if (decision.direction === 'hold') {
      this.log.debug({ workers, lag, latencyP95Ms, reason: decision.reason }, 'hub workers kept');
      return;
    }
    this.gauges.target.set(decision.target);
    this.changesTotal.inc({ direction: decision.direction });
    const change: ScaleChange = { at, from: workers, to: decision.target, direction: decision.direction, reason: decision.reason, lag, latencyP95Ms };
    this.changes.push(change);
    if (this.changes.length > TIMELINE_LENGTH) this.changes.shift();
    this.log.info({ from: workers, to: decision.target, reason: decision.reason, lag, latencyP95Ms }, `scaling hub workers ${decision.direction}`);
  }

  /** p95 of what every running worker wrote since the previous scrape; undefined when nothing was written. */
  private async intervalLatencyP95(): Promise<number | undefined> {
    const workers = this.pool.list().filter((w) => !w.stopping);
    const scrapes = await Promise.all(workers.map((w) => scrapeHistogram(`http://127.0.0.1:${w.port}/metrics`, LATENCY_HISTOGRAM)));
    const intervals: Histogram[] = [];
    workers.forEach((worker, i) => {
      const scrape = scrapes[i];
      if (!scrape) return;
      intervals.push(subtractHistogram(scrape, this.previousScrapes.get(worker.slot)));
      this.previousScrapes.set(worker.slot, scrape);
    });
    for (const slot of this.previousScrapes.keys()) if (!workers.some((w) => w.slot === slot)) this.previousScrapes.delete(slot);
    const sum = addHistograms(intervals);
    return sum ? histogramQuantileMs(sum, 0.95) : undefined;
  }

  private async listen(host: string, port: number): Promise<number> {
    const server = createServer((request, response) => {
      const path = (request.url ?? '/').split('?')[0];
      if (path === '/metrics') {
        this.registry.metrics().then(
          (text) => response.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
          (error: unknown) => response.writeHead(500).end(String(error)),
        );
      } else if (path === '/status' || path === '/healthz') {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.status()));
      } else {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /status or /metrics\n');
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.server = server;
    return (server.address() as AddressInfo).port;
  }
}
