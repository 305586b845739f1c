/**
 * Schema versions the hub learns while it runs. Edge agents watch the schema registry (KV bucket `schemas`) and
 * accept a new version as soon as any hub published it, so events of a version this process did not map at start
 * can arrive at any time. Such a version is learned the way start-up maps one (schema-publisher.ts):
 *
 * 1. fetched from the registry, together with any versions of the type between the hub's latest and it;
 * 2. checked with the start-up rule: compatible with the version before it under the type's mode (`compat.json`,
 *    `backward` by default), a version after a refused one refused too;
 * 3. its x-questdb mapping checked against every mapped version (same table, same column types);
 * 4. its table created or given the new columns (CREATE TABLE / ALTER TABLE ADD COLUMN), then its row mapping
 *    added, so the sink writes its events from then on.
 *
 * Versions reach the resolver two ways: `offer()` from a watch on the bucket (mapped before their events come), and
 * `resolve()` when the sink met an event it cannot map (the safety net, e.g. while the watch reconnects).
 * Learning is serialised (one catalogue), and concurrent lookups of one version share one registry read.
 */
import type { Logger } from '../../shared/logger.js';
import type { SchemaVersion } from '../../shared/schema-catalog.js';
import type { CompatMode } from '../../shared/schema-compat.js';
import { schemaKey } from '../../shared/schema-registry.js';
import { HubError, HubErrorCode, errorMessage, isPermanent } from './errors.js';
import type { Clock } from './hub-worker.js';
import type { HubMetrics } from './metrics.js';
import { planSchemas } from './schema-publisher.js';
import { rowMappingOf, type RowMappings } from './sinks/questdb-rows.js';
import { tableSpecs, type TableSpec } from './sinks/questdb-tables.js';

export type Resolution =
  /** The version is mapped: write the event again. */
  | { status: 'mapped' }
  /** No such version in the registry. */
  | { status: 'unknown'; reason: string }
  /** The registry has it, but the hub refuses to map it (incompatible, conflicting mapping, unusable entry). */
  | { status: 'refused'; reason: string };

export interface SchemaResolver {
  /**
   * Resolves when the version is mapped or known to be unmappable. Rejects (HUB_ERR_SCHEMA_LOOKUP_FAILED) when the
   * registry or QuestDB could not be asked: nothing is decided, ask again later.
   */
  resolve(type: string, version: number): Promise<Resolution>;
}

/** A registry read: the version, nothing under its key, or an entry that is not a usable schema. */
export type RegistryEntry = { type: 'schema'; schema: SchemaVersion } | { type: 'missing' } | { type: 'unusable'; reason: string };

/** The part of the schema registry the resolver reads (KV in production, a map in tests). */
export interface SchemaRegistryReader {
  /** Throws when the registry cannot be read. */
  get(type: string, version: number): Promise<RegistryEntry>;
  /** Where it reads from, for messages (`registry bucket "schemas"`). */
  readonly name: string;
}

/** Brings QuestDB tables up to the given specs (create, add columns); throws HubError (permanent or not). */
export type TableMigrator = (specs: readonly TableSpec[]) => Promise<unknown>;

export type LearnedVia = 'watch' | 'lookup';

export interface RegistrySchemaResolverOptions {
  /** What the hub mapped at start (the registry's versions and the ones it published), sorted by type and version. */
  catalog: readonly SchemaVersion[];
  modes: ReadonlyMap<string, CompatMode>;
  /** The sink's mappings: learned versions are added here. */
  mappings: RowMappings;
  registry: SchemaRegistryReader;
  migrateTables: TableMigrator;
  /** How long "not in the registry" is believed before the registry is read again (a watched PUT ends it sooner). */
  missingTtlMs: number;
  clock: Clock;
  log: Logger;
  metrics?: HubMetrics;
}

export interface SchemaResolverStats {
  learned: number;
  refused: number;
  lookups: number;
}

