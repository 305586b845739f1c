/**
 * A NATS KV watch that survives outages: it (re)opens the bucket, watches it from the start or from after the
 * last revision it handled, and retries after `retryMs` when the bucket is missing or the watch fails. The edge
 * agent and the hub both watch the schema registry with it.
 */
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import type { Logger } from './logger.js';

export interface ResumableKvWatchOptions {
  /** Name used in log lines. */
  name: string;
  /** Wait before watching again after the bucket was missing or the watch failed or ended. */
  retryMs: number;
  log: Logger;
}

export class ResumableKvWatch {
  /** True while a watch on the bucket is established. */
  watching = false;
  lastError: string | undefined;
  private stopped = false;
  private revision = 0;
  private iterator: QueuedIterator<KvWatchEntry> | undefined;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly open: () => Promise<KV>,
    /** Called for each PUT, one at a time, in the bucket's order; awaited before the next entry. */
    private readonly onPut: (key: string, value: string) => unknown,
    private readonly options: ResumableKvWatchOptions,
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
    const { log, name, retryMs } = this.options;
    while (!this.stopped) {
      try {
        const kv = await this.open();
        const iterator = await kv.watch({
          ignoreDeletes: true,
          ...(this.revision > 0 ? { resumeFromRevision: this.revision + 1 } : {}),
        });
        this.iterator = iterator;
        if (this.stopped) iterator.stop();
        this.watching = true;
        log.info({ watch: name, fromRevision: this.revision + 1 }, 'watching the KV bucket');
        for await (const entry of iterator) {
          if (entry.operation === 'PUT') await this.onPut(entry.key, entry.string());
          this.revision = entry.revision;
        }
      } catch (error) {
        this.lastError = (error as Error).message;
        log.warn({ watch: name, err: this.lastError, retryInMs: retryMs }, 'KV watch failed; retrying');
      }
      this.watching = false;
      if (!this.stopped) await this.sleep(retryMs);
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
