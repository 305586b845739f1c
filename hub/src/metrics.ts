/** Prometheus metrics of the hub (prom-client), on a registry of their own so tests can make a fresh set. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class HubMetrics {
  readonly messagesConsumed: Counter;
  readonly eventsConsumed: Counter;
  readonly messagesAcked: Counter;
  readonly messagesNaked: Counter;
  readonly rowsWritten: Counter;
  readonly flushes: Counter<'result'>;
  readonly flushDuration: Histogram;
  readonly flushRows: Histogram;
  readonly decodeErrors: Counter;
  readonly eventsSkipped: Counter<'reason'>;
  readonly eventsDeadLettered: Counter<'reason'>;
  readonly deadLetterFailures: Counter;
  readonly eventsLearnedLate: Counter;
  readonly unresolvedMessages: Gauge;
  readonly schemaVersions: Gauge;
  readonly schemaVersionsLearned: Counter<'via'>;
  readonly schemaLookups: Counter<'result'>;
  readonly invalidColumns: Counter;
  readonly eventLatency: Histogram;
  readonly ingestLatency: Histogram;
  readonly bufferedRows: Gauge;
  readonly heldMessages: Gauge;
  readonly sinkFailing: Gauge;
  /** Set from the dashboard's snapshots (observability.ts): the cluster's view, the same on every hub process. */
  readonly consumerPending: Gauge<'consumer'>;
  readonly consumerAckPending: Gauge<'consumer'>;
  readonly edgeOutboxRows: Gauge<'agent'>;
  readonly edgeLastReportAge: Gauge<'agent'>;

  constructor(readonly registry: Registry = new Registry(), options: { defaultMetrics?: boolean } = {}) {
    const registers = [registry];
    if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
    this.messagesConsumed = new Counter({ name: 'hub_messages_consumed_total', help: 'JetStream messages received', registers });
    this.eventsConsumed = new Counter({ name: 'hub_events_consumed_total', help: 'Events in decoded messages', registers });
    this.messagesAcked = new Counter({ name: 'hub_messages_acked_total', help: 'Messages acked after their rows were written', registers });
    this.messagesNaked = new Counter({
      name: 'hub_messages_naked_total',
      help: 'Messages given back for redelivery (long sink outage, shutdown)',
      registers,
    });
    this.rowsWritten = new Counter({ name: 'hub_rows_written_total', help: 'Rows QuestDB confirmed', registers });
    this.flushes = new Counter({ name: 'hub_flushes_total', help: 'Sink flushes by result', labelNames: ['result'], registers });
    this.flushDuration = new Histogram({
      name: 'hub_flush_duration_seconds',
      help: 'Duration of one sink flush (one QuestDB transaction)',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.flushRows = new Histogram({
      name: 'hub_flush_rows',
      help: 'Rows per successful flush',
      buckets: [1, 10, 100, 1000, 5000, 10000, 25000, 50000, 100000],
      registers,
    });
    this.decodeErrors = new Counter({ name: 'hub_decode_errors_total', help: 'Messages that are not event batches (terminated)', registers });
    this.eventsSkipped = new Counter({
      name: 'hub_events_skipped_total',
      help:
        'Events the sink could not map when they arrived: reason=unknown_schema (type/version not mapped) or invalid_event. ' +
        'Each is then written after its version was learned, or dead-lettered',
      labelNames: ['reason'],
      registers,
    });
    this.eventsDeadLettered = new Counter({
      name: 'hub_events_dead_lettered_total',
      help: 'Events stored in the DLQ stream (dlq.hub.<reason>) instead of QuestDB: unknown_schema, schema_incompatible, invalid_event',
      labelNames: ['reason'],
      registers,
    });
    this.deadLetterFailures = new Counter({
      name: 'hub_dead_letter_failures_total',
      help: 'Messages not acked because the DLQ stream did not confirm their dead letters or the schema lookup failed (redelivered)',
      registers,
    });
    this.eventsLearnedLate = new Counter({
      name: 'hub_events_written_after_lookup_total',
      help: 'Events written once their schema version was learned from the registry after they arrived',
      registers,
    });
    this.unresolvedMessages = new Gauge({
      name: 'hub_unresolved_messages',
      help: 'Messages waiting for a schema lookup or for the DLQ stream to confirm their dead letters',
      registers,
    });
    this.schemaVersions = new Gauge({ name: 'hub_schema_versions', help: 'Schema versions the hub maps to tables', registers });
    this.schemaVersionsLearned = new Counter({
      name: 'hub_schema_versions_learned_total',
      help: 'Schema versions mapped while running, learned from the registry: via=watch (before their events) or lookup (on an event)',
      labelNames: ['via'],
      registers,
    });
    this.schemaLookups = new Counter({
      name: 'hub_schema_lookups_total',
      help: 'Registry lookups for an event of an unmapped version: result=mapped, unknown, refused or error',
      labelNames: ['result'],
      registers,
    });
    this.invalidColumns = new Counter({
      name: 'hub_invalid_columns_total',
      help: 'Values left unset because they did not fit their column type',
      registers,
    });
    const latencyBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 300];
    this.eventLatency = new Histogram({
      name: 'hub_event_latency_seconds',
      help: 'From event time to the write being confirmed (hub clock minus device clock), per message: its oldest event',
      buckets: latencyBuckets,
      registers,
    });
    this.ingestLatency = new Histogram({
      name: 'hub_ingest_latency_seconds',
      help: 'From the edge accepting an event to its write being confirmed (end to end through the pipeline), per message: its oldest event',
      buckets: latencyBuckets,
      registers,
    });
    this.bufferedRows = new Gauge({ name: 'hub_buffered_rows', help: 'Rows written to the sink and not yet confirmed', registers });
    this.heldMessages = new Gauge({ name: 'hub_held_messages', help: 'Messages received and not yet acked', registers });
    this.sinkFailing = new Gauge({ name: 'hub_sink_failing', help: '1 while flushes fail', registers });
    this.consumerPending = new Gauge({ name: 'hub_consumer_pending_messages', help: 'Messages of EVENTS not yet delivered to a durable consumer (its lag)', labelNames: ['consumer'], registers });
    this.consumerAckPending = new Gauge({ name: 'hub_consumer_ack_pending_messages', help: 'Messages delivered to a durable consumer of EVENTS and not yet acked', labelNames: ['consumer'], registers });
    this.edgeOutboxRows = new Gauge({ name: 'hub_edge_outbox_rows', help: "Events waiting in an edge agent's outbox, from its last status report", labelNames: ['agent'], registers });
    this.edgeLastReportAge = new Gauge({ name: 'hub_edge_last_report_age_seconds', help: 'Seconds since an edge agent last reported its status', labelNames: ['agent'], registers });
  }
}
