/**
 * HTTP ingest: `POST /v1/events` with one JSON event, a JSON array, or NDJSON (`application/x-ndjson`), optionally
 * gzip-compressed. Answers 200 when every event was accepted, 207 with a per-event result when some were refused,
 * 400 when none was accepted; always only after the outbox commit. A full outbox answers 503 with Retry-After.
 *
 * Before the body is read (`onRequest`): the API key (401, EDGE_ERR_AUTH_FAILED) and the client's request rate
 * (429 + Retry-After, EDGE_ERR_RATE_LIMITED), so refused clients cost no body parsing. After parsing: the client's
 * event rate (429, nothing stored). Each API key has a name that logs use to say which client it was.
 */
import { createHash } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { ConfigError } from '../../../shared/config.js';
import { EdgeError, EdgeErrorCode, OutboxFullError } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import { itemsFromJsonPayload, itemsFromNdjsonPayload, type JsonPayloadLimits } from './json-payload.js';
import { RateLimiter, type RateLimit } from './rate-limiter.js';
import { Refusals } from './refusals.js';
import type { Source, SourceDeps, SourceFactory } from './source.js';

export interface HttpApiKey {
  /** Who this key belongs to; logs name it. */
  name: string;
  key: string;
  /** Overrides of `rateLimit` for this key. */
  eventsPerSecond?: number;
  eventsBurst?: number;
  requestsPerSecond?: number;
  requestsBurst?: number;
}

export interface HttpRateLimitConfig {
  eventsPerSecond: number;
  eventsBurst: number;
  requestsPerSecond: number;
  requestsBurst: number;
}

export interface HttpSourceConfig {
  enabled: boolean;
  host: string;
  port: number;
  bodyLimitBytes: number;
  maxEventBytes: number;
  maxJsonDepth: number;
  defaultType: string;
  apiKeys: HttpApiKey[];
  rateLimit: HttpRateLimitConfig;
  retryAfterSeconds: number;
}

const rateFields = {
  eventsPerSecond: { type: 'number', minimum: 0, description: 'Events per second a client may send on average; 0: no limit.' },
  eventsBurst: { type: 'integer', minimum: 0, description: 'Events a client may send at once after a quiet period; 0: one second\'s worth.' },
  requestsPerSecond: { type: 'number', minimum: 0, description: 'Requests per second a client may make on average; 0: no limit.' },
  requestsBurst: { type: 'integer', minimum: 0, description: 'Requests a client may make at once after a quiet period; 0: one second\'s worth.' },
} as const;

export const httpSourceConfigSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'HTTP ingest endpoint for app backends.',
  properties: {
    enabled: { type: 'boolean', default: true, description: 'Serve POST /v1/events.' },
    host: { type: 'string', default: '0.0.0.0', description: 'Address to listen on.' },
    port: { type: 'integer', minimum: 0, maximum: 65535, default: 8080, description: 'HTTP port.' },
    bodyLimitBytes: {
      type: 'integer',
      minimum: 1024,
      default: 16777216,
      description: 'Largest request body (after gzip decompression); larger requests get 413.',
    },
    maxEventBytes: {
      type: 'integer',
      minimum: 256,
      maximum: 1048576,
      default: 262144,
      description: 'Largest single event (bytes of its JSON); larger ones are refused with EDGE_ERR_TOO_LARGE (an event must fit one hub message).',
    },
    maxJsonDepth: {
      type: 'integer',
      minimum: 2,
      maximum: 1000,
      default: 32,
      description: 'Deepest nesting of arrays/objects in a body or NDJSON line (a top-level array counts); deeper ones are refused with EDGE_ERR_TOO_DEEP.',
    },
    defaultType: {
      type: 'string',
      default: 'app.event',
      description: 'Type of events that carry no `type` field (the mission sample format is an app event).',
    },
    apiKeys: {
      type: 'array',
      default: [],
      description: 'Accepted API keys (header `x-api-key` or `Authorization: Bearer`), each with a name; empty means no key needed.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'key'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 64, description: 'Client name used in logs.' },
          key: { type: 'string', minLength: 16, description: 'The secret key (at least 16 characters).' },
          ...rateFields,
        },
      },
    },
    rateLimit: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Token-bucket limits per client (API key, or address when no keys are configured); exceeded: 429 with Retry-After.',
      properties: {
        eventsPerSecond: { ...rateFields.eventsPerSecond, default: 0 },
        eventsBurst: { ...rateFields.eventsBurst, default: 0 },
        requestsPerSecond: { ...rateFields.requestsPerSecond, default: 0 },
        requestsBurst: { ...rateFields.requestsBurst, default: 0 },
      },
    },
    retryAfterSeconds: { type: 'integer', minimum: 1, default: 1, description: 'Retry-After sent with 503 when the outbox is full.' },
  },
} as const;

export const createHttpSource: SourceFactory<HttpSourceConfig> = (config, deps) => new HttpSource(config, deps);

