/**
 * The schema registry (NATS KV bucket, key `<type>.v<N>`, see shared/schema-registry.ts) as the running hub reads
 * it: single versions on demand (`get`, from the stream leader, so a version an agent already has is found), and a
 * watch that hands every version published after start to the resolver before its events arrive.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { ResumableKvWatch } from '../../shared/kv-watch.js';
import type { Logger } from '../../shared/logger.js';
import type { SchemaVersion } from '../../shared/schema-catalog.js';
import { decodeSchemaValue, parseSchemaKey, schemaKey } from '../../shared/schema-registry.js';
import { errorMessage } from './errors.js';
import type { RegistryEntry, SchemaRegistryReader } from './schema-resolver.js';

export class KvSchemaRegistry implements SchemaRegistryReader {
  readonly name: string;
  private kv: Promise<KV> | undefined;

  constructor(
    private readonly js: JetStreamClient,
    private readonly bucket: string,
  ) {
    this.name = `registry bucket "${bucket}"`;
  }

  async get(type: string, version: number): Promise<RegistryEntry> {
    const key = schemaKey(type, version);
    const entry = await (await this.open()).get(key);
    if (!entry || entry.operation !== 'PUT') return { type: 'missing' };
    try {
      return { type: 'schema', schema: decodeSchemaValue(key, entry.string()) };
    } catch (error) {
      return { type: 'unusable', reason: errorMessage(error) };
    }
  }

  /** Binds to the bucket (which the hub created at start); a failed bind is tried again on the next call. */
  open(): Promise<KV> {
    // bind (open) reads with the stream's get API unless told otherwise: the leader answers, never a lagging replica.
    this.kv ??= new Kvm(this.js).open(this.bucket).catch((error: unknown) => {
      this.kv = undefined;
      throw error;
    });
    return this.kv;
  }
}

export interface SchemaWatchOptions {
  /** Wait before watching again after the watch failed or ended. */
  retryMs: number;
  log: Logger;
}

/**
 * Watches the bucket from its start (every version, then each new one) and hands each usable version to `offer`,
 * one at a time, in the bucket's order. Survives reconnects: a failed watch resumes after the last revision seen.
 */
export class KvSchemaWatch {
  private readonly watch: ResumableKvWatch;

  constructor(
    private readonly registry: KvSchemaRegistry,
    private readonly offer: (entry: SchemaVersion) => Promise<unknown>,
    private readonly options: SchemaWatchOptions,
  ) {
    this.watch = new ResumableKvWatch(() => registry.open(), (key, value) => this.onPut(key, value), {
      name: `schema registry ${registry.name}`,
      retryMs: options.retryMs,
      log: options.log,
    });
  }

  /** True while a watch on the bucket is established. */
  get watching(): boolean {
    return this.watch.watching;
  }

  start(): void {
    this.watch.start();
  }

  stop(): Promise<void> {
    return this.watch.stop();
  }

  private async onPut(key: string, value: string): Promise<void> {
    if (!parseSchemaKey(key)) return;
    let schema: SchemaVersion;
    try {
      schema = decodeSchemaValue(key, value);
    } catch (error) {
      this.options.log.warn({ key, err: errorMessage(error) }, 'unusable entry in the schema registry ignored');
      return;
    }
    await this.offer(schema);
  }
}
