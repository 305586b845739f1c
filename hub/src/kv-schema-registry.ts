/**
 * The schema registry (NATS KV bucket, key `<type>.v<N>`, see shared/schema-registry.ts) as the running hub reads
 * it: single versions on demand (`get`, from the stream leader, so a version an agent already has is found), and a
 * watch that hands every version published after start to the resolver before its events arrive.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
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
  /** True while a watch on the bucket is established. */
  watching = false;
  private stopped = false;
  private iterator: QueuedIterator<KvWatchEntry> | undefined;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private revision = 0;

  constructor(
    private readonly registry: KvSchemaRegistry,
    private readonly offer: (entry: SchemaVersion) => Promise<unknown>,
    private readonly options: SchemaWatchOptions,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.iterator?.stop();
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { log } = this.options;
    while (!this.stopped) {
      try {
        const kv = await this.registry.open();
        const iterator = await kv.watch({
          ignoreDeletes: true,
          ...(this.revision > 0 ? { resumeFromRevision: this.revision + 1 } : {}),
        });
        this.iterator = iterator;
        if (this.stopped) iterator.stop();
        this.watching = true;
        log.info({ registry: this.registry.name, fromRevision: this.revision + 1 }, 'watching the schema registry for new versions');
        for await (const entry of iterator) {
          if (entry.operation === 'PUT' && parseSchemaKey(entry.key)) {
            let schema: SchemaVersion | undefined;
            try {
              schema = decodeSchemaValue(entry.key, entry.string());
            } catch (error) {
              log.warn({ key: entry.key, err: errorMessage(error) }, 'unusable entry in the schema registry ignored');
            }
            if (schema) await this.offer(schema);
          }
          this.revision = entry.revision;
        }
      } catch (error) {
        log.warn({ registry: this.registry.name, err: errorMessage(error), retryInMs: this.options.retryMs }, 'schema registry watch failed; retrying');
      }
      this.watching = false;
      if (!this.stopped) await this.sleep(this.options.retryMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