export class RegistrySchemaResolver implements SchemaResolver {
  readonly stats: SchemaResolverStats = { learned: 0, refused: 0, lookups: 0 };
  private catalog: SchemaVersion[];
  /** Versions refused for good (published versions are immutable, and so is the one before them). */
  private readonly refused = new Map<string, string>();
  private readonly refusedByType = new Map<string, Set<number>>();
  /** Versions not in the registry when last read, until when that is believed. */
  private readonly missing = new Map<string, number>();
  private readonly inFlight = new Map<string, Promise<Resolution>>();
  /** Learning runs one at a time: each step plans against the catalogue the previous one left. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: RegistrySchemaResolverOptions) {
    this.catalog = [...options.catalog];
    options.metrics?.schemaVersions.set(options.mappings.size);
  }

  resolve(type: string, version: number): Promise<Resolution> {
    const known = this.known(type, version);
    if (known) return Promise.resolve(known);
    const key = schemaKey(type, version);
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.lookup(type, version).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  /**
   * A version seen on the registry watch: learned now, before its events arrive. Failures are logged (and the
   * lookup on the first event of the version tries again); never rejects.
   */
  async offer(entry: SchemaVersion): Promise<Resolution | undefined> {
    const key = schemaKey(entry.type, entry.version);
    this.missing.delete(key);
    if (this.known(entry.type, entry.version)) return undefined;
    try {
      const gaps = await this.gapsBelow(entry.type, entry.version);
      return await this.serialised(() => this.learn([...gaps, entry], entry, 'watch'));
    } catch (error) {
      this.options.log.warn({ type: entry.type, version: entry.version, err: errorMessage(error) }, 'cannot map a schema version seen on the registry watch yet; its first event will try again');
      return undefined;
    }
  }

  /** Forget that a version was missing (the watch saw it deleted and created again, or saw it at all). */
  forgetMissing(type: string, version: number): void {
    this.missing.delete(schemaKey(type, version));
  }

  private known(type: string, version: number): Resolution | undefined {
    if (this.options.mappings.get(type, version)) return { status: 'mapped' };
    const key = schemaKey(type, version);
    const refusal = this.refused.get(key);
    if (refusal !== undefined) return { status: 'refused', reason: refusal };
    const until = this.missing.get(key);
    if (until !== undefined) {
      if (this.options.clock.now() < until) return { status: 'unknown', reason: this.missingReason(type, version) };
      this.missing.delete(key);
    }
    return undefined;
  }

  private async lookup(type: string, version: number): Promise<Resolution> {
    const { registry, metrics } = this.options;
    this.stats.lookups++;
    let result: Resolution;
    try {
      const found = await this.read(type, version);
      if (found.type === 'missing') {
        this.missing.set(schemaKey(type, version), this.options.clock.now() + this.options.missingTtlMs);
        result = { status: 'unknown', reason: this.missingReason(type, version) };
      } else if (found.type === 'unusable') {
        result = this.refuse(type, version, `${type} v${version} in the ${registry.name} is not a usable schema: ${found.reason}`);
      } else {
        const gaps = await this.gapsBelow(type, version);
        result = await this.serialised(() => this.learn([...gaps, found.schema], found.schema, 'lookup'));
      }
    } catch (error) {
      metrics?.schemaLookups.inc({ result: 'error' });
      throw error;
    }
    metrics?.schemaLookups.inc({ result: result.status });
    return result;
  }

  private async read(type: string, version: number): Promise<RegistryEntry> {
    try {
      return await this.options.registry.get(type, version);
    } catch (error) {
      throw new HubError(HubErrorCode.SCHEMA_LOOKUP_FAILED, `cannot read ${type} v${version} from the ${this.options.registry.name}: ${errorMessage(error)}`, { cause: error });
    }
  }

  /**
   * Versions of `type` the registry may hold between the hub's latest below `version` (or the type's start) and
   * `version`: the chain `version` is checked along, as at start.
   */
  private async gapsBelow(type: string, version: number): Promise<SchemaVersion[]> {
    const below = this.catalog.filter((e) => e.type === type && e.version < version).map((e) => e.version);
    const gaps: SchemaVersion[] = [];
    for (let v = below.length > 0 ? Math.max(...below) + 1 : 1; v < version; v++) {
      if (this.refused.has(schemaKey(type, v))) continue; // learn() refuses what follows it
      const found = await this.read(type, v);
      if (found.type === 'schema') gaps.push(found.schema);
    }
    return gaps;
  }

