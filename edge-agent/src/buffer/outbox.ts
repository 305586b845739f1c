/**
 * The store-and-forward buffer between ingest and the publisher (Telegraf's Add / Batch / Accept, made durable).
 * An event is acknowledged to its device only after `append` returned; a row is deleted only after the hub's
 * JetStream PubAck covered it (`accept`).
 */

/**
 * One outbox record: one or more accepted events of one partition, encoded for the wire. Ingest stores the events
 * of a group commit as a few records (one per partition, cut by size) instead of one row per event, because the
 * per-row cost of SQLite (insert, read back, delete) dominated the agent's CPU time at 100k events/s.
 */
export interface OutboxEvent {
  partition: number;
  /** msgpack of the WireEvent, or several concatenated (a msgpack sequence, as a batch carries them). */
  data: Uint8Array;
  /** How many events `data` holds. @default 1 */
  count?: number;
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
  /** Events in `data`. */
  events: number;
}

/** A contiguous range of outbox sequences that the publisher sends as one unit (possibly several messages). */
export interface OutboxRange {
  first: number;
  last: number;
  /** Events in the range (a row may hold several). */
  events: number;
  bytes: number;
}

export type FullPolicy = 'reject' | 'drop-oldest';

export interface OutboxStats {
  /** Events waiting (not records: a record may hold several). */
  rows: number;
  bytes: number;
  maxBytes: number;
  /** Ingest time of the oldest row, epoch ms; undefined when empty. */
  oldestAppendedAtMs?: number;
  /** Events dropped by the `drop-oldest` policy since start. */
  dropped: number;
  deadLetters: number;
}

export interface Outbox {
  /** Durably appends events and dead letters in one transaction. Throws OutboxFullError under `reject`. */
  append(events: OutboxEvent[], deadLetters: DeadLetter[]): void;
  /** Unclaimed rows after `afterSeq`, oldest first, up to about `maxEvents` events and `maxBytes` (at least one row). */
  readAfter(afterSeq: number, maxEvents: number, maxBytes: number): OutboxRow[];
  /** All rows of a range (used to re-send a claimed range after a restart, with the same message ids). */
  readRange(range: OutboxRange): OutboxRow[];
  /** Sequence of the newest row appended so far (0 when none ever was). */
  lastSeq(): number;
  /** Records that a range is being published, so a restart re-cuts exactly the same batches. */
  claim(range: OutboxRange): void;
  /** Claimed but not yet accepted ranges, oldest first. */
  claimed(): OutboxRange[];
  /** The hub acknowledged the range: delete its rows. */
  accept(range: OutboxRange): void;
  stats(): OutboxStats;
  /**
   * Resolves when every write made before the call is on disk. The publisher awaits it after each claim, so it
   * never publishes rows a power loss could take back (their sequence numbers, hence message ids, would be reused).
   */
  durable(): Promise<void>;
  /** Whether sources must await durable() before acknowledging (`synchronous: full`). */
  readonly syncBeforeAck: boolean;
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
  /** Not yet forwarded with ids first..last, oldest first (the claimed batch, sent again). */
  unforwardedBetween(first: number, last: number): StoredDeadLetter[];
  /** The batch being forwarded (claimed before it is sent, cleared when its dead letters are marked), if any. */
  deadLetterClaim(): { first: number; last: number } | undefined;
  /** Records the batch first..last as being forwarded, replacing an older claim: a retry resends exactly it. */
  claimDeadLetters(first: number, last: number): void;
  /**
   * The hub acknowledged the batch first..last (PubAck): keep its dead letters, but as forwarded (the first to go when
   * the table is full). Clears the claim once none of its dead letters is left unforwarded.
   */
  markForwarded(first: number, last: number): void;
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
