/**
 * From a WireEvent to one QuestDB row, as the schema's `x-questdb` mapping says. Pure: no I/O, no clock.
 * Table and column names come only from schemas; event strings are only ever values.
 */
import type { QuestDbColumnType, SchemaVersion } from '../../../shared/schema-catalog.js';
import type { WireEvent } from '../../../shared/wire.js';
import { HubError, HubErrorCode } from '../errors.js';

/** Columns on every table, before the schema's own. `ts` is the designated timestamp; (ts, event_id) the dedup key. */
export const STANDARD_COLUMNS = [
  { name: 'ts', sqlType: 'TIMESTAMP', description: 'event time (WireEvent.ts)' },
  { name: 'event_id', sqlType: 'VARCHAR', description: 'WireEvent.id' },
  { name: 'schema_version', sqlType: 'INT', description: 'WireEvent.sv' },
  { name: 'agent_id', sqlType: 'SYMBOL', description: 'EventBatch.agent' },
  { name: 'source', sqlType: 'SYMBOL', description: 'WireEvent.src' },
  { name: 'ingest_ts', sqlType: 'TIMESTAMP', description: 'time the edge accepted it (WireEvent.its)' },
  { name: 'hub_ts', sqlType: 'TIMESTAMP', description: 'time the hub encoded the row for writing' },
] as const;

export const STANDARD_COLUMN_NAMES: ReadonlySet<string> = new Set(STANDARD_COLUMNS.map((c) => c.name));

/** The SQL type a mapping's column type becomes: JSON is stored as VARCHAR text. */
export function sqlTypeOf(type: QuestDbColumnType): string {
  return type === 'JSON' ? 'VARCHAR' : type;
}

/** A non-symbol ILP field. Timestamps are epoch microseconds. */
export type Field =
  | { name: string; kind: 'string'; value: string }
  | { name: string; kind: 'double'; value: number }
  | { name: string; kind: 'long'; value: number }
  | { name: string; kind: 'boolean'; value: boolean }
  | { name: string; kind: 'timestamp'; value: number };

export interface Row {
  table: string;
  /** Designated timestamp, epoch microseconds. */
  ts: number;
  /** SYMBOL columns; ILP requires them before every other column. */
  symbols: Array<{ name: string; value: string }>;
  fields: Field[];
}

export interface MappedColumn {
  name: string;
  /** `field` split on dots, e.g. `['context', 'location']`. */
  path: string[];
  type: QuestDbColumnType;
}

export interface RowMapping {
  type: string;
  version: number;
  table: string;
  columns: MappedColumn[];
}

export type MapResult =
  | { ok: true; row: Row; /** Columns left unset because the value did not fit the column type. */ invalidColumns?: string[] }
  | { ok: false; code: typeof HubErrorCode.INVALID_EVENT; reason: string };

/**
 * The row mapping of one schema version, checked: throws HUB_ERR_SCHEMA_CONFLICT on a malformed mapping (a column
 * shadowing a standard one, twice the same column, no field path, an unknown type).
 */
export function rowMappingOf(entry: SchemaVersion): RowMapping {
  const mapping = entry.schema['x-questdb'];
  const seen = new Set<string>();
  const columns: MappedColumn[] = [];
  for (const column of mapping.columns) {
    const where = `${entry.type}/v${entry.version}: x-questdb column "${column.name}"`;
    if (STANDARD_COLUMN_NAMES.has(column.name)) {
      throw new HubError(HubErrorCode.SCHEMA_CONFLICT, `${where} shadows a standard column (${[...STANDARD_COLUMN_NAMES].join(', ')})`);
    }
    if (seen.has(column.name)) throw new HubError(HubErrorCode.SCHEMA_CONFLICT, `${where} appears twice`);
    if (typeof column.field !== 'string' || column.field === '') {
      throw new HubError(HubErrorCode.SCHEMA_CONFLICT, `${where} has no field path`);
    }
    if (!['SYMBOL', 'VARCHAR', 'DOUBLE', 'LONG', 'BOOLEAN', 'TIMESTAMP', 'JSON'].includes(column.type)) {
      throw new HubError(HubErrorCode.SCHEMA_CONFLICT, `${where} has unknown type ${JSON.stringify(column.type)}`);
    }
    seen.add(column.name);
    columns.push({ name: column.name, path: column.field.split('.'), type: column.type });
  }
  return { type: entry.type, version: entry.version, table: mapping.table, columns };
}

/**
 * Mappings of every (type, version) of the catalogue; throws HUB_ERR_SCHEMA_CONFLICT on a malformed mapping.
 * Versions learned from the schema registry while the hub runs are added with `add()`; the sink reads the same
 * instance, so it writes them from its next batch on.
 */
export class RowMappings {
  private readonly byKey = new Map<string, RowMapping>();

  constructor(catalog: readonly SchemaVersion[]) {
    for (const entry of catalog) this.add(entry);
  }

  /** Maps one more version (replacing nothing: a version already mapped keeps its mapping). */
  add(entry: SchemaVersion): RowMapping {
    const existing = this.byKey.get(key(entry.type, entry.version));
    if (existing) return existing;
    const mapping = rowMappingOf(entry);
    this.byKey.set(key(entry.type, entry.version), mapping);
    return mapping;
  }

  get(type: string, version: number): RowMapping | undefined {
    return this.byKey.get(key(type, version));
  }

  get size(): number {
    return this.byKey.size;
  }
}

function key(type: string, version: number): string {
  return `${type}\u0000${version}`;
}

