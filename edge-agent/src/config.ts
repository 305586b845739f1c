/** The agent's configuration: one JSON Schema (defaults and descriptions on every field), loaded once at start. */
import { hostname } from 'node:os';
import { ConfigError, loadConfig, configPathFromArgv } from '../../shared/config.js';
import { natsAuthProblems, natsAuthSchemaProperties, type NatsAuthConfig } from '../../shared/nats-auth.js';
import { DEFAULT_SCHEMA_DIR } from '../../shared/schema-catalog.js';
import { AGENT_ID_PATTERN } from '../../shared/wire.js';
import { aggregationConfigSchema, type AggregationRule } from './aggregation/pre-aggregation.js';
import type { FullPolicy } from './buffer/outbox.js';
import { fileSourceConfigSchema, type FileSourceConfig } from './sources/file-source.js';
import { httpSourceConfigSchema, type HttpSourceConfig } from './sources/http-source.js';
import { mqttBridgeSourceConfigSchema, type MqttBridgeSourceConfig } from './sources/mqtt-bridge-source.js';
import { mqttSourceConfigSchema, type MqttSourceConfig } from './sources/mqtt-source.js';
import { sqlPollSourceConfigSchema, type SqlPollSourceConfig } from './sources/sql-poll-source.js';

export interface AgentConfig {
  agentId: string;
  dataDir: string;
  schemasDir: string;
  partitions: number;
  nats: NatsAuthConfig & { servers: string[]; inboxPrefix?: string; ignoreDiscoveredServers: boolean; statusIntervalMs: number };
  outbox: { maxBytes: number; fullPolicy: FullPolicy; synchronous: 'full' | 'normal' };
  publisher: {
    maxBatchEvents: number;
    maxBatchBytes: number;
    lingerMs: number;
    maxInFlightRanges: number;
    publishTimeoutMs: number;
    retryInitialMs: number;
    retryMaxMs: number;
  };
  sources: {
    mqtt: MqttSourceConfig;
    http: HttpSourceConfig;
    mqttBridge: MqttBridgeSourceConfig;
    file: FileSourceConfig;
    sqlPoll: SqlPollSourceConfig;
  };
  aggregation: AggregationRule[];
  admin: { host: string; port: number };
  schemaRegistry: { enabled: boolean; bucket: string; retryMs: number };
  validation: { maxFutureMs: number };
  deadLetters: {
    maxRows: number;
    maxBytes: number;
    forward: boolean;
    forwardBatch: number;
    forwardBatchBytes: number;
    forwardIntervalMs: number;
    maxForwardPayloadBytes: number;
  };
  shutdownTimeoutMs: number;
}

const defaultAgentId = hostname().replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 64) || 'edge';

