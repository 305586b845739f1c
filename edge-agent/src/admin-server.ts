/** `/healthz` and `/metrics` (Prometheus text format) of the agent. */
import { createServer, type Server } from 'node:http';
import { Registry, Gauge, Counter, collectDefaultMetrics } from 'prom-client';
import type { DeadLetterForwarder } from './buffer/jetstream-dead-letter-forwarder.js';
import type { DeadLetterStore, Outbox } from './buffer/outbox.js';
import type { IngestPipeline } from './ingest.js';
import type { Publisher } from './publisher/publisher.js';
import type { Source } from './sources/source.js';
import type { EventValidator } from './validation/event-validator.js';
import type { KvSchemaWatcher } from './validation/kv-schema-watcher.js';

export interface AdminDeps {
  agentId: string;
  /** Running sources; those that refuse input before ingest report counts per code. */
  sources?: readonly Source[];
  outbox: Outbox;
  ingest: IngestPipeline;
  publisher: Publisher;
  deadLetters?: { store: DeadLetterStore; forwarder: DeadLetterForwarder };
  /** The watcher exists once the hub connection is up (and the registry is enabled). */
  schemas?: { validator: EventValidator; watcher: () => KvSchemaWatcher | undefined };
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
  new Counter({
    name: 'edge_source_refusals_total',
    help: 'Inputs refused by a source before ingest (authentication, topic ACL, limits, rate limits), by code.',
    labelNames: ['source', 'code'],
    registers: [registry],
    collect() {
      this.reset();
      for (const source of deps.sources ?? []) {
        for (const [code, n] of Object.entries(source.refusalCounts?.() ?? {})) if (n) this.inc({ source: source.name, code }, n);
      }
    },
  });
  counter('edge_aggregation_late_events_total', 'Events too late for their pre-aggregation window (already emitted).', () => deps.ingest.aggregationStats()?.lateEvents ?? 0);
  counter('edge_aggregation_windows_emitted_total', 'Pre-aggregation window results emitted.', () => deps.ingest.aggregationStats()?.windowsEmitted ?? 0);
  gauge('edge_aggregation_open_windows', 'Pre-aggregation windows open (state kept in the outbox database).', () => deps.ingest.aggregationStats()?.openWindows ?? 0);
  gauge('edge_outbox_rows', 'Events waiting in the outbox.', () => deps.outbox.stats().rows);
  gauge('edge_outbox_bytes', 'Bytes of events waiting in the outbox.', () => deps.outbox.stats().bytes);
  gauge('edge_outbox_max_bytes', 'Bound of the outbox in bytes.', () => deps.outbox.stats().maxBytes);
  gauge('edge_outbox_oldest_age_seconds', 'Age of the oldest event in the outbox.', () => {
    const oldest = deps.outbox.stats().oldestAppendedAtMs;
    return oldest === undefined ? 0 : (Date.now() - oldest) / 1000;
  });
  gauge('edge_dead_letters', 'Dead letters stored.', () => deps.outbox.stats().deadLetters);
  const { deadLetters, schemas } = deps;
  if (deadLetters) {
    const stats = () => deadLetters.store.deadLetterStats();
    gauge('edge_dead_letters_unforwarded', 'Dead letters not yet acknowledged by the hub\'s DLQ stream.', () => stats().unforwarded);
    gauge('edge_dead_letters_bytes', 'Payload bytes of the dead letters stored.', () => stats().bytes);
    counter('edge_dead_letters_dropped_total', 'Dead letters deleted by the bound before they reached the hub.', () => stats().dropped);
    counter('edge_dead_letters_pruned_total', 'Forwarded dead letters deleted by the bound.', () => stats().pruned);
    counter('edge_dead_letters_forwarded_total', 'Dead letters acknowledged by the hub\'s DLQ stream.', () => deadLetters.forwarder.stats.forwarded);
    counter('edge_dead_letter_batches_forwarded_total', 'DLQ messages (batches of dead letters) acknowledged by the hub\'s DLQ stream.', () => deadLetters.forwarder.stats.batches);
    counter('edge_dead_letter_forward_errors_total', 'Failed dead-letter publish attempts (retried).', () => deadLetters.forwarder.stats.errors);
  }
  if (schemas) {
    gauge('edge_schema_versions', 'Schema versions the validator knows.', () => schemas.validator.versions().length);
    counter('edge_schema_versions_learned_total', 'Schema versions added from the hub\'s registry while running.', () => schemas.watcher()?.stats.learned ?? 0);
    counter('edge_schema_versions_refused_total', 'Registry entries the agent could not use.', () => schemas.watcher()?.stats.refused ?? 0);
    gauge('edge_schema_registry_watching', '1 while the schema registry watch is established.', () => (schemas.watcher()?.stats.watching ? 1 : 0));
  }
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
          ...(deps.deadLetters ? { deadLetters: { ...deps.deadLetters.store.deadLetterStats(), ...deps.deadLetters.forwarder.stats } } : {}),
          ...(deps.schemas ? { schemas: { versions: deps.schemas.validator.versions(), registry: deps.schemas.watcher()?.stats ?? null } } : {}),
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