function isEpochMicros(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Builds the row of one event. Never throws: a bad standard field rejects the event, a bad mapped value is left unset. */
export function mapEvent(mapping: RowMapping, event: WireEvent, agentId: string): MapResult {
  if (typeof event.id !== 'string' || event.id === '') return reject('event has no id');
  if (!isEpochMicros(event.ts)) return reject(`event ${event.id} has no usable event time (ts=${String(event.ts)})`);
  const body = event.body;
  if (body === null || typeof body !== 'object') return reject(`event ${event.id} has no body object`);

  let invalidColumns: string[] | undefined;
  const symbols: Row['symbols'] = [];
  const fields: Field[] = [];
  if (typeof agentId === 'string') symbols.push({ name: 'agent_id', value: agentId });
  else (invalidColumns ??= []).push('agent_id');
  if (typeof event.src === 'string') symbols.push({ name: 'source', value: event.src });
  else (invalidColumns ??= []).push('source');
  fields.push({ name: 'event_id', kind: 'string', value: event.id });
  fields.push({ name: 'schema_version', kind: 'long', value: mapping.version });
  if (isEpochMicros(event.its)) fields.push({ name: 'ingest_ts', kind: 'timestamp', value: event.its });
  else (invalidColumns ??= []).push('ingest_ts');

  for (const column of mapping.columns) {
    const value = readPath(body, column.path);
    if (value === undefined || value === null) continue; // optional field absent: the column stays null
    if (column.type === 'SYMBOL') {
      const text = asText(value);
      if (text === undefined) (invalidColumns ??= []).push(column.name);
      else symbols.push({ name: column.name, value: text });
      continue;
    }
    const field = toField(column, value);
    if (field === undefined) (invalidColumns ??= []).push(column.name);
    else fields.push(field);
  }
  const row: Row = { table: mapping.table, ts: event.ts, symbols, fields };
  return invalidColumns ? { ok: true, row, invalidColumns } : { ok: true, row };
}

function reject(reason: string): MapResult {
  return { ok: false, code: HubErrorCode.INVALID_EVENT, reason };
}

function readPath(body: object, path: readonly string[]): unknown {
  let value: unknown = body;
  for (const part of path) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
    if (!Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function asText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return undefined;
}

function toField(column: MappedColumn, value: unknown): Field | undefined {
  const name = column.name;
  switch (column.type) {
    case 'VARCHAR': {
      const text = asText(value);
      return text === undefined ? undefined : { name, kind: 'string', value: text };
    }
    case 'JSON': {
      try {
        const text = JSON.stringify(value);
        return text === undefined ? undefined : { name, kind: 'string', value: text };
      } catch {
        return undefined; // BigInt or a cycle: not representable as JSON
      }
    }
    case 'DOUBLE':
      return typeof value === 'number' && Number.isFinite(value) ? { name, kind: 'double', value } : undefined;
    case 'LONG':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return { name, kind: 'long', value };
      if (typeof value === 'bigint' && value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)) {
        return { name, kind: 'long', value: Number(value) };
      }
      return undefined;
    case 'BOOLEAN':
      return typeof value === 'boolean' ? { name, kind: 'boolean', value } : undefined;
    case 'TIMESTAMP': {
      const micros = toEpochMicros(value);
      return micros === undefined ? undefined : { name, kind: 'timestamp', value: micros };
    }
    default:
      return undefined;
  }
}

const RFC3339_FRACTION = /\.(\d+)(?=Z|[+-]\d\d:?\d\d$)/i;

/**
 * A timestamp field as the schemas define it: epoch milliseconds, or an RFC 3339 string (fractions kept to the
 * microsecond, which Date.parse would cut to the millisecond).
 */
export function toEpochMicros(value: unknown): number | undefined {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return undefined;
    const micros = Math.round(value * 1000);
    return Number.isSafeInteger(micros) ? micros : undefined;
  }
  if (typeof value !== 'string') return undefined;
  const millis = Date.parse(value);
  if (Number.isNaN(millis) || millis < 0) return undefined;
  const fraction = RFC3339_FRACTION.exec(value)?.[1];
  const subMillis = fraction && fraction.length > 3 ? Math.floor(Number(`0.${fraction.slice(3)}`) * 1000) : 0;
  return millis * 1000 + subMillis;
}

/** The part of the ILP client's Sender (or a test double) that rows are written with. */
export interface IlpRowWriter {
  table(name: string): unknown;
  symbol(name: string, value: string): unknown;
  stringColumn(name: string, value: string): unknown;
  floatColumn(name: string, value: number): unknown;
  intColumn(name: string, value: number): unknown;
  booleanColumn(name: string, value: boolean): unknown;
  timestampColumn(name: string, value: number, unit: 'us'): unknown;
  at(timestamp: number, unit: 'us'): unknown;
}

/**
 * Writes one row: table, symbols, fields, the write-time column (`hub_ts` for events, `written_at` for analytics
 * outputs), then the designated timestamp.
 */
export function writeRow(writer: IlpRowWriter, row: Row, hubTsMicros: number, writeTimeColumn = 'hub_ts'): void {
  writer.table(row.table);
  for (const symbol of row.symbols) writer.symbol(symbol.name, symbol.value);
  for (const field of row.fields) {
    switch (field.kind) {
      case 'string':
        writer.stringColumn(field.name, field.value);
        break;
      case 'double':
        writer.floatColumn(field.name, field.value);
        break;
      case 'long':
        writer.intColumn(field.name, field.value);
        break;
      case 'boolean':
        writer.booleanColumn(field.name, field.value);
        break;
      case 'timestamp':
        writer.timestampColumn(field.name, field.value, 'us');
        break;
    }
  }
  writer.timestampColumn(writeTimeColumn, hubTsMicros, 'us');
  writer.at(row.ts, 'us');
}
