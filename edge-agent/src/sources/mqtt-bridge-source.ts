/**
 * MQTT bridge: subscribes to an existing broker (e.g. Mosquitto on the gateway) and takes what devices publish
 * there. A persistent session (`clean: false`) and QoS 1 subscriptions make the broker keep messages while the
 * agent is away and send them again until they are acknowledged.
 *
 * The PUBACK goes out only after the outbox commit. mqtt.js writes the PUBACK of a QoS 1 message in the callback of
 * `handleMessage(packet, callback)` ("handle messages with backpressure support, one at a time", mqtt.js README),
 * for MQTT 3.1.1 and 5 alike; `customHandleAcks` only applies with protocolVersion 5 (mqtt.js replaces it by an
 * immediate `done(0)` otherwise), so handleMessage is the hook that holds on every broker. While the outbox is full
 * the submission is retried with backoff and the PUBACK waits; mqtt.js takes no next message meanwhile, the broker's
 * in-flight window fills and it queues the rest for the session: nothing uncommitted is ever acknowledged. A message
 * not acknowledged when the agent stops is sent again by the broker on the next connect ([MQTT-4.4.0-1]).
 *
 * A message sent again after a commit whose PUBACK was lost is the same events: JSON events by their own id and
 * time, raw payloads by the receive time remembered per packet id (RedeliveryTimes), so QuestDB's dedup keeps one.
 *
 * Cost: one commit per message (mqtt.js hands over the next message only after the previous callback), so
 * throughput is one outbox fsync per message; publish arrays of events to move more per message.
 */
import { createHash } from 'node:crypto';
import mqtt, { type IClientOptions, type IClientSubscribeOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { EdgeErrorCode } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import { itemsFromPayload, PAYLOAD_FORMATS, type PayloadFormat } from './payload-formats.js';
import { MonotonicMicros } from './raw-envelope.js';
import type { Source, SourceDeps, SourceFactory } from './source.js';
import { SourceState, stateFilePath } from './source-state.js';
import { SourceStopped, Stopper, submitUntilStored } from './submit-retry.js';

export interface MqttBridgeSubscription {
  /** Topic filter (`+` one level, `#` the rest; `$share/<group>/...` for a shared subscription). */
  topic: string;
  /** Event type of events on these topics that name none; raw payloads are `raw.blob`. */
  type: string;
  /** Topic level holding the device id: an event naming another is refused; raw envelopes take it as source_id. */
  keyLevel?: number;
  format: PayloadFormat;
  /** Raw: content_type of the envelopes; empty: detected. */
  contentType: string;
}

export interface MqttBridgeSourceConfig {
  enabled: boolean;
  url: string;
  clientId: string;
  username: string;
  password: string;
  protocolVersion: 4 | 5;
  sessionExpirySeconds: number;
  keepaliveSeconds: number;
  connectTimeoutMs: number;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  maxPayloadBytes: number;
  maxJsonDepth: number;
  retryInitialMs: number;
  retryMaxMs: number;
  subscriptions: MqttBridgeSubscription[];
}

export const mqttBridgeSourceConfigSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'Bridge from an external MQTT broker (e.g. Mosquitto on the gateway): subscribe and take its messages.',
  properties: {
    enabled: { type: 'boolean', default: false, description: 'Connect to the broker and subscribe.' },
    url: { type: 'string', minLength: 1, default: 'mqtt://127.0.0.1:1883', description: 'Broker URL (mqtt://, mqtts://, ws://, wss://).' },
    clientId: {
      type: 'string',
      maxLength: 128,
      default: '',
      description: 'Client id; the broker keeps the session (subscriptions, unacknowledged messages) under it. Empty: `<agentId>-bridge`.',
    },
    username: { type: 'string', default: '', description: 'User name; empty: none.' },
    password: { type: 'string', default: '', description: 'Password; empty: none.' },
    protocolVersion: {
      enum: [4, 5],
      default: 4,
      description: 'MQTT 3.1.1 (4) or 5. Version 5 also stops retained messages from being sent again on each start (retain handling 1).',
    },
    sessionExpirySeconds: {
      type: 'integer',
      minimum: 0,
      maximum: 4294967295,
      default: 86400,
      description: 'MQTT 5: how long the broker keeps the session after a disconnect (3.1.1 brokers keep it until cleaned).',
    },
    keepaliveSeconds: { type: 'integer', minimum: 0, maximum: 65535, default: 30, description: 'MQTT keepalive.' },
    connectTimeoutMs: { type: 'integer', minimum: 100, default: 10000, description: 'Time to wait for CONNACK.' },
    reconnectInitialMs: { type: 'integer', minimum: 10, default: 500, description: 'First reconnect delay after the connection is lost.' },
    reconnectMaxMs: { type: 'integer', minimum: 10, default: 30000, description: 'Longest reconnect delay (doubles after each failed attempt).' },
    maxPayloadBytes: {
      type: 'integer',
      minimum: 1,
      default: 262144,
      description: 'Largest message taken; larger ones are dead-lettered with EDGE_ERR_TOO_LARGE (and acknowledged).',
    },
    maxJsonDepth: {
      type: 'integer',
      minimum: 2,
      maximum: 1000,
      default: 32,
      description: 'Deepest nesting of arrays/objects in a JSON or NDJSON message; deeper ones are dead-lettered with EDGE_ERR_TOO_DEEP.',
    },
    retryInitialMs: { type: 'integer', minimum: 10, default: 100, description: 'First wait before retrying a commit the outbox refused (full); no PUBACK meanwhile.' },
    retryMaxMs: { type: 'integer', minimum: 10, default: 5000, description: 'Longest wait between commit retries (exponential backoff).' },
    subscriptions: {
      type: 'array',
      default: [],
      description: 'Topic filters to subscribe to (QoS 1), and what their messages are.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['topic'],
        properties: {
          topic: { type: 'string', minLength: 1, description: 'Topic filter, e.g. `sensors/+/telemetry` or `logs/#`.' },
          type: { type: 'string', default: '', description: 'Event type of events that name none; empty: events must name it.' },
          keyLevel: { type: 'integer', minimum: 0, description: 'Topic level holding the device id (no default: no check).' },
          format: {
            enum: [...PAYLOAD_FORMATS],
            default: 'json',
            description: '`json` (an event or an array), `ndjson`, `csv` (header row first), `raw` (wrapped as a raw.blob event as it came).',
          },
          contentType: { type: 'string', maxLength: 128, default: '', description: 'Raw: content_type of the envelopes; empty: detected (text or binary).' },
        },
      },
    },
  },
} as const;

