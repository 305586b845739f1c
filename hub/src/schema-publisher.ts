/**
 * The hub publishes its schemas/ folder into the schema registry (NATS KV bucket `schemas`, key `<type>.v<N>`,
 * see shared/schema-registry.ts) at start, after the compatibility check; edge agents watch the bucket and compile
 * new versions without a restart.
 *
 * Per type, versions are taken in order over the folder and the registry together:
 * - a version already in the registry stays as it is (published versions are immutable); the folder's copy must
 *   be identical, else it is refused;
 * - a version only in the folder is published if it is compatible with the version before it (the type's mode from
 *   `compat.json`, `backward` by default); an incompatible one is refused, and so is every later version of the
 *   type (they were written on top of it).
 * The hub then maps the registry's versions plus the ones it published (a version another hub published is
 * mapped too). A refused version is logged with what breaks, and neither published nor mapped; the hub runs on.
 * Versions published while the hub runs are learned by schema-resolver.ts with the same plan.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { JetStreamClient } from '@nats-io/jetstream';
import type { Logger } from '../../shared/logger.js';
import type { SchemaVersion } from '../../shared/schema-catalog.js';
import { checkCompatibility, DEFAULT_COMPAT_MODE, type CompatMode } from '../../shared/schema-compat.js';
import { decodeSchemaValue, encodeSchemaValue, sameSchema, schemaKey } from '../../shared/schema-registry.js';
import { HubErrorCode } from './errors.js';

/** Log code of a refused version (not a start-up failure: the hub keeps running with the versions it accepted). */
export const SCHEMA_REFUSED = HubErrorCode.SCHEMA_INCOMPATIBLE;

export interface RefusedVersion {
  type: string;
  version: number;
  /** Why, one sentence each: `device.telemetry v2: field "unit" became required (breaks backward)`. */
  reasons: string[];
}

export interface SchemaPlan {
  /** Folder versions to create in the registry, in order. */
  publish: SchemaVersion[];
  refused: RefusedVersion[];
  /** What the hub maps to tables: the registry's versions and the ones to publish, sorted by type and version. */
  catalog: SchemaVersion[];
}

/** Pure: which folder versions to publish and which to refuse, given what the registry holds. */
export function planSchemas(
  folder: readonly SchemaVersion[],
  registry: readonly SchemaVersion[],
  modes: ReadonlyMap<string, CompatMode>,
): SchemaPlan {
  const plan: SchemaPlan = { publish: [], refused: [], catalog: [] };
  const byType = new Map<string, { folder: Map<number, SchemaVersion>; registry: Map<number, SchemaVersion> }>();
  const slot = (type: string) => {
    let entry = byType.get(type);
    if (!entry) byType.set(type, (entry = { folder: new Map(), registry: new Map() }));
    return entry;
  };
  for (const entry of folder) slot(entry.type).folder.set(entry.version, entry);
  for (const entry of registry) slot(entry.type).registry.set(entry.version, entry);

  for (const type of [...byType.keys()].sort()) {
    const { folder: local, registry: published } = byType.get(type)!;
    const mode = modes.get(type) ?? DEFAULT_COMPAT_MODE;
    const versions = [...new Set([...local.keys(), ...published.keys()])].sort((a, b) => a - b);
    let previous: SchemaVersion | undefined;
    let blockedBy: number | undefined;
    for (const version of versions) {
      const inRegistry = published.get(version);
      const inFolder = local.get(version);
      if (inRegistry) {
        if (inFolder && !sameSchema(inRegistry, inFolder)) {
          plan.refused.push({
            type,
            version,
            reasons: [
              `${type} v${version}: differs from the version already in the registry; published versions are immutable, so put the change in a new version`,
            ],
          });
        }
        plan.catalog.push(inRegistry);
        previous = inRegistry;
        continue;
      }
      const candidate = inFolder!;
      if (blockedBy !== undefined) {
        plan.refused.push({ type, version, reasons: [`${type} v${version}: follows v${blockedBy}, which was refused`] });
        continue;
      }
      if (previous) {
        const result = checkCompatibility(previous, candidate, mode);
        if (!result.compatible) {
          plan.refused.push({ type, version, reasons: result.breaks });
          blockedBy = version;
          continue;
        }
      }
      plan.publish.push(candidate);
      plan.catalog.push(candidate);
      previous = candidate;
    }
  }
  return plan;
}

/** Creates the bucket if missing (one value per key: versions are never updated). */
export async function openSchemaBucket(js: JetStreamClient, bucket: string, replicas: number): Promise<KV> {
  return new Kvm(js).create(bucket, {
    replicas,
    history: 1,
    description: 'Event schema versions (<type>.v<N>), published by the hub, watched by edge agents',
  });
}

/** Reads every version in the registry; entries that are not usable schemas are logged and left out. */
export async function readRegistry(kv: KV, log: Logger): Promise<SchemaVersion[]> {
  const versions: SchemaVersion[] = [];
  const keys: string[] = [];
  for await (const key of await kv.keys()) keys.push(key);
  for (const key of keys) {
    const entry = await kv.get(key);
    if (!entry || entry.operation !== 'PUT') continue;
    try {
      versions.push(decodeSchemaValue(key, entry.string()));
    } catch (error) {
      log.warn({ key, err: (error as Error).message }, 'unusable entry in the schema registry ignored');
    }
  }
  return versions;
}

export class SchemaRaceError extends Error {}

/**
 * Publishes the folder's compatible new versions and returns the plan (what the hub maps). Idempotent: run again
 * (e.g. by the start-up retry) it publishes nothing twice.
 */
export async function publishSchemas(
  kv: KV,
  folder: readonly SchemaVersion[],
  modes: ReadonlyMap<string, CompatMode>,
  log: Logger,
): Promise<SchemaPlan> {
  const plan = planSchemas(folder, await readRegistry(kv, log), modes);
  for (const entry of plan.publish) {
    const key = schemaKey(entry.type, entry.version);
    try {
      await kv.create(key, encodeSchemaValue(entry));
    } catch (error) {
      // Another hub may have created the key meanwhile: identical is fine, anything else means planning again.
      const existing = await kv.get(key).catch(() => null);
      if (!existing || existing.operation !== 'PUT') throw error;
      if (!sameSchema(decodeSchemaValue(key, existing.string()), entry)) {
        throw new SchemaRaceError(`${key} was published by another hub with other content meanwhile; planning again`);
      }
    }
    log.info({ type: entry.type, version: entry.version, key }, 'schema version published');
  }
  for (const refused of plan.refused) {
    log.error({ code: SCHEMA_REFUSED, type: refused.type, version: refused.version, reasons: refused.reasons }, `schema version refused: ${refused.reasons.join('; ')}`);
  }
  return plan;
}
