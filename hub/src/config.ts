/** The hub's configuration: one JSON Schema (defaults and descriptions on every field), loaded once at start. */
import { hostname } from 'node:os';
import type { RecommendationsConfig } from './recommendations/infrastructure/recommendations-service.js';
import type { PipelineAlertThresholds } from './alerting/pipeline-alert-rules.js';
import type { WebhookConfig } from './alerting/webhook-notifier.js';
import { ConfigError, configPathFromArgv, loadConfig } from '../../shared/config.js';
import { natsAuthProblems, natsAuthSchemaProperties, type NatsAuthConfig } from '../../shared/nats-auth.js';
import { DEFAULT_SCHEMA_DIR } from '../../shared/schema-catalog.js';
import { watermarkSettingsSchema } from './operators/watermark.js';
import { DEFAULT_RULES_DIR } from './rules/kv-rule-store.js';
import type { ScalingSettings } from './scaling/scaling-policy.js';

export type StreamRetention = 'interest' | 'limits';

export interface HubConfig {
  nats: NatsAuthConfig & { servers: string[]; name: string };
  questdb: { httpUrl: string; username?: string; password?: string; requestTimeoutMs: number; retryTimeoutMs: number };
  rollups: { enabled: boolean; refreshEveryMinutes: number };
  consumer: { enabled: boolean; durableName: string; ackWaitMs: number; maxAckPendingMessages: number; pullMaxMessages: number };
  sink: {
    maxRows: number;
    flushIntervalMs: number;
    backlogFlushIntervalMs: number;
    backlogThresholdMessages: number;
    maxBufferedRows: number;
    retryInitialMs: number;
    retryMaxMs: number;
    holdOnFailureMs: number;
    maxUnresolvedMessages: number;
    unresolvedTimeoutMs: number;
  };
  streams: {
    replicas: number;
    maxBytes: number;
    maxAgeMs: number;
    retention: StreamRetention;
    duplicateWindowMs: number;
    dlqMaxBytes: number;
    dlqMaxAgeMs: number;
  };
  schemasDir: string;
  schemaRegistry: { enabled: boolean; bucket: string; replicas: number; watch: boolean; retryMs: number; missingTtlMs: number };
  deadLetters: { publishTimeoutMs: number; maxInFlight: number };
  analytics: {
    enabled: boolean;
    catalogueEnrichment: boolean;
    partitions: number;
    workerId: string;
    rulesDir: string;
    rulesBucket: string;
    stateBucket: string;
    leasesBucket: string;
    replicas: number;
    leaseTtlMs: number;
    checkpointIntervalMs: number;
    outputFlushIntervalMs: number;
    backlogThresholdMessages: number;
    maxPendingOutputs: number;
    ackWaitMs: number;
    maxAckPending: number;
    inactiveThresholdMs: number;
    freshStart: 'all' | 'new';
    watermark: { maxOutOfOrdernessMs: number; idleTimeoutMs: number; advanceWhenAllIdle: boolean };
  };
  recommendations: RecommendationsConfig;
  http: { host: string; port: number };
  dashboard: { enabled: boolean; intervalMs: number; maxClients: number; metricsIntervalMs: number; metricsTable: string };
  alerting: { pipeline: { enabled: boolean } & PipelineAlertThresholds; webhooks: WebhookConfig[] };
  quality: { enabled: boolean; reloadIntervalMs: number; edgeRefusals: boolean; alerts: { enabled: boolean; evaluateIntervalMs: number } };
  scaling: ScalingSettings & { intervalMs: number; firstWorkerPort: number; httpPort: number; stopTimeoutMs: number };
  logIntervalMs: number;
  shutdownTimeoutMs: number;
}

const GiB = 1024 * 1024 * 1024;