/** Whether `topic` matches the MQTT topic filter `filter` ([MQTT-4.7.1]; `$` topics never match a leading wildcard). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = stripShare(filter).split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false; // [MQTT-4.7.2-1]
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** `$share/<group>/<filter>` → `<filter>`. */
function stripShare(filter: string): string {
  if (!filter.startsWith('$share/')) return filter;
  const rest = filter.slice('$share/'.length);
  const slash = rest.indexOf('/');
  return slash === -1 ? rest : rest.slice(slash + 1);
}

export function matchSubscription(subscriptions: readonly MqttBridgeSubscription[], topic: string): MqttBridgeSubscription | undefined {
  return subscriptions.find((s) => topicMatches(s.topic, topic));
}

/**
 * Receive times of the last raw messages, by packet id. A raw payload has no id or time of its own, so its event
 * id is a hash that includes the receive time; when the broker sends a message again because our PUBACK did not
 * reach it (connection lost, agent killed after the commit), it keeps the packet id ([MQTT-4.4.0-1]), and the
 * redelivery gets the first receive time back: the same event, which QuestDB's dedup collapses. Only messages
 * processed since the last PUBACK that reached the broker come again, so the last 128 are plenty. Saved before
 * each submission, without fsync (it must survive a crash of the agent; a power loss may cost a duplicate row).
 */
export class RedeliveryTimes {
  static readonly MAX = 128;
  private readonly state: SourceState<{ h: string; ts: number }> | undefined;
  private readonly memory = new Map<string, { h: string; ts: number }>();

  constructor(path?: string) {
    if (path) {
      this.state = new SourceState(path);
      for (const key of this.state.keys()) this.memory.set(key, this.state.get(key)!);
    }
  }

