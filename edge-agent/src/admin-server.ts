/** `/healthz` and `/metrics` (Prometheus text format) of the agent. */
import { createServer, type Server } from 'node:http';
import { Registry, Gauge, Counter, collectDefaultMetrics } from 'prom-client';
import type { Outbox } from './buffer/outbox.js';
import type { IngestPipeline } from './ingest.js';
import type { Publisher } from './publisher/publisher.js';

export interface AdminDeps {
  agentId: string;
  outbox: Outbox;
  ingest: IngestPipeline;
  publisher: Publisher;
}

export function createMetricsRegistry(deps: AdminDeps): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ agent: deps.agentId });
  collectDefaultMetrics({ register: registry, prefix: 'edge_' });
  // Values are read from the components at scrape time: no per-event metric calls on the hot path.
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
  counter('edge_events_accepted_total', 'Events validated and committed to the outbox.', () => deps.ingest.counters.accepted);
  counter('edge_events_rejected_total', 'Events refused by validation and dead-lettered.', () => deps.ingest.counters.rejected);
  counter('edge_events_refused_outbox_full_total', 'Events refused because the outbox was full.', () => deps.ingest.counters.refusedFull);
  counter('edge_events_published_total', 'Events acknowledged by the hub (JetStream PubAck).', () => deps.publisher.stats.eventsPublished);
  counter('edge_publish_errors_total', 'Failed publish attempts (retried with the same message ids).', () => deps.publisher.stats.publishErrors);
  counter('edge_publish_duplicates_total', 'Messages JetStream reported as duplicates of earlier sends.', () => deps.publisher.stats.duplicateMessages);
  counter('edge_outbox_dropped_total', 'Events dropped by the drop-oldest policy.', () => deps.outbox.stats().dropped);
  gauge('edge_outbox_rows', 'Events waiting in the outbox.', () => deps.outbox.stats().rows);
  gauge('edge_outbox_bytes', 'Bytes of events waiting in the outbox.', () => deps.outbox.stats().bytes);
  gauge('edge_outbox_max_bytes', 'Bound of the outbox in bytes.', () => deps.outbox.stats().maxBytes);
  gauge('edge_outbox_oldest_age_seconds', 'Age of the oldest event in the outbox.', () => {
    const oldest = deps.outbox.stats().oldestAppendedAtMs;
    return oldest === undefined ? 0 : (Date.now() - oldest) / 1000;
  });
  gauge('edge_dead_letters', 'Dead letters stored.', () => deps.outbox.stats().deadLetters);
  gauge('edge_publish_ranges_in_flight', 'Outbox ranges sent and not yet acknowledged.', () => deps.publisher.stats.rangesInFlight);
  gauge('edge_publish_latency_seconds', 'Claim-to-PubAck time of the last range.', () => deps.publisher.stats.lastRangeLatencyMs / 1000);
  gauge('edge_hub_connected', '1 when the last publish succeeded.', () => (deps.publisher.stats.connected ? 1 : 0));
  return registry;
}

export async function startAdminServer(deps: AdminDeps, host: string, port: number): Promise<Server> {
  const registry = createMetricsRegistry(deps);
  const server = createServer((request, response) => {
    if (request.url === '/metrics') {
      registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: Error) => response.writeHead(500).end(error.message),
      );
    } else if (request.url === '/healthz') {
      const outbox = deps.outbox.stats();
      const healthy = outbox.bytes < outbox.maxBytes;
      response.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          status: healthy ? 'ok' : 'outbox_full',
          hubConnected: deps.publisher.stats.connected,
          outbox,
          ingest: deps.ingest.counters,
          publisher: deps.publisher.stats,
        }),
      );
    } else {
      response.writeHead(404).end('not found: try /healthz or /metrics\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
