/**
 * HTTP ingest: `POST /v1/events` with one JSON event, a JSON array, or NDJSON (`application/x-ndjson`), optionally
 * gzip-compressed. Answers 200 when every event was accepted, 207 with a per-event result when some were refused,
 * 400 when none was accepted; always only after the outbox commit. A full outbox answers 503 with Retry-After.
 */
import { createGunzip } from 'node:zlib';
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { EdgeError, EdgeErrorCode, OutboxFullError } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import { itemsFromJson, type Source, type SourceDeps, type SourceFactory } from './source.js';

export interface HttpSourceConfig {
  enabled: boolean;
  host: string;
  port: number;
  bodyLimitBytes: number;
  defaultType: string;
  apiKeys: string[];
  retryAfterSeconds: number;
}

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
    defaultType: {
      type: 'string',
      default: 'app.event',
      description: 'Type of events that carry no `type` field (the mission sample format is an app event).',
    },
    apiKeys: {
      type: 'array',
      items: { type: 'string', minLength: 16 },
      default: [],
      description: 'Accepted API keys (header `x-api-key` or `Authorization: Bearer`); empty means no key needed.',
    },
    retryAfterSeconds: { type: 'integer', minimum: 1, default: 1, description: 'Retry-After sent with 503 when the outbox is full.' },
  },
} as const;

export const createHttpSource: SourceFactory<HttpSourceConfig> = (config, deps) => new HttpSource(config, deps);

class HttpSource implements Source {
  readonly name = 'http';
  private readonly app: FastifyInstance;

  constructor(
    private readonly config: HttpSourceConfig,
    private readonly deps: SourceDeps,
  ) {
    this.app = Fastify({ bodyLimit: config.bodyLimitBytes, logger: false });
    this.app.removeAllContentTypeParsers();
    // Bodies are parsed here, not by fastify, so a bad event becomes a per-event error and not a 400 for all.
    this.app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    this.app.addHook('preParsing', async (request, _reply, payload) => {
      const encoding = request.headers['content-encoding'];
      if (encoding === undefined || encoding === 'identity') return payload;
      if (encoding !== 'gzip') throw httpError(415, `Content-Encoding "${encoding}" is not supported; use gzip or none`);
      // fastify compares Content-Length with `receivedEncodedLength` of the stream it is handed.
      const gunzip = Object.assign(createGunzip(), { receivedEncodedLength: 0 });
      payload.on('data', (chunk: Buffer) => (gunzip.receivedEncodedLength += chunk.byteLength));
      payload.pipe(gunzip);
      return gunzip;
    });
    this.app.setErrorHandler((error: Error & { statusCode?: number }, _request, reply) => {
      const status = error.statusCode ?? 500;
      if (status >= 500) this.deps.log.error({ err: error }, 'http ingest failed');
      void reply.code(status).send({ error: error.message });
    });
    this.app.post('/v1/events', async (request, reply) => {
      if (!this.authorized(request.headers)) {
        return reply.code(401).send({ error: 'missing or unknown API key (send x-api-key or Authorization: Bearer)' });
      }
      const body = (request.body as Buffer | undefined) ?? Buffer.alloc(0);
      if (body.byteLength === 0) return reply.code(400).send({ error: 'empty body: send a JSON event, a JSON array or NDJSON' });
      const contentType = request.headers['content-type'] ?? '';
      const items = contentType.includes('ndjson') ? itemsFromNdjson(body) : itemsFromJson(body);
      try {
        const result = await this.deps.ingest.submit(items, {
          source: 'http',
          origin: '/v1/events',
          defaultType: this.config.defaultType,
        });
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

  async start(): Promise<void> {
    await this.app.listen({ port: this.config.port, host: this.config.host });
    this.deps.log.info({ port: this.port() }, 'http ingest listening');
  }

  port(): number {
    const address = this.app.server.address();
    return typeof address === 'object' && address ? address.port : this.config.port;
  }

  async stop(): Promise<void> {
    await this.app.close();
  }

  private authorized(headers: Record<string, string | string[] | undefined>): boolean {
    if (this.config.apiKeys.length === 0) return true;
    const bearer = typeof headers.authorization === 'string' ? /^Bearer (.+)$/.exec(headers.authorization)?.[1] : undefined;
    const key = (typeof headers['x-api-key'] === 'string' ? headers['x-api-key'] : undefined) ?? bearer;
    if (key === undefined) return false;
    const given = Buffer.from(key);
    return this.config.apiKeys.some((k) => {
      const expected = Buffer.from(k);
      return expected.byteLength === given.byteLength && timingSafeEqual(expected, given);
    });
  }
}

/** One item per non-empty line; a line that does not parse is refused on its own. */
export function itemsFromNdjson(body: Buffer): IngestItem[] {
  const items: IngestItem[] = [];
  let start = 0;
  while (start < body.byteLength) {
    let end = body.indexOf(0x0a, start);
    if (end === -1) end = body.byteLength;
    const line = body.subarray(start, end);
    start = end + 1;
    const text = line.toString('utf8').trim();
    if (text.length === 0) continue;
    try {
      items.push({ value: JSON.parse(text), raw: line });
    } catch (error) {
      items.push({ refused: { code: EdgeErrorCode.MALFORMED_JSON, reason: `line is not valid JSON: ${(error as Error).message}` }, raw: line });
    }
  }
  return items;
}

function httpError(statusCode: number, message: string): Error & { statusCode: number } {
  return Object.assign(new Error(message), { statusCode });
}