interface HttpClient {
  /** API key name, or `ip:<address>` without keys. */
  name: string;
  events: RateLimit;
  requests: RateLimit;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

function limit(ratePerSecond: number, burst: number): RateLimit {
  return { ratePerSecond, burst: burst > 0 ? burst : Math.max(1, Math.ceil(ratePerSecond)) };
}

class HttpSource implements Source {
  readonly name = 'http';
  readonly refusals: Refusals;
  private readonly app: FastifyInstance;
  /** sha256(key) → client: a lookup by digest does not leak the key through timing. */
  private readonly clientsByKeyDigest = new Map<string, HttpClient>();
  private readonly clients = new WeakMap<FastifyRequest, HttpClient>();
  private readonly eventLimiter: RateLimiter;
  private readonly requestLimiter: RateLimiter;
  private readonly limits: JsonPayloadLimits;

  constructor(
    private readonly config: HttpSourceConfig,
    private readonly deps: SourceDeps,
    now?: () => number,
  ) {
    this.refusals = new Refusals(deps.log);
    this.eventLimiter = new RateLimiter(now ? { now } : {});
    this.requestLimiter = new RateLimiter(now ? { now } : {});
    this.limits = { maxDepth: config.maxJsonDepth, maxEventBytes: config.maxEventBytes };
    const names = new Set<string>();
    for (const apiKey of config.apiKeys) {
      if (names.has(apiKey.name)) throw new ConfigError(`config.sources.http.apiKeys: name "${apiKey.name}" is used twice`);
      if (this.clientsByKeyDigest.has(sha256(apiKey.key))) throw new ConfigError(`config.sources.http.apiKeys: the key of "${apiKey.name}" is used twice`);
      names.add(apiKey.name);
      this.clientsByKeyDigest.set(sha256(apiKey.key), this.clientOf(apiKey.name, apiKey));
    }

    this.app = Fastify({ bodyLimit: config.bodyLimitBytes, logger: false });
    this.app.removeAllContentTypeParsers();
    // Bodies are parsed here, not by fastify, so a bad event becomes a per-event error and not a 400 for all.
    this.app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    this.app.addHook('preParsing', async (request, _reply, payload) => {
      const encoding = request.headers['content-encoding'];
      if (encoding === undefined || encoding === 'identity') return payload;
      if (encoding !== 'gzip') throw httpError(415, `Content-Encoding "${String(encoding).slice(0, 64)}" is not supported; use gzip or none`);
      // fastify compares Content-Length with `receivedEncodedLength` of the stream it is handed.
      const gunzip = Object.assign(createGunzip(), { receivedEncodedLength: 0 });
      payload.on('data', (chunk: Buffer) => (gunzip.receivedEncodedLength += chunk.byteLength));
      payload.pipe(gunzip);
      return gunzip;
    });
    this.app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
      const status = error.statusCode ?? 500;
      if (status === 413) {
        this.refusals.refuse(EdgeErrorCode.TOO_LARGE, { client: this.clients.get(request)?.name, limit: config.bodyLimitBytes }, 'http body over bodyLimitBytes refused (413)');
        return reply.code(413).send({ error: `${error.message} (bodyLimitBytes ${config.bodyLimitBytes})`, code: EdgeErrorCode.TOO_LARGE });
      }
      // zlib's errors: Z_DATA_ERROR (not gzip), Z_BUF_ERROR (cut short).
      const zlib = typeof error.code === 'string' && error.code.startsWith('Z_');
      if (status === 415 || zlib) {
        const message = zlib ? `body is not valid gzip (Content-Encoding: gzip): ${error.message}` : error.message;
        this.refusals.refuse(EdgeErrorCode.BAD_CONTENT_ENCODING, { client: this.clients.get(request)?.name }, `http body refused: ${message}`);
        return reply.code(zlib ? 400 : 415).send({ error: message, code: EdgeErrorCode.BAD_CONTENT_ENCODING });
      }
      if (status >= 500) this.deps.log.error({ err: error }, 'http ingest failed');
      return reply.code(status).send({ error: error.message });
    });
    this.app.post('/v1/events', { onRequest: (request, reply) => this.admit(request, reply) }, async (request, reply) => {
      const client = this.clients.get(request)!;
      const body = (request.body as Buffer | undefined) ?? Buffer.alloc(0);
      if (body.byteLength === 0) {
        this.refusals.count(EdgeErrorCode.MALFORMED_JSON);
        return reply.code(400).send({ error: 'empty body: send a JSON event, a JSON array or NDJSON', code: EdgeErrorCode.MALFORMED_JSON });
      }
      const contentType = request.headers['content-type'] ?? '';
      const items = contentType.includes('ndjson') ? itemsFromNdjsonPayload(body, this.limits) : itemsFromJsonPayload(body, this.limits);
      const rate = this.eventLimiter.take(client.name, items.length, client.events);
      if (!rate.ok) {
        const reason = `${client.name} exceeded ${client.events.ratePerSecond} events/s (burst ${client.events.burst}) with ${items.length} events; nothing was stored`;
        return this.tooManyRequests(reply, client, rate.retryAfterMs, reason);
      }
      for (const item of items) if ('refused' in item) this.refusals.count(item.refused.code);
      try {
        const result = await this.deps.ingest.submit(items, {
          source: 'http',
          origin: '/v1/events',
          defaultType: this.config.defaultType,
        });
        if (result.rejected.length > 0) {
          this.deps.log.warn({ client: client.name, accepted: result.accepted, rejected: result.rejected.slice(0, 5) }, 'http events dead-lettered');
        }
        const status = result.rejected.length === 0 ? 200 : result.accepted === 0 ? 400 : 207;
        return reply.code(status).send(result);
      } catch (error) {
        if (error instanceof OutboxFullError || (error instanceof EdgeError && error.code === EdgeErrorCode.SHUTTING_DOWN)) {
          return reply
            .code(503)
            .header('retry-after', String(this.config.retryAfterSeconds))
            .send({ error: error.message, code: error.code });
        }
        throw error;
      }
    });
  }

  /** Refusal counts by code, for /metrics. */
  refusalCounts(): Partial<Record<EdgeErrorCode, number>> {
    return this.refusals.snapshot();
  }

  async start(): Promise<void> {
    await this.app.listen({ port: this.config.port, host: this.config.host });
    if (this.config.apiKeys.length === 0) this.deps.log.warn('http ingest needs no API key (sources.http.apiKeys is empty); not for production');
    this.deps.log.info({ port: this.port(), apiKeys: this.config.apiKeys.map((k) => k.name) }, 'http ingest listening');
  }

  port(): number {
    const address = this.app.server.address();
    return typeof address === 'object' && address ? address.port : this.config.port;
  }

  async stop(): Promise<void> {
    await this.app.close();
  }

  /** `onRequest`: who is it, and may they send now? Runs before the body is read. */
  private async admit(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    let client: HttpClient | undefined;
    if (this.config.apiKeys.length === 0) {
      client = this.clientOf(`ip:${request.ip}`);
    } else {
      const key = presentedKey(request.headers);
      client = key === undefined ? undefined : this.clientsByKeyDigest.get(sha256(key));
      if (!client) {
        const reason = key === undefined ? 'missing API key' : 'unknown API key';
        this.refusals.refuse(EdgeErrorCode.AUTH_FAILED, { remote: request.ip }, `http request refused: ${reason}`);
        return reply
          .code(401)
          .header('www-authenticate', 'Bearer')
          .send({ error: `${reason} (send x-api-key or Authorization: Bearer)`, code: EdgeErrorCode.AUTH_FAILED });
      }
    }
    this.clients.set(request, client);
    const rate = this.requestLimiter.take(client.name, 1, client.requests);
    if (!rate.ok) {
      return this.tooManyRequests(reply, client, rate.retryAfterMs, `${client.name} exceeded ${client.requests.ratePerSecond} requests/s (burst ${client.requests.burst})`);
    }
    return undefined;
  }

  private tooManyRequests(reply: FastifyReply, client: HttpClient, retryAfterMs: number, reason: string): FastifyReply {
    const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
    this.refusals.refuse(EdgeErrorCode.RATE_LIMITED, { client: client.name, retryAfterSeconds: seconds }, `http request refused: rate limit`);
    return reply
      .code(429)
      .header('retry-after', String(seconds))
      .send({ error: `rate limit: ${reason}; retry after ${seconds} s`, code: EdgeErrorCode.RATE_LIMITED });
  }

  private clientOf(name: string, overrides: Partial<HttpRateLimitConfig> = {}): HttpClient {
    const defaults = this.config.rateLimit;
    return {
      name,
      events: limit(overrides.eventsPerSecond ?? defaults.eventsPerSecond, overrides.eventsBurst ?? defaults.eventsBurst),
      requests: limit(overrides.requestsPerSecond ?? defaults.requestsPerSecond, overrides.requestsBurst ?? defaults.requestsBurst),
    };
  }
}

function presentedKey(headers: Record<string, string | string[] | undefined>): string | undefined {
  const header = headers['x-api-key'];
  if (typeof header === 'string') return header;
  return typeof headers.authorization === 'string' ? /^Bearer (.+)$/.exec(headers.authorization)?.[1] : undefined;
}

/** One item per non-blank NDJSON line; a line that does not parse is refused on its own. */
export function itemsFromNdjson(body: Buffer, limits: JsonPayloadLimits = { maxDepth: 32, maxEventBytes: 262144 }): IngestItem[] {
  return itemsFromNdjsonPayload(body, limits);
}

function httpError(statusCode: number, message: string): Error & { statusCode: number } {
  return Object.assign(new Error(message), { statusCode });
}
