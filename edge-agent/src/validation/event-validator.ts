/**
 * Turns one parsed JSON value into a WireEvent, or a rejection that says which field is wrong and why.
 * Validators are compiled once per schema version (ajv), so the per-event cost is one compiled function call.
 */
import { createHash } from 'node:crypto';
import type { Ajv2020 } from 'ajv/dist/2020.js';
import type { ValidateFunction, ErrorObject } from 'ajv';
import { createSchemaAjv } from '../../../shared/schema-ajv.js';
import type { SchemaVersion } from '../../../shared/schema-catalog.js';
import { canonicalJson } from '../../../shared/schema-registry.js';
import type { WireEvent } from '../../../shared/wire.js';
import { EdgeErrorCode } from '../errors.js';

export interface Rejection {
  code: EdgeErrorCode;
  /** Human-readable reason naming the field, e.g. `/value must be number`. */
  reason: string;
  /** JSON pointer of the offending field, when there is one. */
  field?: string;
}

export type ValidationResult = { ok: true; event: WireEvent } | { ok: false; rejection: Rejection };

export interface EventContext {
  /** Source kind (`mqtt`, `http`, `file`). */
  source: string;
  /** Type to assume when the event has no `type` field (from the MQTT topic or the HTTP default). */
  defaultType?: string;
  /** Required partition-key value (the device id of the MQTT topic): an event naming another is refused. */
  expectedKey?: string;
  /** Ingest time, epoch microseconds; one reading per batch keeps it cheap. */
  ingestTimeUs: number;
}

interface CompiledVersion {
  version: number;
  validate: ValidateFunction;
  partitionKey: string;
  /** Canonical JSON of the schema, to tell a repeated version from a conflicting one. */
  canonical: string;
}

interface KnownType {
  latest: number;
  versions: ReadonlyMap<number, CompiledVersion>;
}

/** Result of adding a version at run time. */
export type AddVersionResult = 'added' | 'unchanged';

export class EventValidator {
  private readonly ajv: Ajv2020 = createSchemaAjv();
  // Replaced as a whole, never mutated: a new version is compiled first, then swapped in with one assignment, so
  // validate() (synchronous) always sees either the old or the new set of versions, and every older version stays.
  private types: ReadonlyMap<string, KnownType> = new Map();

  /**
   * `maxFutureMs`: refuse events whose time is further ahead of the ingest time (a device clock set wrong would
   * otherwise move every window's watermark forward and make everyone else's events late); 0 or absent: no bound.
   */
  private readonly maxFutureMs: number;

  constructor(catalog: SchemaVersion[], options: { maxFutureMs?: number } = {}) {
    this.maxFutureMs = options.maxFutureMs ?? 0;
    for (const entry of catalog) this.addVersion(entry);
  }

  /**
   * Compiles one more schema version (e.g. learned from the schema registry) and makes it available to the next
   * validate() call. A version already known with the same content is `unchanged`; with other content it throws,
   * because published versions are immutable. Throws, and changes nothing, when the schema does not compile.
   */
  addVersion(entry: SchemaVersion): AddVersionResult {
    const canonical = canonicalJson(entry.schema);
    const known = this.types.get(entry.type);
    const existing = known?.versions.get(entry.version);
    if (existing) {
      if (existing.canonical === canonical) return 'unchanged';
      throw new Error(`${entry.type} v${entry.version} differs from the version already loaded; schema versions are immutable`);
    }
    let validate: ValidateFunction;
    try {
      validate = this.ajv.compile(entry.schema);
    } catch (error) {
      this.ajv.removeSchema(entry.schema.$id);
      throw new Error(`${entry.type} v${entry.version} does not compile: ${(error as Error).message}`);
    }
    const compiled: CompiledVersion = { version: entry.version, validate, partitionKey: entry.schema['x-partition-key'], canonical };
    const next = new Map(this.types);
    next.set(entry.type, {
      latest: Math.max(known?.latest ?? 0, entry.version),
      versions: new Map(known?.versions ?? []).set(entry.version, compiled),
    });
    this.types = next;
    return 'added';
  }

