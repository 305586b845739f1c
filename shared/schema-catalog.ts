/**
 * Reads the versioned JSON Schemas in `schemas/<type>/v<N>.json`. The edge validates with them; the hub derives its
 * QuestDB tables from their `x-questdb` annotation, so table and column names come from schemas, never from payloads.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type QuestDbColumnType = 'SYMBOL' | 'VARCHAR' | 'DOUBLE' | 'LONG' | 'BOOLEAN' | 'TIMESTAMP' | 'JSON';

export interface QuestDbColumn {
  /** Column name in QuestDB. */
  name: string;
  /** Dotted path of the field in the event body, e.g. `context.location`. */
  field: string;
  /** Column type; `JSON` is a VARCHAR holding the field serialised as JSON. */
  type: QuestDbColumnType;
}

export interface QuestDbMapping {
  table: string;
  columns: QuestDbColumn[];
}

export interface SchemaDocument {
  $id: string;
  'x-partition-key': string;
  'x-questdb': QuestDbMapping;
  [keyword: string]: unknown;
}

export interface SchemaVersion {
  type: string;
  version: number;
  schema: SchemaDocument;
}

// From the sources the catalogue is `../schemas`; from compiled JS (`dist/shared/`) it is two levels up.
export const DEFAULT_SCHEMA_DIR = [new URL('../schemas', import.meta.url), new URL('../../schemas', import.meta.url)]
  .map((url) => resolve(fileURLToPath(url)))
  .find((dir) => existsSync(dir)) ?? resolve(fileURLToPath(new URL('../schemas', import.meta.url)));

const TYPE_DIR = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/;
const VERSION_FILE = /^v([1-9][0-9]*)\.json$/;
const IDENTIFIER = /^[a-z][a-z0-9_]{0,62}$/;

/** Loads every schema version under `dir`, sorted by type then version. Throws on a malformed catalogue. */
export function loadSchemaCatalog(dir: string = DEFAULT_SCHEMA_DIR): SchemaVersion[] {
  const versions: SchemaVersion[] = [];
  for (const type of readdirSync(dir).sort()) {
    const typeDir = join(dir, type);
    if (!statSync(typeDir).isDirectory()) continue;
    if (!TYPE_DIR.test(type)) throw new Error(`schema folder "${type}" is not a valid event type name`);
    for (const file of readdirSync(typeDir)) {
      const match = VERSION_FILE.exec(file);
      if (!match) continue;
      const version = Number(match[1]);
      const path = join(typeDir, file);
      versions.push(toSchemaVersion(type, version, JSON.parse(readFileSync(path, 'utf8')), path));
    }
  }
  versions.sort((a, b) => (a.type === b.type ? a.version - b.version : a.type < b.type ? -1 : 1));
  return versions;
}

/** True when `type` can name an event type (and a folder under schemas/). */
export function isEventTypeName(type: string): boolean {
  return TYPE_DIR.test(type);
}

/**
 * Checks one schema document, read from a file or from the schema registry, and returns it as a version of `type`.
 * `path` names where it came from in the errors.
 */
export function toSchemaVersion(type: string, version: number, document: unknown, path: string): SchemaVersion {
  if (document === null || typeof document !== 'object' || Array.isArray(document)) {
    throw new Error(`${path}: a schema must be a JSON object`);
  }
  const schema = document as SchemaDocument;
  checkSchemaDocument(schema, type, version, path);
  return { type, version, schema };
}

function checkSchemaDocument(schema: SchemaDocument, type: string, version: number, path: string): void {
  if (schema.$id !== `${type}/v${version}`) {
    throw new Error(`${path}: $id must be "${type}/v${version}", got ${JSON.stringify(schema.$id)}`);
  }
  if (typeof schema['x-partition-key'] !== 'string') {
    throw new Error(`${path}: x-partition-key must name the field that keys the event (device or user id)`);
  }
  const mapping = schema['x-questdb'];
  if (!mapping || !IDENTIFIER.test(mapping.table)) {
    throw new Error(`${path}: x-questdb.table must be a lower-case identifier, got ${JSON.stringify(mapping?.table)}`);
  }
  if (!Array.isArray(mapping.columns)) throw new Error(`${path}: x-questdb.columns must be a list`);
  for (const column of mapping.columns) {
    if (!IDENTIFIER.test(column.name)) {
      throw new Error(`${path}: column name ${JSON.stringify(column.name)} is not a lower-case identifier`);
    }
  }
}

/** Latest version of each type. */
export function latestVersions(catalog: SchemaVersion[]): Map<string, SchemaVersion> {
  const latest = new Map<string, SchemaVersion>();
  for (const entry of catalog) {
    const current = latest.get(entry.type);
    if (!current || current.version < entry.version) latest.set(entry.type, entry);
  }
  return latest;
}

/** Reads a dotted path such as `context.location` from an event body. */
export function readField(body: Record<string, unknown>, path: string): unknown {
  let value: unknown = body;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}
