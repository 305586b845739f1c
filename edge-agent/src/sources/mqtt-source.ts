/**
 * Embedded MQTT broker (aedes) that devices publish to.
 *
 * aedes sends the QoS 1 PUBACK right after `authorizePublish` calls back, before it stores or routes anything,
 * so the durable commit happens inside that hook: the PUBACK means "in the outbox". Publishes that arrive
 * together share one SQLite transaction (the ingest pipeline's group commit).
 *
 * Protection, outermost first: at most `maxConnections` sockets (more are closed at once); every packet's size
 * checked from its fixed header before it is buffered (mqtt-frame-guard.ts); CONNECT checked for client id length,
 * credentials, client id ownership and will topic (mqtt-auth.ts); each PUBLISH and SUBSCRIBE checked against the
 * device's topic ACL and `maxTopicLevels`; payloads checked for size, UTF-8, nesting and numbers
 * (json-payload.ts) before validation. Protocol violations close the connection (MQTT 3.1.1 has no other
 * answer to a PUBLISH); bad content is acknowledged and dead-lettered, so the device does not resend it forever.
 */
import { createServer, type Server } from 'node:net';
import { Aedes, type AuthenticateError, type AuthenticateHandler, type AuthorizePublishHandler, type AuthorizeSubscribeHandler, type Client, type PreConnectHandler } from 'aedes';
import { EdgeError, EdgeErrorCode, OutboxFullError } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import { itemsFromJsonPayload } from './json-payload.js';
import { clientIdBelongsTo, DeviceAcl, DeviceAuthenticator, loadDevices, mqttAuthConfigSchema, type MqttAuthConfig } from './mqtt-auth.js';
import { MqttFrameGuard } from './mqtt-frame-guard.js';
import { Refusals } from './refusals.js';
import type { Source, SourceDeps, SourceFactory } from './source.js';

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
  maxPacketBytes: number;
  maxConnections: number;
  maxTopicLevels: number;
  maxClientIdLength: number;
  maxJsonDepth: number;
  connectTimeoutMs: number;
  auth: MqttAuthConfig;
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
    maxPacketBytes: {
      type: 'integer',
      minimum: 1024,
      maximum: 268435455,
      default: 1048576,
      description:
        'Largest MQTT packet (Remaining Length) read at all: a packet announcing more closes the connection before its body is buffered. Keep it above maxPayloadBytes so that payloads in between are dead-lettered (and acknowledged) instead.',
    },
    maxConnections: {
      type: 'integer',
      minimum: 1,
      default: 10000,
      description: 'Most open MQTT connections; more are closed as soon as they are accepted.',
    },
    maxTopicLevels: {
      type: 'integer',
      minimum: 1,
      maximum: 100,
      default: 16,
      description: 'Most levels in a topic or topic filter; a deeper PUBLISH or SUBSCRIBE closes the connection.',
    },
    maxClientIdLength: {
      type: 'integer',
      minimum: 23,
      maximum: 65535,
      default: 128,
      description: 'Longest MQTT client id; longer ones get CONNACK 2 (identifier rejected). MQTT requires at least 23.',
    },
    maxJsonDepth: {
      type: 'integer',
      minimum: 2,
      maximum: 1000,
      default: 32,
      description: 'Deepest nesting of arrays/objects in a JSON payload (a top-level array counts); deeper payloads are dead-lettered with EDGE_ERR_TOO_DEEP.',
    },
    connectTimeoutMs: {
      type: 'integer',
      minimum: 100,
      default: 10000,
      description: 'Time a new connection has to send CONNECT before it is closed (idle sockets hold a maxConnections slot).',
    },
    auth: mqttAuthConfigSchema,
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

/** What CONNECT said, kept from `preConnect` for `authenticate` (which only gets the user name and password). */
interface ConnectInfo {
  clientIdLength: number;
  willTopic: string | undefined;
}

/** aedes sends `returnCode` in the CONNACK; an EdgeError so that `clientError` knows it was logged already. */
function authError(code: EdgeErrorCode, returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  return Object.assign(new EdgeError(code, message), { returnCode }) as unknown as AuthenticateError;
}

/** aedes' message when a topic exceeds maxTopicLevels (lib/handlers/publish.js); nothing else tells it apart. */
const TOO_MANY_LEVELS = 'topic has too many levels';