  /** Every known version, e.g. `device.telemetry/v2`, sorted. */
  versions(): string[] {
    return [...this.types]
      .flatMap(([type, known]) => [...known.versions.keys()].map((v) => `${type}/v${v}`))
      .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  }

  knownTypes(): string[] {
    return [...this.types.keys()];
  }

  validate(value: unknown, context: EventContext): ValidationResult {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      return reject(EdgeErrorCode.NOT_AN_OBJECT, `event must be a JSON object, got ${describe(value)}`);
    }
    const body = value as Record<string, unknown>;
    if (body.type !== undefined && typeof body.type !== 'string') {
      return reject(EdgeErrorCode.UNKNOWN_TYPE, `/type must be a string naming the event type, got ${describe(body.type)}`, '/type');
    }
    const type = body.type ?? context.defaultType;
    if (typeof type !== 'string') {
      return reject(EdgeErrorCode.UNKNOWN_TYPE, 'event has no "type" field and its source names no default type', '/type');
    }
    const known = this.types.get(type);
    if (!known) {
      return reject(EdgeErrorCode.UNKNOWN_TYPE, `unknown event type "${truncate(type)}"; known: ${this.knownTypes().join(', ')}`, '/type');
    }
    const requested = body.schema_version ?? known.latest;
    if (!Number.isSafeInteger(requested)) {
      return reject(
        EdgeErrorCode.UNKNOWN_TYPE,
        `/schema_version must be an integer version of "${type}" (known: ${[...known.versions.keys()].join(', ')}), got ${describe(requested)} ${truncate(JSON.stringify(requested) ?? '')}`,
        '/schema_version',
      );
    }
    const compiled = known.versions.get(requested as number);
    if (!compiled) {
      return reject(
        EdgeErrorCode.UNKNOWN_TYPE,
        `type "${type}" has no schema version ${truncate(String(requested))}; known: ${[...known.versions.keys()].join(', ')}`,
        '/schema_version',
      );
    }
    if (!compiled.validate(body)) {
      const error = relevantError(compiled.validate.errors!);
      return reject(EdgeErrorCode.SCHEMA_INVALID, describeAjvError(error), fieldOf(error));
    }
    const key = body[compiled.partitionKey] as string;
    if (context.expectedKey !== undefined && key !== context.expectedKey) {
      return reject(
        EdgeErrorCode.TOPIC_MISMATCH,
        `${compiled.partitionKey} "${truncate(key)}" does not match the topic's "${context.expectedKey}"`,
        `/${compiled.partitionKey}`,
      );
    }
    const ts = toMicros(body.timestamp as string | number);
    if (ts === undefined) {
      return reject(EdgeErrorCode.SCHEMA_INVALID, '/timestamp is not a valid date-time', '/timestamp');
    }
    // The schemas bound epoch milliseconds to 1970-3000 (inclusive); an RFC 3339 string gets the same bounds here (JSON
    // Schema's date-time format allows years 0000-9999). QuestDB cannot store a designated timestamp before 1970:
    // without this, the hub would dead-letter the event later with a reason the sender never sees.
    if (ts < 0 || ts > MAX_EVENT_TIME_US) {
      const bound = ts < 0 ? 'before 1970-01-01T00:00:00Z, which QuestDB cannot store' : 'after 3000-01-01T00:00:00Z, the latest event time accepted';
      return reject(EdgeErrorCode.SCHEMA_INVALID, `/timestamp ${truncate(String(body.timestamp))} is ${bound}`, '/timestamp');
    }
    if (this.maxFutureMs > 0 && ts > context.ingestTimeUs + this.maxFutureMs * 1000) {
      const ahead = Math.round((ts - context.ingestTimeUs) / 1e6);
      return reject(
        EdgeErrorCode.FUTURE_TIMESTAMP,
        `/timestamp ${truncate(String(body.timestamp))} is ${ahead} s ahead of the agent's clock (at most ${this.maxFutureMs / 1000} s allowed, validation.maxFutureMs)`,
        '/timestamp',
      );
    }
    const id = typeof body.event_id === 'string' ? body.event_id : deriveEventId(type, key, body);
    return {
      ok: true,
      event: { id, type, sv: compiled.version, key, ts, its: context.ingestTimeUs, src: context.source, body },
    };
  }
}