  /** The receive time of this packet id and content if it was seen before, else `fresh()`, remembered. */
  timeOf(packetId: number, topic: string, payload: Buffer, fresh: () => number): number {
    const key = String(packetId);
    const h = createHash('sha256').update(topic).update('\0').update(payload).digest('base64url').slice(0, 22);
    const seen = this.memory.get(key);
    if (seen && seen.h === h) return seen.ts;
    const ts = fresh();
    this.memory.delete(key);
    this.memory.set(key, { h, ts });
    this.state?.set(key, { h, ts });
    while (this.memory.size > RedeliveryTimes.MAX) {
      const oldest = this.memory.keys().next().value as string;
      this.memory.delete(oldest);
      this.state?.delete(oldest);
    }
    this.state?.save(false);
    return ts;
  }
}

export const createMqttBridgeSource: SourceFactory<MqttBridgeSourceConfig> = (config, deps) => new MqttBridgeSource(config, deps);

export class MqttBridgeSource implements Source {
  readonly name = 'mqttBridge';
  private client: MqttClient | undefined;
  private readonly stopper = new Stopper();
  private readonly clock: MonotonicMicros;
  private inFlight: Promise<void> = Promise.resolve();
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelay: number;
  private subscribedOnce = false;
  private redeliveries: RedeliveryTimes | undefined;
  /** Messages committed and acknowledged, for logs and tests. */
  acknowledged = 0;

  constructor(
    private readonly config: MqttBridgeSourceConfig,
    private readonly deps: SourceDeps,
    nowMs: () => number = Date.now,
  ) {
    this.clock = new MonotonicMicros(nowMs);
    this.reconnectDelay = config.reconnectInitialMs;
  }

  /** Connected, and subscribed at least once by this process. */
  get ready(): boolean {
    return this.subscribedOnce && this.client?.connected === true;
  }

  get clientId(): string {
    return this.config.clientId || `${this.deps.agentId ?? 'edge'}-bridge`;
  }

  async start(): Promise<void> {
    const { config } = this;
    if (config.subscriptions.some((s) => s.format === 'raw')) {
      this.redeliveries = new RedeliveryTimes(this.deps.dataDir ? stateFilePath(this.deps, 'mqtt-bridge') : undefined);
    }
    const options: IClientOptions = {
      clientId: this.clientId,
      protocolVersion: config.protocolVersion,
      clean: false,
      keepalive: config.keepaliveSeconds,
      connectTimeout: config.connectTimeoutMs,
      // Reconnects are ours (backoff below); mqtt.js's own timer retries at a fixed period.
      reconnectPeriod: 0,
      // Subscriptions are made on each connect without a session (below); mqtt.js's own resubscribe would repeat them.
      resubscribe: false,
      ...(config.username ? { username: config.username, password: config.password } : {}),
      ...(config.protocolVersion === 5 ? { properties: { sessionExpiryInterval: config.sessionExpirySeconds } } : {}),
    };
    const client = mqtt.connect(config.url, options);
    this.client = client;
    // Installed before the first CONNACK: a resumed session delivers its queued messages right after it.
    client.handleMessage = (packet, callback) => {
      const work = this.handle(packet).then(
        () => callback(),
        // No PUBACK: the broker keeps the message and sends it again on the next connect.
        (error: Error) => callback(error),
      );
      this.inFlight = work;
    };
    client.on('connect', (connack) => {
      this.reconnectDelay = this.config.reconnectInitialMs;
      this.deps.log.info({ url: config.url, clientId: this.clientId, sessionPresent: connack.sessionPresent }, 'mqtt bridge connected');
      if (!this.subscribedOnce || !connack.sessionPresent) void this.subscribe(client);
    });
    client.on('close', () => this.scheduleReconnect());
    client.on('error', (error) => this.deps.log.warn({ url: config.url, err: error.message }, 'mqtt bridge connection error'));
  }