class MqttSource implements Source {
  readonly name = 'mqtt';
  readonly refusals: Refusals;
  private broker: Aedes | undefined;
  private server: Server | undefined;
  private authenticator: DeviceAuthenticator | undefined;
  private readonly connects = new WeakMap<Client, ConnectInfo>();
  /** The ACL of each authenticated client (credentials mode only). */
  private readonly acls = new WeakMap<Client, DeviceAcl>();
  private readonly remotes = new WeakMap<Client, string>();

  constructor(
    private readonly config: MqttSourceConfig,
    private readonly deps: SourceDeps,
  ) {
    this.refusals = new Refusals(deps.log);
  }

  /** Refusals by code, for /metrics. */
  refusalCounts(): Partial<Record<EdgeErrorCode, number>> {
    return this.refusals.snapshot();
  }

  async start(): Promise<void> {
    const { auth } = this.config;
    const devices = loadDevices(auth);
    if (auth.mode === 'credentials') {
      this.authenticator = new DeviceAuthenticator(devices);
      const plain = devices.filter((d) => d.password !== undefined).length;
      if (plain > 0) this.deps.log.warn({ devices: plain }, 'mqtt devices with plain-text passwords configured; use passwordHash outside tests');
    } else {
      this.deps.log.warn('mqtt authentication is off (sources.mqtt.auth.mode: none): any client may connect and publish on any topic; not for production');
    }
    const broker = await Aedes.createBroker({
      maxTopicLevels: this.config.maxTopicLevels,
      maxClientsIdLength: this.config.maxClientIdLength,
      connectTimeout: this.config.connectTimeoutMs,
    });
    broker.preConnect = this.preConnect;
    broker.authenticate = this.authenticate;
    broker.authorizePublish = this.authorizePublish;
    broker.authorizeSubscribe = this.authorizeSubscribe;
    broker.on('clientError', (client, error) => this.clientError(client, error));
    broker.on('connectionError', (client, error) => this.clientError(client, error));
    this.broker = broker;
    const server = createServer((socket) => {
      const guard = new MqttFrameGuard(socket, this.config.maxPacketBytes, (announced) =>
        this.refusals.refuse(
          EdgeErrorCode.TOO_LARGE,
          { remote: guard.remoteAddress, announcedBytes: announced, maxPacketBytes: this.config.maxPacketBytes },
          'mqtt packet over maxPacketBytes; connection closed before reading it',
        ),
      );
      this.remotes.set(broker.handle(guard), guard.remoteAddress);
    });
    server.maxConnections = this.config.maxConnections;
    server.on('drop', (data) =>
      this.refusals.refuse(
        EdgeErrorCode.TOO_MANY_CONNECTIONS,
        { remote: `${data?.remoteAddress ?? '?'}:${data?.remotePort ?? '?'}`, maxConnections: this.config.maxConnections },
        'mqtt connection refused: maxConnections reached',
      ),
    );
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.config.port, this.config.host, () => resolve());
    });
    this.deps.log.info({ port: this.port(), auth: auth.mode, devices: devices.length }, 'mqtt broker listening');
  }

  port(): number {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : this.config.port;
  }

  async stop(): Promise<void> {
    // server.close() only calls back once every connection ended, which closing the broker does.
    const closed = new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (this.broker ? this.broker.close(() => resolve()) : resolve()));
    await closed;
  }

  private readonly preConnect: PreConnectHandler = (client, packet, callback) => {
    this.connects.set(client, { clientIdLength: packet.clientId.length, willTopic: packet.will?.topic });
    callback(null, true);
  };

  private readonly authenticate: AuthenticateHandler = (client, username, password, done) => {
    const info = this.connects.get(client);
    const who = { client: client.id.slice(0, 256), remote: this.remotes.get(client) };
    const refuse = (code: EdgeErrorCode, returnCode: 2 | 3 | 4 | 5, reason: string, fields: Record<string, unknown> = {}) => {
      this.refusals.refuse(code, { ...who, ...fields, returnCode }, `mqtt connection refused: ${reason}`);
      done(authError(code, returnCode, reason), false);
    };
    // aedes checks the length only for MQTT 3.1 (23 characters); 3.1.1 leaves the limit to the server.
    if ((info?.clientIdLength ?? client.id.length) > this.config.maxClientIdLength) {
      return refuse(EdgeErrorCode.CLIENT_ID_REJECTED, 2, `client id of ${info?.clientIdLength ?? client.id.length} characters exceeds maxClientIdLength ${this.config.maxClientIdLength}`);
    }
    const authenticator = this.authenticator;
    if (!authenticator) return done(null, true);
    const user = username === undefined ? undefined : username.slice(0, 128);
    authenticator.authenticate(username, password).then(
      (outcome) => {
        if (!outcome.ok) return refuse(EdgeErrorCode.AUTH_FAILED, outcome.returnCode, outcome.reason, { username: user });
        const { deviceId } = outcome;
        // An empty client id gets a random one from aedes ([MQTT-3.1.3-6]), which no other device can own.
        if (info?.clientIdLength !== 0 && !clientIdBelongsTo(deviceId, client.id)) {
          return refuse(EdgeErrorCode.CLIENT_ID_REJECTED, 2, `client id must be "${deviceId}" or start with "${deviceId}/"`, { username: user, deviceId });
        }
        const acl = new DeviceAcl(deviceId, this.config.auth.publishTopics, this.config.auth.subscribeTopics);
        if (info?.willTopic !== undefined && !acl.mayPublish(info.willTopic)) {
          return refuse(EdgeErrorCode.NOT_AUTHORIZED, 5, `will topic "${info.willTopic.slice(0, 128)}" is outside the device's topics`, { username: user, deviceId });
        }
        this.acls.set(client, acl);
        done(null, true);
      },
      (error: Error) => {
        this.deps.log.error({ err: error, ...who }, 'mqtt authentication failed');
        done(authError(EdgeErrorCode.AUTH_FAILED, 3, 'server unavailable'), false);
      },
    );
  };

  private readonly authorizeSubscribe: AuthorizeSubscribeHandler = (client, subscription, callback) => {
    const acl = this.acls.get(client);
    if (!this.authenticator || acl?.maySubscribe(subscription.topic)) return callback(null, subscription);
    this.refusals.refuse(
      EdgeErrorCode.NOT_AUTHORIZED,
      { client: client.id, deviceId: acl?.deviceId, filter: subscription.topic.slice(0, 256) },
      'mqtt subscription outside the device\'s topics refused (SUBACK 0x80)',
    );
    callback(null, null); // [MQTT-3.9.3-2]: failure return code 0x80 for this filter, the others are unaffected
  };

  private readonly authorizePublish: AuthorizePublishHandler = (client, packet, callback) => {
    if (!client) return callback(null); // a will message published by the broker itself
    if (packet.topic.startsWith('$SYS')) return callback(new Error('$SYS topics are reserved'));
    const acl = this.acls.get(client);
    if (this.authenticator && !acl?.mayPublish(packet.topic)) {
      // MQTT 3.1.1 has no negative PUBACK: closing the connection is the only refusal. Nothing is stored.
      const reason = `publish on "${packet.topic.slice(0, 256)}" is outside the topics of device "${acl?.deviceId ?? '?'}"`;
      this.refusals.refuse(
        EdgeErrorCode.NOT_AUTHORIZED,
        { client: client.id, deviceId: acl?.deviceId, topic: packet.topic.slice(0, 256), remote: this.remotes.get(client) },
        `mqtt ${reason}; connection closed`,
      );
      return callback(new EdgeError(EdgeErrorCode.NOT_AUTHORIZED, reason));
    }
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const route = matchRoute(this.config.routes, packet.topic);
    let items: IngestItem[];
    if (!route) {
      items = [{ refused: { code: EdgeErrorCode.NO_ROUTE, reason: `no route for topic "${packet.topic.slice(0, 128)}"` }, raw: payload }];
    } else if (payload.byteLength > this.config.maxPayloadBytes) {
      const reason = `payload of ${payload.byteLength} bytes exceeds maxPayloadBytes ${this.config.maxPayloadBytes}`;
      items = [{ refused: { code: EdgeErrorCode.TOO_LARGE, reason }, raw: payload.subarray(0, 1024) }];
    } else {
      items = itemsFromJsonPayload(payload, { maxDepth: this.config.maxJsonDepth, maxEventBytes: this.config.maxPayloadBytes });
    }
    for (const item of items) if ('refused' in item) this.refusals.count(item.refused.code);
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

  private clientError(client: Client | null, error: Error): void {
    if (error instanceof EdgeError) return; // refused by us: counted and logged where it was decided
    const fields = { client: client?.id ?? undefined, remote: client ? this.remotes.get(client) : undefined };
    if (error.message.includes(TOO_MANY_LEVELS)) {
      this.refusals.refuse(EdgeErrorCode.TOPIC_TOO_DEEP, { ...fields, maxTopicLevels: this.config.maxTopicLevels }, 'mqtt topic with more than maxTopicLevels levels; connection closed');
      return;
    }
    this.deps.log.warn({ ...fields, err: error.message }, 'mqtt client error');
  }
}
