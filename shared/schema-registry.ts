/**
 * The schema registry contract: a NATS KV bucket the hub publishes every schema version into and edge agents watch.
 * One key per version, `<type>.v<N>` (e.g. `device.telemetry.v2`), whose value is the schema document as JSON.
 * Published versions are immutable: a version is only ever created, never updated or deleted.
 */
import { isEventTypeName, toSchemaVersion, type SchemaVersion } from './schema-catalog.js';

export const SCHEMA_BUCKET = 'schemas';

export function schemaKey(type: string, version: number): string {
  return `${type}.v${version}`;
}

/** `device.telemetry.v2` → { type: 'device.telemetry', version: 2 }; undefined when the key is not a version key. */
export function parseSchemaKey(key: string): { type: string; version: number } | undefined {
  const match = /^(.+)\.v([1-9][0-9]*)$/.exec(key);
  if (!match || !isEventTypeName(match[1]!)) return undefined;
  return { type: match[1]!, version: Number(match[2]) };
}

/** The value stored under a version's key. */
export function encodeSchemaValue(entry: SchemaVersion): string {
  return `${JSON.stringify(entry.schema, null, 2)}\n`;
}

/** Parses and checks a registry entry; throws with the key in the message when it is not a usable schema. */
export function decodeSchemaValue(key: string, text: string): SchemaVersion {
  const parsed = parseSchemaKey(key);
  if (!parsed) throw new Error(`registry key "${key}" is not <type>.v<N>`);
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new Error(`registry key "${key}": not valid JSON: ${(error as Error).message}`);
  }
  return toSchemaVersion(parsed.type, parsed.version, document, `registry key "${key}"`);
}

/** JSON with sorted keys: two documents that differ only in key order or whitespace compare equal. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

export function sameSchema(a: SchemaVersion, b: SchemaVersion): boolean {
  return canonicalJson(a.schema) === canonicalJson(b.schema);
}

/**
 * Union of two catalogues (e.g. the schemas/ folder and the versions learned from the registry), sorted by type
 * then version. On a version present in both with different content, `primary` wins and the conflict is reported.
 */
export function mergeCatalogs(
  primary: readonly SchemaVersion[],
  secondary: readonly SchemaVersion[],
): { catalog: SchemaVersion[]; conflicts: string[] } {
  const byKey = new Map(primary.map((entry) => [schemaKey(entry.type, entry.version), entry]));
  const conflicts: string[] = [];
  for (const entry of secondary) {
    const key = schemaKey(entry.type, entry.version);
    const existing = byKey.get(key);
    if (!existing) byKey.set(key, entry);
    else if (!sameSchema(existing, entry)) conflicts.push(`${entry.type} v${entry.version}`);
  }
  const catalog = [...byKey.values()].sort((a, b) => (a.type === b.type ? a.version - b.version : a.type < b.type ? -1 : 1));
  return { catalog, conflicts };
}