function reject(code: EdgeErrorCode, reason: string, field?: string): ValidationResult {
  return { ok: false, rejection: field === undefined ? { code, reason } : { code, reason, field } };
}

/**
 * The error worth reporting. With `oneOf` (the timestamp: a date-time string or epoch milliseconds), ajv lists the
 * failure of every branch first; the branch whose type the value has says what is wrong (`must be <=
 * 32503680000000` for an epoch too far ahead, not `must be string`). When no branch took the type, the combined
 * error describes all of them.
 */
function relevantError(errors: ErrorObject[]): ErrorObject {
  const first = errors[0]!;
  const combined = errors.find((e) => (e.keyword === 'oneOf' || e.keyword === 'anyOf') && first.schemaPath.startsWith(`${e.schemaPath}/`));
  if (!combined) return first;
  const branches = errors.filter((e) => e !== combined && e.schemaPath.startsWith(`${combined.schemaPath}/`));
  return branches.find((e) => e.keyword !== 'type') ?? combined;
}

/** JSON pointer of the field an error is about: for a missing or extra property, the property itself. */
function fieldOf(error: ErrorObject): string {
  const base = error.instancePath;
  if (error.keyword === 'required') return `${base}/${(error.params as { missingProperty: string }).missingProperty}`;
  if (error.keyword === 'additionalProperties') return `${base}/${(error.params as { additionalProperty: string }).additionalProperty}`;
  return base || '/';
}

function describeAjvError(error: ErrorObject): string {
  const path = error.instancePath || '/';
  switch (error.keyword) {
    case 'required':
      return `${path === '/' ? '' : path}/${(error.params as { missingProperty: string }).missingProperty} is required`;
    case 'additionalProperties':
      return `${path === '/' ? '' : path}/${(error.params as { additionalProperty: string }).additionalProperty} is not an allowed field`;
    case 'enum':
      return `${path} must be one of ${(error.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'const':
      return `${path} must be ${JSON.stringify((error.params as { allowedValue: unknown }).allowedValue)}`;
    case 'oneOf':
      return `${path} must be an RFC 3339 date-time string or epoch milliseconds`;
    default:
      return `${path} ${error.message ?? 'is invalid'}`;
  }
}

/** 3000-01-01T00:00:00Z in epoch microseconds: the largest epoch-millisecond timestamp the schemas allow. */
const MAX_EVENT_TIME_US = 32503680000000 * 1000;

/** RFC 3339 string or epoch milliseconds → epoch microseconds (sub-millisecond digits of a string are kept). */
export function toMicros(timestamp: string | number): number | undefined {
  if (typeof timestamp === 'number') return timestamp * 1000;
  const ms = Date.parse(timestamp);
  if (Number.isNaN(ms)) return undefined;
  const fraction = /\.(\d{4,6})/.exec(timestamp);
  const extraMicros = fraction ? Number(fraction[1]!.padEnd(6, '0').slice(3, 6)) : 0;
  return ms * 1000 + extraMicros;
}

/**
 * An event without an `event_id` gets one from its content: the same reading sent twice (an MQTT QoS 1 redelivery,
 * a device retry) gets the same id, so the hub's dedup keys collapse it. Two genuinely distinct readings differ in
 * timestamp or value, so they get different ids.
 */
export function deriveEventId(type: string, key: string, body: Record<string, unknown>): string {
  return 'h-' + createHash('sha256').update(type).update('\0').update(key).update('\0').update(JSON.stringify(body)).digest('base64url').slice(0, 32);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

function truncate(text: string, max = 64): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