  async stop(): Promise<void> {
    this.stopper.stop();
    clearTimeout(this.reconnectTimer);
    await this.inFlight.catch(() => undefined);
    const client = this.client;
    if (!client) return;
    // Not forced while connected, so the last PUBACK is written before the DISCONNECT.
    await Promise.race([client.endAsync(!client.connected), new Promise((r) => setTimeout(r, 2000).unref())]);
    if (!client.disconnected) await client.endAsync(true).catch(() => undefined);
  }

  private scheduleReconnect(): void {
    if (this.stopper.isStopped || this.reconnectTimer !== undefined) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, this.config.reconnectMaxMs);
    this.deps.log.info({ url: this.config.url, inMs: delay }, 'mqtt bridge disconnected; reconnecting');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.stopper.isStopped) this.client?.reconnect();
    }, delay);
  }

  private async subscribe(client: MqttClient): Promise<void> {
    if (this.config.subscriptions.length === 0) return;
    const options: IClientSubscribeOptions = { qos: 1, ...(this.config.protocolVersion === 5 ? { rh: 1 } : {}) };
    try {
      const granted = await client.subscribeAsync(Object.fromEntries(this.config.subscriptions.map((s) => [s.topic, options])));
      const refused = granted.filter((g) => g.qos === 128);
      if (refused.length > 0) this.deps.log.error({ topics: refused.map((g) => g.topic) }, 'broker refused subscriptions');
      const downgraded = granted.filter((g) => g.qos === 0);
      if (downgraded.length > 0) this.deps.log.warn({ topics: downgraded.map((g) => g.topic) }, 'broker granted QoS 0: its messages are not redelivered');
      this.subscribedOnce = true;
      this.deps.log.info({ topics: granted.map((g) => g.topic) }, 'mqtt bridge subscribed');
    } catch (error) {
      this.deps.log.warn({ err: (error as Error).message }, 'mqtt bridge subscribe failed; retried on the next connect');
    }
  }

  /** Commits one message (resolves after the outbox commit); rejects when stopped before that. */
  private async handle(packet: IPublishPacket): Promise<void> {
    const topic = packet.topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const subscription = matchSubscription(this.config.subscriptions, topic);
    const key = subscription?.keyLevel === undefined ? undefined : topic.split('/')[subscription.keyLevel];
    let items: IngestItem[];
    if (!subscription) {
      // A message of a subscription the session still holds from an older config.
      items = [{ refused: { code: EdgeErrorCode.NO_ROUTE, reason: `no subscription matches topic "${topic.slice(0, 128)}"` }, raw: payload.subarray(0, 1024) }];
    } else if (payload.byteLength > this.config.maxPayloadBytes) {
      const reason = `payload of ${payload.byteLength} bytes exceeds maxPayloadBytes ${this.config.maxPayloadBytes}`;
      items = [{ refused: { code: EdgeErrorCode.TOO_LARGE, reason }, raw: payload.subarray(0, 1024) }];
    } else {
      const fresh = (): number => this.clock.next();
      const timestampUs =
        subscription.format === 'raw' && packet.qos > 0 && packet.messageId !== undefined && this.redeliveries
          ? this.redeliveries.timeOf(packet.messageId, topic, payload, fresh)
          : fresh();
      items = itemsFromPayload(
        subscription.format,
        payload,
        { sourceId: key ?? topic, timestampUs, contentType: subscription.contentType, origin: topic },
        { delimiter: ',', stringFields: [] },
        { maxDepth: this.config.maxJsonDepth, maxEventBytes: this.config.maxPayloadBytes },
      );
    }
    if (items.length === 0) return;
    try {
      const result = await submitUntilStored(
        this.deps,
        items,
        {
          source: 'mqtt-bridge',
          origin: topic,
          ...(subscription?.type ? { defaultType: subscription.type } : {}),
          ...(key !== undefined && subscription?.format !== 'raw' ? { expectedKey: key } : {}),
        },
        this.config,
        this.stopper,
      );
      this.acknowledged++;
      if (result.rejected.length > 0) {
        this.deps.log.warn({ topic, rejected: result.rejected.slice(0, 5) }, 'bridged events dead-lettered');
      }
    } catch (error) {
      if (!(error instanceof SourceStopped)) this.deps.log.error({ err: error, topic }, 'bridged message not stored');
      throw error;
    }
  }
}