export const hubConfigSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    nats: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Connection to the NATS JetStream cluster.',
      properties: {
        servers: {
          type: 'array',
          items: { type: 'string', minLength: 1 },
          minItems: 1,
          default: ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223', 'nats://127.0.0.1:4224'],
          description: 'Seed URLs of the cluster (the client learns the other members from the server).',
        },
        ...natsAuthSchemaProperties,
        name: {
          type: 'string',
          minLength: 1,
          default: `hub-${hostname()}`,
          description: 'Connection name shown in the server\'s monitoring. @default hub-<host name>',
        },
      },
    },
    questdb: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'The QuestDB server rows are written to (ILP over HTTP, REST for DDL).',
      properties: {
        httpUrl: {
          type: 'string',
          pattern: '^https?://',
          default: 'http://127.0.0.1:9000',
          description: 'Base URL of QuestDB\'s HTTP server (serves /write, /exec and /ping).',
        },
        username: { type: 'string', description: 'HTTP basic auth user; unset: no authentication. @default unset' },
        password: { type: 'string', description: 'HTTP basic auth password, with `username`. @default unset' },
        requestTimeoutMs: {
          type: 'integer',
          minimum: 100,
          default: 10000,
          description: 'Time to wait for QuestDB to answer one request (the ILP client adds time for large bodies).',
        },
        retryTimeoutMs: {
          type: 'integer',
          minimum: 0,
          default: 1000,
          description: 'How long the ILP client itself retries a failed flush before the hub\'s own backoff takes over.',
        },
      },
    },
    rollups: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Hourly and daily rollups (QuestDB materialized views) of telemetry, app events and alerts, created at start.',
      properties: {
        enabled: { type: 'boolean', default: true, description: 'Create the rollup views that are missing (existing ones are kept either way).' },
        refreshEveryMinutes: {
          type: 'integer',
          minimum: 0,
          default: 1,
          description: 'Refresh interval of the hourly views; 0 refreshes them after every commit (costly: each refresh recomputes whole hours).',
        },
      },
    },
    consumer: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'The durable pull consumer on the EVENTS stream, shared by every hub process.',
      properties: {
        enabled: {
          type: 'boolean',
          default: true,
          description:
            'Write the raw events to QuestDB in this process. false for a process that only runs the analytics, so the two paths get a core each.',
        },
        durableName: {
          type: 'string',
          pattern: '^[A-Za-z0-9_-]{1,64}$',
          default: 'hub-raw',
          description: 'Durable consumer name; hub processes with the same name share the work.',
        },
        ackWaitMs: {
          type: 'integer',
          minimum: 1000,
          default: 30000,
          description: 'JetStream redelivers a message not acked within this time (to any hub process).',
        },
        maxAckPendingMessages: {
          type: 'integer',
          minimum: 1,
          default: 10000,
          description: 'Messages delivered but not yet acked, over all hub processes sharing the durable (server-side bound).',
        },
        pullMaxMessages: {
          type: 'integer',
          minimum: 1,
          default: 500,
          description: 'Messages one pull request asks for; also the bound of the client\'s read-ahead queue.',
        },
      },
    },
    sink: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Batching of rows into QuestDB and behaviour while QuestDB fails.',
      properties: {
        maxRows: {
          type: 'integer',
          minimum: 1,
          default: 50000,
          description: 'Flush as soon as this many rows are buffered.',
        },
        flushIntervalMs: {
          type: 'integer',
          minimum: 1,
          default: 250,
          description:
            'Flush when the oldest buffered row is this old (latency target: p95 < 1 s end to end). Each flush is a QuestDB transaction per table, and each costs QuestDB tens of ms of CPU (measured: 10k rows/s took 124% of a core in 10 commits/s, 31% in 2).',
        },
        backlogFlushIntervalMs: {
          type: 'integer',
          minimum: 1,
          default: 1000,
          description:
            'The same while the hub is behind (see backlogThresholdMessages): fewer, larger QuestDB transactions, each an out-of-order merge for the server.',
        },
        backlogThresholdMessages: {
          type: 'integer',
          minimum: 1,
          default: 1000,
          description: 'The hub is behind when the server has at least this many more messages for it (live traffic always has a few).',
        },
        maxBufferedRows: {
          type: 'integer',
          minimum: 1,
          default: 200000,
          description: 'Stop consuming while this many rows are buffered or in flight (policy when full: pause pulling).',
        },
        retryInitialMs: {
          type: 'integer',
          minimum: 1,
          default: 100,
          description: 'First delay before retrying a failed flush (doubles up to retryMaxMs).',
        },
        retryMaxMs: {
          type: 'integer',
          minimum: 1,
          default: 5000,
          description: 'Longest delay between flush retries.',
        },
        holdOnFailureMs: {
          type: 'integer',
          minimum: 0,
          default: 20000,
          description:
            'While flushes keep failing, hold the unflushed messages this long, then nak them and drop their rows so ' +
            'JetStream redelivers them later (possibly to another hub process). Plus retryMaxMs, must be below consumer.ackWaitMs.',
        },
        maxUnresolvedMessages: {
          type: 'integer',
          minimum: 1,
          default: 1000,
          description:
            'Stop consuming while this many messages wait for a schema registry lookup or for the DLQ stream to confirm ' +
            'their dead letters (policy when full: pause pulling).',
        },
        unresolvedTimeoutMs: {
          type: 'integer',
          minimum: 100,
          default: 10000,
          description:
            'Nak (for redelivery after retryMaxMs) a message whose schema lookup or dead-letter publish has not finished ' +
            'after this long. Must be below consumer.ackWaitMs.',
        },
      },
    },
    streams: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'The JetStream streams the hub creates or updates at start.',
      properties: {
        replicas: { type: 'integer', minimum: 1, maximum: 5, default: 3, description: 'Replicas of EVENTS and DLQ.' },
        maxBytes: {
          type: 'integer',
          minimum: 1048576,
          default: 10 * GiB,
          description: 'Size bound of EVENTS; when full, publishes are refused (discard new) and edges keep events in their outbox. @default 10 GiB',
        },
        maxAgeMs: {
          type: 'integer',
          minimum: 0,
          default: 0,
          description: 'Age bound of EVENTS messages; 0: none (with interest retention, acked messages go anyway).',
        },
        retention: {
          enum: ['interest', 'limits'],
          default: 'interest',
          description:
            '`interest`: a message is removed once every consumer acked it, so maxBytes bounds the backlog, not the ' +
            'history; `limits`: messages stay until maxBytes/maxAgeMs (with discard new, a full stream refuses publishes ' +
            'even when everything was consumed).',
        },
        duplicateWindowMs: {
          type: 'integer',
          minimum: 1000,
          default: 120000,
          description: 'Window in which a repeated Nats-Msg-Id is dropped by the stream.',
        },
        dlqMaxBytes: { type: 'integer', minimum: 1048576, default: GiB, description: 'Size bound of DLQ (oldest dropped). @default 1 GiB' },
        dlqMaxAgeMs: {
          type: 'integer',
          minimum: 0,
          default: 30 * 24 * 3600 * 1000,
          description: 'Age bound of DLQ messages; 0: none. @default 30 days',
        },
      },
    },
    schemasDir: {
      type: 'string',
      default: DEFAULT_SCHEMA_DIR,
      description: 'Folder of the versioned event schemas; tables and columns come from their x-questdb mapping. @default the repo\'s schemas/',
    },
    schemaRegistry: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'The NATS KV bucket the hub publishes its schema versions to at start (after the compatibility check); edge agents watch it.',
      properties: {
        enabled: { type: 'boolean', default: true, description: 'Publish schemas/ into the registry and map the registry\'s versions too.' },
        bucket: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', default: 'schemas', description: 'KV bucket name (key <type>.v<N>).' },
        replicas: { type: 'integer', minimum: 1, maximum: 5, default: 3, description: 'Replicas of the bucket when the hub creates it.' },
        watch: {
          type: 'boolean',
          default: true,
          description:
            'While running, watch the bucket and map each new version (table and columns too) before its events arrive. ' +
            'An event of a version the hub does not map makes it look the version up anyway.',
        },
        retryMs: { type: 'integer', minimum: 100, default: 2000, description: 'Wait before watching again after the watch failed.' },
        missingTtlMs: {
          type: 'integer',
          minimum: 0,
          default: 1000,
          description:
            'After a lookup found no such version, events of it go to the DLQ without asking the registry again for this ' +
            'long (a version seen on the watch ends it at once).',
        },
      },
    },
    deadLetters: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description:
        'Events the hub cannot write (schema version unknown or refused, invalid event) go to the DLQ stream on ' +
        'dlq.hub.<reason>; their message is acked only after the PubAck.',
      properties: {
        publishTimeoutMs: { type: 'integer', minimum: 100, default: 5000, description: 'Time to wait for the PubAck of one dead letter.' },
        maxInFlight: { type: 'integer', minimum: 1, default: 256, description: 'Dead letters waiting for their PubAck at once.' },
      },
    },
    analytics: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description:
        'Window and CEP rules over the event partitions: partitions are leased between hub workers (NATS KV), operator ' +
        'state is snapshotted to KV with the stream position it covers, and messages are acked only once a snapshot covers them.',
      properties: {
        enabled: { type: 'boolean', default: true, description: 'Run the rules (window results, alerts) besides writing raw events.' },
        partitions: {
          type: 'integer',
          minimum: 1,
          maximum: 1024,
          default: 8,
          description: "Number of event partitions (events.<agent>.<partition>); must equal the edge agents' `partitions`.",
        },
        workerId: {
          type: 'string',
          pattern: '^[A-Za-z0-9_.-]{1,64}$',
          default: `${hostname()}-${process.pid}`,
          description: 'Name of this worker in the partition leases. @default <host name>-<pid>',
        },
        rulesDir: { type: 'string', default: DEFAULT_RULES_DIR, description: 'Rule files published into the rules bucket at start (never overwriting a rule edited in KV). @default the repo\'s hub/rules/' },
        rulesBucket: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', default: 'hub-rules', description: 'KV bucket of the rules (key rule.<name>); watched, so rules change without restart.' },
        stateBucket: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', default: 'hub-operator-state', description: 'KV bucket of the operator snapshots (key p<partition>).' },
        catalogueEnrichment: {
          type: 'boolean',
          default: false,
          description:
            'Add product: { id, name, category, price } from the product catalogue (recommendations.catalogueFile and the KV bucket recs-catalogue) to app events about a product before the rules see them, so rules can use product.category and product.price.',
        },
        leasesBucket: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', default: 'hub-leases', description: 'KV bucket of the partition leases and worker heartbeats.' },
        replicas: { type: 'integer', minimum: 1, maximum: 5, default: 3, description: 'Replicas of the three buckets when the hub creates them.' },
        leaseTtlMs: {
          type: 'integer',
          minimum: 1000,
          default: 15000,
          description: "A dead worker's partitions are free this long after its last renewal (then taken within a rebalance period).",
        },
        checkpointIntervalMs: {
          type: 'integer',
          minimum: 100,
          default: 2000,
          description: 'How often outputs are flushed, the snapshot saved and the covered messages acked.',
        },
        outputFlushIntervalMs: {
          type: 'integer',
          minimum: 50,
          default: 500,
          description:
            'Between checkpoints, how often window results, alerts and late events are written out (upserts and deduplicated publishes, so a replay repeats them harmlessly): results show this soon, not at the next checkpoint.',
        },
        backlogThresholdMessages: {
          type: 'integer',
          minimum: 1,
          default: 200,
          description: 'A partition is behind (its outputs wait for the checkpoint) when the server has at least this many more of its messages.',
        },
        maxPendingOutputs: { type: 'integer', minimum: 1, default: 20000, description: 'Checkpoint early when this many outputs wait for the next flush.' },
        ackWaitMs: {
          type: 'integer',
          minimum: 1000,
          default: 120000,
          description: 'ack_wait of the analytics consumers; far above checkpointIntervalMs (a redelivery would only be skipped).',
        },
        maxAckPending: { type: 'integer', minimum: 1, default: 20000, description: 'Messages delivered and not yet covered by a snapshot, per partition.' },
        inactiveThresholdMs: {
          type: 'integer',
          minimum: 60000,
          default: 3600000,
          description:
            'A partition nobody reads for this long loses its consumer (deleted by the server), so an abandoned one cannot hold EVENTS ' +
            'messages forever; the next owner then resumes at the oldest message still stored.',
        },
        freshStart: {
          enum: ['all', 'new'],
          default: 'all',
          description:
            'Where a partition without a snapshot (a new state bucket) starts: all = every message EVENTS still holds; new = only what is published after the first worker took it.',
        },
        watermark: watermarkSettingsSchema,
      },
    },
    recommendations: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description:
        'Real-time customer profiles and recommendations from shop app events (hub/src/recommendations), served at /v1/... on the http port. ' +
        'Partitions are leased between the hubs that enable it; profiles and item statistics live in NATS KV (recs-profiles, recs-items).',
      properties: {
        enabled: { type: 'boolean', default: false, description: 'Run the recommendations (apply events and serve the API).' },
        applyEvents: { type: 'boolean', default: true, description: 'Apply events (take partition leases); false: only serve the API from the read model.' },
        workerId: {
          type: 'string',
          pattern: '^[A-Za-z0-9_.-]{1,64}$',
          default: `${hostname()}-${process.pid}`,
          description: 'Name of this worker in the recommendations leases. @default <host name>-<pid>',
        },
        partitions: { type: 'integer', minimum: 1, maximum: 1024, default: 8, description: "Number of event partitions; must equal the edge agents' `partitions`." },
        replicas: { type: 'integer', minimum: 1, maximum: 5, default: 3, description: 'Replicas of the recommendations KV buckets when the hub creates them.' },
        catalogueFile: { type: 'string', minLength: 1, description: 'Products loaded at start: JSON array or NDJSON of { id, name, category, price } (the KV bucket recs-catalogue is watched too). @default none' },
        flushIntervalMs: { type: 'integer', minimum: 50, default: 250, description: 'How often changed profiles and item statistics are written to KV and the covered messages acked.' },
        backlogFlushIntervalMs: {
          type: 'integer',
          minimum: 50,
          default: 2000,
          description: 'The flush interval while a partition has a backlog (backlogThresholdMessages or more waiting behind the one applied): each changed record is written once for more events.',
        },
        backlogThresholdMessages: {
          type: 'integer',
          minimum: 1,
          default: 8,
          description: 'Messages waiting behind the one applied from which a partition counts as having a backlog (a live feed has one or two at any time).',
        },
        leaseTtlMs: { type: 'integer', minimum: 1000, default: 15000, description: "A dead worker's partitions are free this long after its last renewal." },
        ackWaitMs: { type: 'integer', minimum: 1000, default: 60000, description: 'ack_wait of the recommendations consumers (far above flushIntervalMs).' },
        cacheMaxAgeMs: {
          type: 'integer',
          minimum: 0,
          default: 30000,
          description: "How long a customer's recommendation list is served from memory unless the customer's profile changes meanwhile (0: scored on every request). Other customers' interactions move the scores only slowly.",
        },
        maxAckPending: { type: 'integer', minimum: 1, default: 1000, description: 'Messages delivered and not yet covered by a checkpoint, per partition: how far applying may run ahead of the last completed flush (and what a new owner replays at most).' },
        inactiveThresholdMs: { type: 'integer', minimum: 60000, default: 3600000, description: 'A consumer nobody reads for this long is deleted by the server (so it cannot hold EVENTS messages forever).' },
      },
    },
    http: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Health and metrics endpoint.',
      properties: {
        host: { type: 'string', default: '127.0.0.1', description: 'Address to listen on (0.0.0.0 to expose it).' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 8090, description: '`/healthz`, `/metrics` and `/dashboard` port; 0 disables.' },
      },
    },
    quality: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description:
        'Data quality per source and minute (table data_quality): the rules declared in schemas/<type>/quality.json, run with the analytics (analytics.enabled must be true).',
      properties: {
        enabled: { type: 'boolean', default: true, description: 'Publish the quality rules of schemasDir into the rules bucket, keep them in step with the files, and run them (false: this hub runs no quality.* rule). Keep it the same on every hub that runs rules: a partition taken by a hub without them drops their state.' },
        reloadIntervalMs: { type: 'integer', minimum: 0, default: 5000, description: 'How often the quality files are read again (0: only at start).' },
        edgeRefusals: { type: 'boolean', default: true, description: 'Write the events the edge agents refused (DLQ stream) into edge_refusals, for validity.' },
        alerts: {
          type: 'object',
          additionalProperties: false,
          default: {},
          description: 'Thresholds of the quality files (alerts) checked against data_quality and edge_refusals; alerts go to the ALERTS stream. With several hub processes, enable them on one.',
          properties: {
            enabled: { type: 'boolean', default: true, description: 'Check the thresholds from this hub.' },
            evaluateIntervalMs: { type: 'integer', minimum: 1000, default: 30000, description: 'How often the thresholds are checked.' },
          },
        },
      },
    },
    alerting: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Pipeline alerts raised from the dashboard\'s snapshots, and webhooks that receive every alert (CEP and pipeline) from the ALERTS stream.',
      properties: {
        pipeline: {
          type: 'object',
          additionalProperties: false,
          default: {},
          description: 'Alerts on the pipeline itself, into the ALERTS stream and QuestDB\'s alerts table. With several hub processes, enable them on one.',
          properties: {
            enabled: { type: 'boolean', default: true, description: 'Raise pipeline alerts from this hub.' },
            consumerLagMessages: { type: 'integer', minimum: 1, default: 10000, description: 'pipeline.consumer_lag: messages pending plus unacknowledged on a consumer of EVENTS.' },
            edgeSilentMs: { type: 'integer', minimum: 1000, default: 60000, description: 'pipeline.edge_silent: no status report from an agent for this long.' },
            outboxFill: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 0.8, description: 'pipeline.outbox_filling: share of an agent\'s outbox bound in use.' },
            edgeErrorRatio: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 0.05, description: 'pipeline.edge_errors: share of an agent\'s input it refuses.' },
            forMs: { type: 'integer', minimum: 0, default: 30000, description: 'How long a condition must hold before it is raised.' },
          },
        },
        webhooks: {
          type: 'array',
          default: [],
          description: 'Each gets every alert of the ALERTS stream it wants, POSTed as JSON with an idempotency-key header, retried until a 2xx.',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'url'],
            properties: {
              name: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'Names its durable consumer (webhook-<name>).' },
              url: { type: 'string', pattern: '^https?://', description: 'Where alerts are POSTed.' },
              minSeverity: { enum: ['info', 'warning', 'critical'], default: 'info', description: 'Least severity delivered (resolved pipeline alerts are info).' },
              rules: { type: 'array', items: { type: 'string' }, default: [], description: 'Rule name prefixes delivered; empty: all.' },
              headers: { type: 'object', additionalProperties: { type: 'string' }, default: {}, description: 'Extra request headers (e.g. authorization).' },
              timeoutMs: { type: 'integer', minimum: 100, default: 5000, description: 'Timeout of one POST.' },
              maxDeliver: { type: 'integer', minimum: 1, default: 20, description: 'Attempts before an alert is given up (logged).' },
              backoffMs: { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1, default: [1000, 5000, 15000, 30000, 60000], description: 'Delays between attempts; the last repeats.' },
            },
          },
        },
      },
    },
    dashboard: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'The live dashboard at /dashboard on the http port (read-only; expose the port only where its viewers may see the pipeline).',
      properties: {
        enabled: { type: 'boolean', default: true, description: 'Serve /dashboard and gather its snapshots.' },
        intervalMs: { type: 'integer', minimum: 250, default: 1000, description: 'How often a snapshot is gathered and pushed to open pages.' },
        maxClients: { type: 'integer', minimum: 1, default: 20, description: 'Open dashboard streams at most; more are answered 503.' },
        metricsIntervalMs: {
          type: 'integer',
          minimum: 0,
          default: 5000,
          description: 'How often a snapshot is also written to QuestDB as the pipeline\'s own history (metricsTable). 0: never.',
        },
        metricsTable: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$', default: 'pipeline_metrics', description: 'QuestDB table of the pipeline\'s metrics (created by the hub).' },
      },
    },
    scaling: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description:
        '`hub scale` only: the supervisor that runs between minWorkers and maxWorkers hub worker processes on this host, from consumer lag and ingest latency. Workers ignore it.',
      properties: {
        minWorkers: { type: 'integer', minimum: 1, default: 1, description: 'Workers always running (worker 0 also runs the pipeline and quality alerts).' },
        maxWorkers: { type: 'integer', minimum: 1, default: 4, description: 'Workers at most; about one per core, as a worker uses up to one core.' },
        intervalMs: { type: 'integer', minimum: 100, default: 5000, description: 'How often lag and latency are measured and a decision taken.' },
        targetLagPerWorker: {
          type: 'integer',
          minimum: 1,
          default: 200,
          description:
            'Unprocessed EVENTS messages (edge batches) one worker is expected to carry; more than this x workers adds workers (ceil(lag / this)), as KEDA\'s lagThreshold does.',
        },
        latencyHighMs: {
          type: 'integer',
          minimum: 1,
          default: 1000,
          description: 'Ingest latency p95 (edge accepted -> row written, over the last interval) above which a worker is added: the pipeline\'s 1 s target.',
        },
        latencyLowMs: { type: 'integer', minimum: 1, default: 750, description: 'Ingest latency p95 at or below which a worker may be removed.' },
        scaleUpAfterMs: { type: 'integer', minimum: 0, default: 15000, description: 'How long the load must stay high before workers are added.' },
        scaleDownAfterMs: { type: 'integer', minimum: 0, default: 120000, description: 'How long the load must stay low before one worker is removed.' },
        coolDownMs: {
          type: 'integer',
          minimum: 0,
          default: 30000,
          description: 'After any change, no scale-up for this long: a new worker needs it to start, take its partitions and show its effect.',
        },
        scaleDownCoolDownMs: { type: 'integer', minimum: 0, default: 120000, description: 'After any change, no scale-down for this long.' },
        firstWorkerPort: {
          type: 'integer',
          minimum: 1,
          maximum: 65535,
          default: 8100,
          description: 'Worker n serves /healthz, /metrics and the dashboard on firstWorkerPort + n.',
        },
        httpPort: { type: 'integer', minimum: 0, maximum: 65535, default: 8099, description: 'The supervisor\'s own /metrics and /status.' },
        stopTimeoutMs: {
          type: 'integer',
          minimum: 1000,
          default: 60000,
          description: 'A worker told to stop (SIGTERM: it flushes, acks and gives its partitions back) is killed after this long.',
        },
      },
    },
    logIntervalMs: {
      type: 'integer',
      minimum: 0,
      default: 10000,
      description: 'Interval of the info log line with counters and rates; 0 disables it.',
    },
    shutdownTimeoutMs: {
      type: 'integer',
      minimum: 0,
      default: 15000,
      description: 'On SIGTERM, how long to keep retrying the last flush; unflushed messages are then nak\'ed for redelivery.',
    },
  },
} as const;

