/**
 * For sources that pull (broker subscription, files, database): hand items to the ingest pipeline and wait for
 * the commit, retrying with exponential backoff while the outbox is full or the commit fails. The source's
 * position (PUBACK, file offset, last row) stays where it is meanwhile, so nothing uncommitted is acknowledged,
 * and the pull stalls, which bounds memory: one submission in flight per input.
 */
import type { Logger } from '../../../shared/logger.js';
import { EdgeError, EdgeErrorCode, OutboxFullError } from '../errors.js';
import type { IngestItem, IngestResult, IngestSource } from '../ingest.js';
import type { EventContext } from '../validation/event-validator.js';
import type { SourceDeps } from './source.js';

export interface RetryOptions {
  retryInitialMs: number;
  retryMaxMs: number;
}

/** Thrown when the source stopped while waiting: the caller must not advance its position. */
export class SourceStopped extends Error {
  constructor() {
    super('source stopped before the commit');
    this.name = 'SourceStopped';
  }
}

/** Sleeps that `stop()` cuts short. */
export class Stopper {
  private stopped = false;
  private readonly wakers = new Set<() => void>();

  get isStopped(): boolean {
    return this.stopped;
  }

  stop(): void {
    this.stopped = true;
    for (const wake of this.wakers) wake();
    this.wakers.clear();
  }

  /** Resolves after `ms`, or at once when stopped. */
  sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakers.add(wake);
    });
  }
}

export type SubmitContext = Omit<EventContext, 'ingestTimeUs'> & IngestSource;

export async function submitUntilStored(
  deps: SourceDeps,
  items: IngestItem[],
  context: SubmitContext,
  options: RetryOptions,
  stopper: Stopper,
  log: Logger = deps.log,
): Promise<IngestResult> {
  let delay = options.retryInitialMs;
  for (let attempt = 1; ; attempt++) {
    if (stopper.isStopped) throw new SourceStopped();
    try {
      return await deps.ingest.submit(items, context);
    } catch (error) {
      if (error instanceof EdgeError && error.code === EdgeErrorCode.SHUTTING_DOWN) throw new SourceStopped();
      if (error instanceof OutboxFullError) {
        if (attempt === 1) log.warn({ origin: context.origin, events: items.length }, 'outbox full: holding the input until there is room');
      } else {
        log.error({ err: error, origin: context.origin, attempt }, 'commit failed; retrying');
      }
    }
    await stopper.sleep(delay);
    delay = Math.min(delay * 2, options.retryMaxMs);
  }
}
