/**
 * The store-and-forward buffer between ingest and the publisher (Telegraf's Add / Batch / Accept, made durable).
 * An event is acknowledged to its device only after `append` returned; a row is deleted only after the hub's
 * JetStream PubAck covered it (`accept`).
 */

/** One accepted event, encoded for the wire, with the partition it will be published to. */
export interface OutboxEvent {
  partition: number;
  /** msgpack of the WireEvent. */
  data: Uint8Array;
}

/** One refused event, kept with its reason so that it can be inspected and redriven. */
export interface DeadLetter {
  source: string;
  code: string;
  reason: string;
  /** The raw payload (or the part of it that was this event). */
  payload: Uint8Array;
  /** Where it came from: MQTT topic, HTTP route, file path. */
  origin?: string;
}

export interface OutboxRow {
  seq: number;
  partition: number;
  data: Uint8Array;
}

/** A contiguous range of outbox sequences that the publisher sends as one unit (possibly several messages). */
export interface OutboxRange {
  first: number;
  last: number;
  rows: number;
  bytes: number;
}

export type FullPolicy = 'reject' | 'drop-oldest';

export interface OutboxStats {
  rows: number;
  bytes: number;
  maxBytes: number;
  /** Ingest time of the oldest row, epoch ms; undefined when empty. */
  oldestAppendedAtMs?: number;
  /** Rows dropped by the `drop-oldest` policy since start. */
  dropped: number;
  deadLetters: number;
}

export interface Outbox {
  /** Durably appends events and dead letters in one transaction. Throws OutboxFullError under `reject`. */
  append(events: OutboxEvent[], deadLetters: DeadLetter[]): void;
  /** Unclaimed rows after `afterSeq`, oldest first, up to `maxRows` and about `maxBytes`. */
  readAfter(afterSeq: number, maxRows: number, maxBytes: number): OutboxRow[];
  /** All rows of a range (used to re-send a claimed range after a restart, with the same message ids). */
  readRange(range: OutboxRange): OutboxRow[];
  /** Records that a range is being published, so a restart re-cuts exactly the same batches. */
  claim(range: OutboxRange): void;
  /** Claimed but not yet accepted ranges, oldest first. */
  claimed(): OutboxRange[];
  /** The hub acknowledged the range: delete its rows. */
  accept(range: OutboxRange): void;
  stats(): OutboxStats;
  close(): void;
}