/** Checks between fields, which the JSON Schema cannot express. */
export function checkHubConfig(config: HubConfig): HubConfig {
  const problems: string[] = [];
  // Held messages are nak'ed at the first failed retry after holdOnFailureMs, so at most retryMaxMs later.
  if (config.sink.holdOnFailureMs + config.sink.retryMaxMs >= config.consumer.ackWaitMs) {
    problems.push(
      `sink.holdOnFailureMs + sink.retryMaxMs must be below consumer.ackWaitMs (else JetStream redelivers held messages first), got ${config.sink.holdOnFailureMs} + ${config.sink.retryMaxMs} >= ${config.consumer.ackWaitMs}`,
    );
  }
  if (config.sink.unresolvedTimeoutMs >= config.consumer.ackWaitMs) {
    problems.push(
      `sink.unresolvedTimeoutMs must be below consumer.ackWaitMs (else JetStream redelivers the waiting messages first), got ${config.sink.unresolvedTimeoutMs} >= ${config.consumer.ackWaitMs}`,
    );
  }
  if (config.sink.maxBufferedRows < config.sink.maxRows) {
    problems.push(`sink.maxBufferedRows must be at least sink.maxRows, got ${config.sink.maxBufferedRows} < ${config.sink.maxRows}`);
  }
  if (config.sink.retryMaxMs < config.sink.retryInitialMs) {
    problems.push(`sink.retryMaxMs must be at least sink.retryInitialMs, got ${config.sink.retryMaxMs} < ${config.sink.retryInitialMs}`);
  }
  if (config.consumer.pullMaxMessages > config.consumer.maxAckPendingMessages) {
    problems.push(
      `consumer.pullMaxMessages must not exceed consumer.maxAckPendingMessages, got ${config.consumer.pullMaxMessages} > ${config.consumer.maxAckPendingMessages}`,
    );
  }
  if (config.analytics.checkpointIntervalMs * 5 > config.analytics.ackWaitMs) {
    problems.push(
      `analytics.ackWaitMs must be at least 5 x analytics.checkpointIntervalMs (messages are acked at checkpoints), got ${config.analytics.ackWaitMs} < 5 x ${config.analytics.checkpointIntervalMs}`,
    );
  }
  if (config.scaling.maxWorkers < config.scaling.minWorkers) {
    problems.push(`scaling.maxWorkers must be at least scaling.minWorkers, got ${config.scaling.maxWorkers} < ${config.scaling.minWorkers}`);
  }
  if (config.scaling.latencyLowMs >= config.scaling.latencyHighMs) {
    problems.push(`scaling.latencyLowMs must be below scaling.latencyHighMs, got ${config.scaling.latencyLowMs} >= ${config.scaling.latencyHighMs}`);
  }
  problems.push(...natsAuthProblems(config.nats));
  if ((config.questdb.username === undefined) !== (config.questdb.password === undefined)) {
    problems.push('questdb.username and questdb.password must be set together');
  }
  if (problems.length > 0) {
    throw new ConfigError(`invalid hub config:\n${problems.map((p) => `  - config.${p}`).join('\n')}`);
  }
  return config;
}

/** `--config <file>` (JSON or YAML), then `HUB_*` environment overrides (e.g. `HUB_NATS__SERVERS`), then defaults. */
export function loadHubConfig(argv: string[] = process.argv.slice(2)): HubConfig {
  const path = configPathFromArgv(argv);
  return checkHubConfig(loadConfig<HubConfig>(hubConfigSchema, { ...(path ? { path } : {}), envPrefix: 'HUB_', what: 'hub' }));
}
