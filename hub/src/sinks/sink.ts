/**
 * A sink buffers the rows of decoded batches and makes them durable on flush. The worker acks a message only after
 * a flush that covered its rows resolved, so `flush()` must not resolve before the store confirmed the write.
 */
import type { EventBatch } from '../../../shared/wire.js';

/** Why an event of a batch did not become a row. */
export type SkippedEvent =
  | { type: 'unknown_schema'; eventType: string; version: number; id: string }
  | { type: 'invalid_event'; id: string; reason: string };

export interface WriteResult {
  /** Rows buffered from the batch. */
  rows: number;
  /** Events that were not written: the caller learns their schema version or sends them to the DLQ. */
  skipped: readonly SkippedEvent[];
  /**
   * Position in `batch.events` of each entry of `skipped` (same order, same length). A sink should always report
   * it; without it the worker finds the skipped events by id, in order.
   */
  skippedAt?: readonly number[];
  /** `table.column` of values left unset because they did not fit the column type. */
  invalidColumns: readonly string[];
}

export interface FlushResult {
  /** Rows the store confirmed. */
  rows: number;
}

export interface Sink {
  /** Buffers the rows of every event in the batch. Synchronous, never throws for one bad event. */
  write(batch: EventBatch): WriteResult;
  /** Rows written and not yet confirmed, including those of a failed or in-flight flush. */
  readonly bufferedRows: number;
  /**
   * Sends every row written before the call and resolves once the store confirmed them. On failure it rejects and
   * keeps the rows: the next flush sends them again (with any rows written since). One flush at a time.
   */
  flush(): Promise<FlushResult>;
  /** Drops every buffered row (their messages are being given back to JetStream); returns how many. */
  discard(): number;
  /** Resolves when the store is reachable; used to resume after a failure once nothing is buffered. */
  probe(): Promise<void>;
  close(): Promise<void>;
}
