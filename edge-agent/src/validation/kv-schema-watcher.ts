/**
 * Keeps the agent's validator up to date with the hub's schema registry (NATS KV bucket `schemas`, one key per
 * version, see shared/schema-registry.ts) without a restart.
 *
 * The agent starts from its local schemas/ folder plus the versions it learned earlier (cached under the data
 * folder), so it validates offline. Then it watches the bucket: each version it has not seen is compiled and added
 * to the running validator (EventValidator.addVersion swaps its type map in one assignment), and written to the
 * cache so that a restart without the hub, and the edge-dlq CLI, know it too. Versions are never removed: events of
 * older versions keep validating.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { ResumableKvWatch } from '../../../shared/kv-watch.js';
import type { Logger } from '../../../shared/logger.js';
import { isEventTypeName, loadSchemaCatalog, toSchemaVersion, type SchemaVersion } from '../../../shared/schema-catalog.js';
import { decodeSchemaValue, encodeSchemaValue, mergeCatalogs } from '../../../shared/schema-registry.js';
import type { EventValidator } from './event-validator.js';

/** Where an agent caches the versions it learned from the registry: `<dataDir>/schema-cache/<type>/v<N>.json`. */
export function schemaCacheDir(dataDir: string): string {
  return join(dataDir, 'schema-cache');
}

/**
 * The local schemas folder plus the cached registry versions. The folder wins over a cached version with other
 * content (reported in `conflicts`); an unreadable cache file is skipped (reported in `skipped`).
 */
export function loadAgentCatalog(schemasDir: string, cacheDir: string): { catalog: SchemaVersion[]; conflicts: string[]; skipped: string[] } {
  const local = loadSchemaCatalog(schemasDir);
  const { versions: cached, skipped } = loadSchemaCache(cacheDir);
  return { ...mergeCatalogs(local, cached), skipped };
}

/** Reads the cache leniently: a broken file is reported, not fatal (the registry will deliver the version again). */
export function loadSchemaCache(dir: string): { versions: SchemaVersion[]; skipped: string[] } {
  const versions: SchemaVersion[] = [];
  const skipped: string[] = [];
  if (!existsSync(dir)) return { versions, skipped };
  for (const type of readdirSync(dir)) {
    const typeDir = join(dir, type);
    if (!isEventTypeName(type) || !statSync(typeDir).isDirectory()) continue;
    for (const file of readdirSync(typeDir)) {
      const match = /^v([1-9][0-9]*)\.json$/.exec(file);
      if (!match) continue;
      const path = join(typeDir, file);
      try {
        versions.push(toSchemaVersion(type, Number(match[1]), JSON.parse(readFileSync(path, 'utf8')), path));
      } catch (error) {
        skipped.push(`${path}: ${(error as Error).message}`);
      }
    }
  }
  return { versions, skipped };
}

export interface SchemaWatcherOptions {
  bucket: string;
  cacheDir: string;
  /** Wait before watching again after the bucket was missing or the watch failed. */
  retryMs: number;
}

export interface SchemaWatcherStats {
  /** Versions added to the validator from the registry since start. */
  learned: number;
  /** Registry entries that were not usable (bad key or JSON, does not compile, conflicts with a loaded version). */
  refused: number;
  /** True while a watch on the bucket is established. */
  watching: boolean;
  lastError?: string;
}

export type ApplyResult = 'added' | 'unchanged' | 'refused';

export class KvSchemaWatcher {
  private readonly counts = { learned: 0, refused: 0 };
  private readonly watch: ResumableKvWatch;

  constructor(
    private readonly validator: EventValidator,
    nc: NatsConnection,
    private readonly options: SchemaWatcherOptions,
    private readonly log: Logger,
  ) {
    this.watch = new ResumableKvWatch(() => new Kvm(nc).open(options.bucket), (key, value) => this.apply(key, value), {
      name: `schema registry ${options.bucket}`,
      retryMs: options.retryMs,
      log,
    });
  }

  get stats(): SchemaWatcherStats {
    return { ...this.counts, watching: this.watch.watching, ...(this.watch.lastError ? { lastError: this.watch.lastError } : {}) };
  }

  start(): void {
    this.watch.start();
  }

  stop(): Promise<void> {
    return this.watch.stop();
  }

  /** Adds one registry entry to the validator and the cache. */
  apply(key: string, value: string): ApplyResult {
    let result: ApplyResult;
    let entry: SchemaVersion;
    try {
      entry = decodeSchemaValue(key, value);
      result = this.validator.addVersion(entry);
    } catch (error) {
      this.counts.refused++;
      this.log.error({ key, err: (error as Error).message }, 'schema version from the registry refused');
      return 'refused';
    }
    if (result === 'added') {
      this.counts.learned++;
      this.log.info({ type: entry.type, version: entry.version }, 'schema version learned from the registry');
      this.writeCache(entry);
    }
    return result;
  }

  private writeCache(entry: SchemaVersion): void {
    try {
      const dir = join(this.options.cacheDir, entry.type);
      mkdirSync(dir, { recursive: true });
      const path = join(dir, `v${entry.version}.json`);
      // Write then rename: a reader (another agent start, the CLI) never sees half a file.
      writeFileSync(`${path}.tmp-${process.pid}`, encodeSchemaValue(entry));
      renameSync(`${path}.tmp-${process.pid}`, path);
    } catch (error) {
      this.log.warn({ type: entry.type, version: entry.version, err: (error as Error).message }, 'cannot cache schema version');
    }
  }
}
