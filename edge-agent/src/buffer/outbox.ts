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
  /** The type its source assumed for events without a `type` field (needed to validate it again on redrive). */
  defaultType?: string;
  /** The partition key its source required (the device id of the MQTT topic), for redrive. */
  expectedKey?: string;
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

/** A dead letter as stored: its id, when it was refused, and whether the hub's DLQ stream has it. */
export interface StoredDeadLetter extends DeadLetter {
  id: number;
  /** When it was refused, epoch ms. */
  at: number;
  /** Bytes of the payload. */
  bytes: number;
  /** When the hub's DLQ stream acknowledged it (PubAck), epoch ms; undefined while not forwarded. */
  forwardedAt?: number;
}

/** A dead letter without its payload (listings). */
export type DeadLetterSummary = Omit<StoredDeadLetter, 'payload'>;

export interface DeadLetterQuery {
  /** Only dead letters with this code. */
  code?: string;
  /** Only ids above this one (paging oldest first). */
  afterId?: number;
  limit: number;
}

export interface DeadLetterStats {
  rows: number;
  /** Payload bytes of the stored dead letters. */
  bytes: number;
  /** Stored and not yet acknowledged by the hub's DLQ stream. */
  unforwarded: number;
  maxRows: number;
  maxBytes: number;
  /** Dead letters deleted by the bound before they reached the hub, since start. */
  dropped: number;
  /** Forwarded dead letters deleted by the bound (the hub's DLQ stream keeps them), since start. */
  pruned: number;
}

/** One dead letter to move into the outbox (redrive): the events its payload now validates into. */
export interface Redrive {
  id: number;
  events: OutboxEvent[];
}

/**
 * The dead-letter table: bounded (oldest forwarded ones go first, then the oldest of all, counted as dropped),
 * forwarded to the hub's DLQ stream, kept for inspection and redrive.
 */
export interface DeadLetterStore {
  /** Not yet forwarded, oldest first, with payloads. */
  unforwarded(limit: number): StoredDeadLetter[];
  /** The hub acknowledged these (PubAck): keep them, but as forwarded (the first to go when the table is full). */
  markForwarded(ids: number[]): void;
  /** Newest first, without payloads. */
  listDeadLetters(query: Omit<DeadLetterQuery, 'afterId'>): DeadLetterSummary[];
  /** Oldest first, with payloads (for redrive). */
  readDeadLetters(query: DeadLetterQuery): StoredDeadLetter[];
  getDeadLetter(id: number): StoredDeadLetter | undefined;
  /**
   * In one transaction: deletes each dead letter and appends its events to the outbox. Returns the ids moved (a
   * dead letter deleted meanwhile is skipped with its events). Throws OutboxFullError when the events do not fit;
   * a redrive never drops queued events to make room.
   */
  redrive(moves: Redrive[]): number[];
  deadLetterStats(): DeadLetterStats;
  /**
   * Re-reads the counters when another process (the edge-dlq CLI) committed to the database since the last call;
   * returns true when it did (new outbox rows may be waiting for the publisher).
   */
  syncExternalChanges(): boolean;
}