  private serialised<T>(step: () => Promise<T>): Promise<T> {
    const run = this.queue.then(step, step);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Maps the candidates, lowest version first, each as start-up would: refused if it follows a refused version or
   * breaks compatibility with the version before it, or if its mapping conflicts with a mapped table; else its
   * table is brought up to date and its mapping added. Returns what became of `target`.
   */
  private async learn(candidates: readonly SchemaVersion[], target: SchemaVersion, via: LearnedVia): Promise<Resolution> {
    const { log, metrics, mappings } = this.options;
    const ordered = [...candidates].sort((a, b) => (a.type === b.type ? a.version - b.version : a.type < b.type ? -1 : 1));
    for (const entry of ordered) {
      const { type, version } = entry;
      if (mappings.get(type, version) || this.refused.has(schemaKey(type, version))) continue;
      const previous = Math.max(0, ...this.catalog.filter((e) => e.type === type && e.version < version).map((e) => e.version));
      const blocker = this.refusedBetween(type, previous, version);
      if (blocker !== undefined) {
        this.refuse(type, version, `${type} v${version}: follows v${blocker}, which was refused`);
        continue;
      }
      const plan = planSchemas([entry], this.catalog, this.options.modes);
      const refusal = plan.refused.find((r) => r.type === type && r.version === version);
      if (refusal || plan.publish.length === 0) {
        this.refuse(type, version, refusal ? refusal.reasons.join('; ') : `${type} v${version}: not accepted by the schema plan`);
        continue;
      }
      const table = entry.schema['x-questdb'].table;
      let specs: TableSpec[];
      try {
        rowMappingOf(entry);
        specs = tableSpecs(plan.catalog).filter((spec) => spec.table === table);
      } catch (error) {
        this.refuse(type, version, `${type} v${version}: ${errorMessage(error)}`);
        continue;
      }
      try {
        await this.options.migrateTables(specs);
      } catch (error) {
        if (!isPermanent(error)) {
          throw new HubError(HubErrorCode.SCHEMA_LOOKUP_FAILED, `cannot prepare table ${table} for ${type} v${version}: ${errorMessage(error)}`, { cause: error });
        }
        this.refuse(type, version, `${type} v${version}: ${errorMessage(error)}`);
        continue;
      }
      mappings.add(entry);
      this.catalog = plan.catalog;
      this.missing.delete(schemaKey(type, version));
      this.stats.learned++;
      metrics?.schemaVersionsLearned.inc({ via });
      metrics?.schemaVersions.set(mappings.size);
      log.info({ type, version, table, via }, 'schema version learned from the registry');
    }
    return this.known(target.type, target.version) ?? { status: 'unknown', reason: this.missingReason(target.type, target.version) };
  }

  /** The lowest refused version of `type` strictly between `low` and `high`. */
  private refusedBetween(type: string, low: number, high: number): number | undefined {
    const versions = this.refusedByType.get(type);
    if (!versions) return undefined;
    let found: number | undefined;
    for (const v of versions) if (v > low && v < high && (found === undefined || v < found)) found = v;
    return found;
  }

  private refuse(type: string, version: number, reason: string): Resolution {
    const key = schemaKey(type, version);
    if (!this.refused.has(key)) {
      this.refused.set(key, reason);
      let versions = this.refusedByType.get(type);
      if (!versions) this.refusedByType.set(type, (versions = new Set()));
      versions.add(version);
      this.stats.refused++;
      this.options.log.error({ code: HubErrorCode.SCHEMA_INCOMPATIBLE, type, version, reason }, `schema version from the registry refused: ${reason}`);
    }
    return { status: 'refused', reason: this.refused.get(key)! };
  }

  private missingReason(type: string, version: number): string {
    return `no schema ${type} v${version} in the ${this.options.registry.name}`;
  }
}

/** The resolver of a hub without a schema registry: only the versions mapped at start exist. */
export class StaticSchemaResolver implements SchemaResolver {
  constructor(private readonly mappings: RowMappings) {}

  async resolve(type: string, version: number): Promise<Resolution> {
    if (this.mappings.get(type, version)) return { status: 'mapped' };
    return { status: 'unknown', reason: `no schema ${type} v${version} in the hub's schemas folder (schema registry disabled)` };
  }
}
