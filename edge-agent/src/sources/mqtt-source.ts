/**
 * Embedded MQTT broker (aedes) that devices publish to.
 *
 * aedes sends the QoS 1 PUBACK right after `authorizePublish` calls back, before it stores or routes anything,
 * so the durable commit happens inside that hook: the PUBACK means "in the outbox". Publishes that arrive
 * together share one SQLite transaction (the ingest pipeline's group commit).
 */
import { createServer, type Server } from 'node:net';
import { Aedes, type AuthorizePublishHandler } from 'aedes';
import { EdgeErrorCode, OutboxFullError } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import { itemsFromJson, type Source, type SourceDeps, type SourceFactory } from './source.js';

export interface MqttRoute {
  /** Topic pattern with `+` for one level, e.g. `devices/+/telemetry`. */
  pattern: string;
  /** Event type assumed for events on this topic. */
  type: string;
  /** Index of the topic level that holds the device id; an event naming another device is refused. */
  keyLevel?: number;
}

export interface MqttSourceConfig {
  enabled: boolean;
  host: string;
  port: number;
  maxPayloadBytes: number;
  routes: MqttRoute[];
}

export const mqttSourceConfigSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'Embedded MQTT broker that devices publish to.',
  properties: {
    enabled: { type: 'boolean', default: true, description: 'Run the embedded broker.' },
    host: { type: 'string', default: '0.0.0.0', description: 'Address to listen on.' },
    port: { type: 'integer', minimum: 0, maximum: 65535, default: 1883, description: 'MQTT TCP port.' },
    maxPayloadBytes: {
      type: 'integer',
      minimum: 1,
      default: 262144,
      description: 'Largest accepted PUBLISH payload; larger ones are dead-lettered with EDGE_ERR_TOO_LARGE.',
    },
    routes: {
      type: 'array',
      description: 'Which topics carry which event type.',
      default: [
        { pattern: 'devices/+/telemetry', type: 'device.telemetry', keyLevel: 1 },
        { pattern: 'devices/+/status', type: 'device.status', keyLevel: 1 },
      ],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['pattern', 'type'],
        properties: {
          pattern: { type: 'string', minLength: 1, description: 'Topic pattern, `+` matches one level.' },
          type: { type: 'string', minLength: 1, description: 'Event type of the events on this topic.' },
          keyLevel: { type: 'integer', minimum: 0, description: 'Topic level holding the device id.' },
        },
      },
    },
  },
} as const;

interface MatchedRoute {
  type: string;
  key?: string;
}

export function matchRoute(routes: MqttRoute[], topic: string): MatchedRoute | undefined {
  const levels = topic.split('/');
  for (const route of routes) {
    const pattern = route.pattern.split('/');
    if (pattern.length !== levels.length) continue;
    if (pattern.every((p, i) => p === '+' || p === levels[i])) {
      const key = route.keyLevel === undefined ? undefined : levels[route.keyLevel];
      return key === undefined ? { type: route.type } : { type: route.type, key };
    }
  }
  return undefined;
}

export const createMqttSource: SourceFactory<MqttSourceConfig> = (config, deps) => new MqttSource(config, deps);

class MqttSource implements Source {
  readonly name = 'mqtt';
  private broker: Aedes | undefined;
  private server: Server | undefined;

  constructor(
    private readonly config: MqttSourceConfig,
    private readonly deps: SourceDeps,
  ) {}

  async start(): Promise<void> {
    const broker = await Aedes.createBroker({ maxTopicLevels: 16 });
    broker.authorizePublish = this.authorizePublish;
    broker.on('clientError', (client, error) => {
      this.deps.log.warn({ client: client?.id, err: error.message }, 'mqtt client error');
    });
    this.broker = broker;
    this.server = createServer(broker.handle);
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.config.port, this.config.host, () => resolve());
    });
    this.deps.log.info({ port: this.port() }, 'mqtt broker listening');
  }

  port(): number {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : this.config.port;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (this.broker ? this.broker.close(() => resolve()) : resolve()));
  }

  private readonly authorizePublish: AuthorizePublishHandler = (client, packet, callback) => {
    if (!client) return callback(null); // a will message published by the broker itself
    if (packet.topic.startsWith('$SYS')) return callback(new Error('$SYS topics are reserved'));
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const route = matchRoute(this.config.routes, packet.topic);
    let items: IngestItem[];
    if (!route) {
      items = [{ refused: { code: EdgeErrorCode.NO_ROUTE, reason: `no route for topic "${packet.topic.slice(0, 128)}"` }, raw: payload }];
    } else if (payload.byteLength > this.config.maxPayloadBytes) {
      const reason = `payload of ${payload.byteLength} bytes exceeds maxPayloadBytes ${this.config.maxPayloadBytes}`;
      items = [{ refused: { code: EdgeErrorCode.TOO_LARGE, reason }, raw: payload.subarray(0, 1024) }];
    } else {
      items = itemsFromJson(payload);
    }
    this.deps.ingest
      .submit(items, {
        source: 'mqtt',
        origin: packet.topic,
        ...(route ? { defaultType: route.type } : {}),
        ...(route?.key !== undefined ? { expectedKey: route.key } : {}),
      })
      .then(
        (result) => {
          if (result.rejected.length > 0) {
            this.deps.log.warn({ client: client.id, topic: packet.topic, rejected: result.rejected.slice(0, 5) }, 'mqtt events dead-lettered');
          }
          callback(null);
        },
        (error: Error) => {
          // No PUBACK: the device keeps the message and sends it again after reconnecting ([MQTT-4.4.0-1]).
          if (!(error instanceof OutboxFullError)) this.deps.log.error({ err: error }, 'mqtt publish not stored');
          callback(error);
        },
      );
  };
}