export const agentConfigSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    agentId: {
      type: 'string',
      pattern: AGENT_ID_PATTERN,
      default: defaultAgentId,
      description: 'Unique id of this agent; part of subjects and message ids. @default the host name',
    },
    dataDir: { type: 'string', default: '.runtime/agent', description: 'Folder of the SQLite outbox.' },
    schemasDir: { type: 'string', default: DEFAULT_SCHEMA_DIR, description: 'Folder of the versioned event schemas.' },
    partitions: {
      type: 'integer',
      minimum: 1,
      maximum: 1024,
      default: 8,
      description: 'Number of partitions events are hashed into by key; must equal the hub\'s.',
    },
    nats: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Connection to the hub\'s NATS cluster.',
      properties: {
        servers: {
          type: 'array',
          items: { type: 'string' },
          minItems: 1,
          default: ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223', 'nats://127.0.0.1:4224'],
          description: 'Seed URLs of the cluster.',
        },
        ...natsAuthSchemaProperties,
        ignoreDiscoveredServers: {
          type: 'boolean',
          default: false,
          description: 'Connect only to `servers`, never to the addresses the cluster announces: for gateways that reach the hub through NAT, port forwards or a proxy, where those addresses are unreachable.',
        },
        statusIntervalMs: {
          type: 'integer',
          minimum: 0,
          default: 5000,
          description: 'How often the agent reports its counters and backlog on status.<agentId> (core NATS) for the hub\'s dashboard and silence alerts. 0: never.',
        },
        inboxPrefix: {
          type: 'string',
          pattern: '^[A-Za-z0-9_-]+$',
          description: 'Prefix of the subjects replies to this agent arrive on; an edge user made by make-security.ts may only subscribe to `_INBOX_<agentId>.>`. @default _INBOX_<agentId>',
        },
      },
    },
    outbox: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'The SQLite store-and-forward buffer.',
      properties: {
        maxBytes: {
          type: 'integer',
          minimum: 1024,
          default: 536870912,
          description: 'Bound on the bytes of events waiting to be forwarded. @default 512 MiB',
        },
        fullPolicy: {
          enum: ['reject', 'drop-oldest'],
          default: 'reject',
          description: '`reject`: refuse new events (MQTT: no PUBACK, HTTP: 503); `drop-oldest`: delete the oldest unsent events and count them.',
        },
        synchronous: {
          enum: ['full', 'normal'],
          default: 'full',
          description: '`full` fsyncs every commit (acknowledged events survive power loss); `normal` survives only a process crash.',
        },
      },
    },
    publisher: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Forwarding of the outbox to JetStream.',
      properties: {
        maxBatchEvents: { type: 'integer', minimum: 1, default: 2000, description: 'Most events in one outbox range.' },
        maxBatchBytes: { type: 'integer', minimum: 1024, default: 2097152, description: 'Most bytes in one outbox range.' },
        lingerMs: { type: 'integer', minimum: 0, default: 5, description: 'Wait for a fuller batch while another is in flight.' },
        maxInFlightRanges: { type: 'integer', minimum: 1, default: 8, description: 'Ranges sent but not yet acknowledged; 1 gives strict per-device order in the stream even across a leader failure.' },
        publishTimeoutMs: { type: 'integer', minimum: 100, default: 5000, description: 'Time to wait for a PubAck.' },
        retryInitialMs: { type: 'integer', minimum: 10, default: 200, description: 'First retry delay after a failed publish.' },
        retryMaxMs: { type: 'integer', minimum: 10, default: 2000, description: 'Longest retry delay (exponential backoff); short, so that writes resume soon after a leader election.' },
      },
    },
    sources: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Where events come in.',
      properties: {
        mqtt: mqttSourceConfigSchema,
        http: httpSourceConfigSchema,
        mqttBridge: mqttBridgeSourceConfigSchema,
        file: fileSourceConfigSchema,
        sqlPoll: sqlPollSourceConfigSchema,
      },
    },
    schemaRegistry: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'New schema versions from the hub (NATS KV), compiled without a restart; the local schemasDir is always loaded first.',
      properties: {
        enabled: { type: 'boolean', default: true, description: 'Watch the hub\'s schema registry bucket.' },
        bucket: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', default: 'schemas', description: 'KV bucket the hub publishes schema versions to.' },
        retryMs: { type: 'integer', minimum: 100, default: 5000, description: 'Wait before watching again after the bucket was missing or the watch failed.' },
      },
    },
    validation: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Checks beyond the schemas.',
      properties: {
        maxFutureMs: {
          type: 'integer',
          minimum: 0,
          default: 3600000,
          description:
            'Refuse an event whose time is more than this ahead of the gateway clock (EDGE_ERR_FUTURE_TIMESTAMP): a device clock set wrong would move the windows\' watermarks and make other events late. 0: no bound. @default 1 hour',
        },
      },
    },
    deadLetters: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Refused events: kept in the outbox file (bounded), forwarded to the hub\'s DLQ stream, inspected and redriven with edge-dlq.',
      properties: {
        maxRows: { type: 'integer', minimum: 1, default: 100000, description: 'Most dead letters kept; over it, the oldest forwarded go first, then the oldest (counted as dropped).' },
        maxBytes: {
          type: 'integer',
          minimum: 1024,
          default: 67108864,
          description: 'Most payload bytes of dead letters kept, with the same policy as maxRows. @default 64 MiB',
        },
        forward: { type: 'boolean', default: true, description: 'Send dead letters to the hub\'s DLQ stream (dlq.<agentId>); marked forwarded after the PubAck.' },
        forwardBatch: { type: 'integer', minimum: 1, maximum: 10000, default: 500, description: 'Most dead letters in one DLQ message (one JetStream publish per batch).' },
        forwardBatchBytes: {
          type: 'integer',
          minimum: 4096,
          default: 524288,
          description: 'Most bytes of one DLQ message; keep it below the servers\' max_payload (1 MiB unless set). @default 512 KiB',
        },
        forwardIntervalMs: { type: 'integer', minimum: 10, default: 1000, description: 'Pause between forwarding rounds when no full batch is waiting: how long a dead letter may wait to travel with others.' },
        maxForwardPayloadBytes: {
          type: 'integer',
          minimum: 0,
          default: 65536,
          description: 'Payload bytes sent with a dead letter; longer payloads are cut (marked truncated) and stay whole locally.',
        },
      },
    },
    aggregation: aggregationConfigSchema,
    admin: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Health and metrics endpoint.',
      properties: {
        host: { type: 'string', default: '0.0.0.0', description: 'Address to listen on.' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 9464, description: '`/healthz` and `/metrics` port.' },
      },
    },
    shutdownTimeoutMs: {
      type: 'integer',
      minimum: 0,
      default: 10000,
      description: 'On SIGTERM, how long to wait for in-flight publishes before exiting (the outbox keeps the rest).',
    },
  },
} as const;

export function loadAgentConfig(argv: string[] = process.argv.slice(2)): AgentConfig {
  const path = configPathFromArgv(argv);
  const config = loadConfig<AgentConfig>(agentConfigSchema, { ...(path ? { path } : {}), envPrefix: 'EDGE_', what: 'edge agent' });
  const problems = natsAuthProblems(config.nats);
  if (problems.length > 0) throw new ConfigError(`invalid edge agent config:\n${problems.map((p) => `  - config.${p}`).join('\n')}`);
  return config;
}
