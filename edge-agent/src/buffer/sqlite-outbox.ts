/**
 * SQLite outbox (better-sqlite3, WAL).
 *
 * Durability (`synchronous: 'full'`, the default): an event is acknowledged only after the WAL frames of its
 * commit reached the disk, so it survives a process kill and a power loss. SQLite's `synchronous=FULL` would fsync
 * inside every commit, on the event loop, where it blocked parsing and validation a quarter of the time at
 * 50k events/s. So SQLite runs with `synchronous=NORMAL` (commits write the WAL without syncing it; checkpoints sync
 * the WAL before and the database after copying, so a checkpoint never loses or tears a page) and:
 *   - `durable()` fdatasyncs the WAL file on libuv's thread pool; ingest resolves a group commit (and the source
 *     acknowledges its devices) only after it. One fdatasync covers every commit written before it started, so
 *     concurrent group commits share it.
 *   - automatic checkpoints are off on this connection; a worker thread with its own connection checkpoints
 *     (wal-checkpointer.ts), so the checkpoint's copying and fsyncs do not stall ingest either.
 * `synchronous: 'normal'` skips the fdatasync before acknowledging: it survives a process kill but may lose the
 * last acknowledged commits on power loss; offered for gateways that prefer throughput. In both modes the
 * publisher publishes only synced rows (see Outbox.durable).
 * Ingest batches concurrent events into one transaction (group commit) and into records of many events each.
 */
import Database from 'better-sqlite3';
import { closeSync, fdatasync, fsyncSync, mkdirSync, openSync } from 'node:fs';
import { UnforwardedDeadLetters } from './unforwarded-dead-letters.js';
import { WalCheckpointer } from './wal-checkpointer.js';
import { dirname } from 'node:path';
import { OutboxFullError } from '../errors.js';
import type {
  DeadLetter,
  DeadLetterQuery,
  DeadLetterStats,
  DeadLetterStore,
  DeadLetterSummary,
  FullPolicy,
  Outbox,
  OutboxEvent,
  OutboxRange,
  OutboxRow,
  OutboxStats,
  Redrive,
  StoredDeadLetter,
} from './outbox.js';

export interface SqliteOutboxOptions {
  path: string;
  maxBytes: number;
  fullPolicy: FullPolicy;
  synchronous: 'full' | 'normal';
  /** Bound of the dead-letter table; over it, the oldest forwarded ones go first, then the oldest of all. */
  deadLetters?: { maxRows: number; maxBytes: number };
  /** Injected clock (epoch ms) for row timestamps. */
  now?: () => number;
  /** How often the checkpoint thread copies the WAL into the database. @default 250 */
  checkpointIntervalMs?: number;
  /** Payload bytes of unforwarded dead letters kept in memory for the forwarder; past it, it reads the table. @default 8 MiB */
  unforwardedCacheBytes?: number;
}

/** Default bound of the dead-letter table when the options name none. */
export const DEFAULT_DEAD_LETTER_BOUND = { maxRows: 100_000, maxBytes: 64 * 1024 * 1024 };
const DEFAULT_UNFORWARDED_CACHE_BYTES = 8 * 1024 * 1024;

interface DeadLetterRow {
  id: number;
  at: number;
  source: string;
  code: string;
  reason: string;
  origin: string | null;
  default_type: string | null;
  expected_key: string | null;
  payload?: Uint8Array;
  bytes: number;
  forwarded_at: number | null;
}

const DEAD_LETTER_COLUMNS = 'id, at, source, code, reason, origin, default_type, expected_key, length(payload) AS bytes, forwarded_at';

export class SqliteOutbox implements Outbox, DeadLetterStore {
  private readonly db: Database.Database;
  private readonly now: () => number;
  private bytes = 0;
  private rows = 0;
  /** Sequence of the newest row ever appended (rows are never renumbered). */
  private newestSeq = 0;
  private dropped = 0;
  private readonly deadLetterBound: { maxRows: number; maxBytes: number };
  private deadLetterCount = 0;
  private deadLetterBytes = 0;
  private deadLettersUnforwarded = 0;
  private deadLettersDropped = 0;
  private deadLettersPruned = 0;
  private readonly unforwardedCache: UnforwardedDeadLetters;
  /** Dead letters of the append transaction in flight, for the cache once it commits. */
  private appendedLetters: StoredDeadLetter[] = [];
  private dataVersion: number;
  private walFd: number | undefined;
  private readonly checkpointer: WalCheckpointer;
  private syncing = false;
  private syncWaiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  private readonly dl: {
    oldestForwarded: Database.Statement<[number], { id: number; bytes: number }>;
    oldestUnforwarded: Database.Statement<[number], { id: number; bytes: number }>;
    deleteOne: Database.Statement<[number]>;
    markForwarded: Database.Statement<[number, number, number]>;
    unforwarded: Database.Statement<[number], DeadLetterRow>;
    unforwardedBetween: Database.Statement<[number, number], DeadLetterRow>;
    claim: Database.Statement<[], { first: number; last: number }>;
    one: Database.Statement<[number], DeadLetterRow>;
  };
  private readonly markForwardedTx: (first: number, last: number) => number;
  private readonly claimDeadLettersTx: (first: number, last: number) => void;
  private readonly redriveTx: (moves: Redrive[]) => number[];
  private readonly insertClaim: Database.Statement<[number, number, number, number]>;
  private readonly selectOldest: Database.Statement<[], { at: number }>;
  private readonly insertEvent: Database.Statement<[number, Uint8Array, number, number]>;
  private readonly insertDeadLetter: Database.Statement<[number, string, string, string, string | null, Uint8Array, string | null, string | null]>;
  private readonly appendTx: (events: OutboxEvent[], deadLetters: DeadLetter[]) => void;
  private readonly selectAfter: Database.Statement<[number], OutboxRow>;
  private readonly selectRange: Database.Statement<[number, number], OutboxRow>;
  private readonly acceptTx: (range: OutboxRange) => void;
  private readonly dropTx: (bytesNeeded: number) => number;

  constructor(private readonly options: SqliteOutboxOptions) {
    this.now = options.now ?? Date.now;
    mkdirSync(dirname(options.path), { recursive: true });
    this.db = new Database(options.path);
    this.db.pragma('journal_mode = WAL');
    // Both modes: NORMAL; 'full' adds durable() before every acknowledgement (see above).
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('wal_autocheckpoint = 0');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        partition INTEGER NOT NULL,
        appended_at INTEGER NOT NULL,
        data BLOB NOT NULL
      );
      CREATE TABLE IF NOT EXISTS claimed_ranges (
        first INTEGER PRIMARY KEY,
        last INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL
      );
      CREATE TABLE IF NOT EXISTS dead_letter_claim (
        first INTEGER PRIMARY KEY,
        last INTEGER NOT NULL
      );
      CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        source TEXT NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        origin TEXT,
        payload BLOB NOT NULL
      );
    `);
    // Outbox files written before records held several events have one event per row: the default says so.
    const outboxColumns = this.db.prepare('PRAGMA table_info(outbox)').all() as { name: string }[];
    if (!outboxColumns.some((c) => c.name === 'events')) this.db.exec('ALTER TABLE outbox ADD COLUMN events INTEGER NOT NULL DEFAULT 1');
    // Columns added after the first outbox files: forwarded_at (when the hub's DLQ stream acknowledged the dead
    // letter), and the source's default type and expected key (to validate the payload again on redrive).
    const columns = this.db.prepare('PRAGMA table_info(dead_letters)').all() as { name: string }[];
    for (const [name, type] of [['forwarded_at', 'INTEGER'], ['default_type', 'TEXT'], ['expected_key', 'TEXT']] as const) {
      if (!columns.some((c) => c.name === name)) this.db.exec(`ALTER TABLE dead_letters ADD COLUMN ${name} ${type}`);
    }
    this.db.exec(`
      CREATE INDEX IF NOT EXISTS dead_letters_unforwarded ON dead_letters (id) WHERE forwarded_at IS NULL;
      CREATE INDEX IF NOT EXISTS dead_letters_forwarded ON dead_letters (id) WHERE forwarded_at IS NOT NULL;
    `);
    this.deadLetterBound = options.deadLetters ?? DEFAULT_DEAD_LETTER_BOUND;
    this.readTotals();
    this.unforwardedCache = new UnforwardedDeadLetters(options.unforwardedCacheBytes ?? DEFAULT_UNFORWARDED_CACHE_BYTES, this.deadLettersUnforwarded === 0);
    this.newestSeq = (this.db.prepare("SELECT COALESCE(MAX(seq), 0) AS seq FROM outbox").get() as { seq: number }).seq;
    // The statements above created the WAL file; make its directory entry durable once, and keep it open to sync.
    const dir = openSync(dirname(options.path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.walFd = openSync(`${options.path}-wal`, 'r');
    this.checkpointer = new WalCheckpointer(options.path, options.checkpointIntervalMs ?? 250);
    this.dataVersion = this.db.pragma('data_version', { simple: true }) as number;

    // Prepared once: claim runs for every range the publisher sends, stats for every metrics scrape.
    this.insertClaim = this.db.prepare('INSERT OR REPLACE INTO claimed_ranges (first, last, rows, bytes) VALUES (?, ?, ?, ?)');
    this.selectOldest = this.db.prepare('SELECT appended_at AS at FROM outbox ORDER BY seq LIMIT 1');
    this.insertEvent = this.db.prepare('INSERT INTO outbox (partition, data, appended_at, events) VALUES (?, ?, ?, ?)');
    this.insertDeadLetter = this.db.prepare(
      'INSERT INTO dead_letters (at, source, code, reason, origin, payload, default_type, expected_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.selectAfter = this.db.prepare('SELECT seq, partition, data, events FROM outbox WHERE seq > ? ORDER BY seq');
    this.selectRange = this.db.prepare('SELECT seq, partition, data, events FROM outbox WHERE seq BETWEEN ? AND ? ORDER BY seq');
    const deleteRange = this.db.prepare('DELETE FROM outbox WHERE seq BETWEEN ? AND ?');
    const deleteClaim = this.db.prepare('DELETE FROM claimed_ranges WHERE first = ?');
    const maxClaimed = this.db.prepare('SELECT COALESCE(MAX(last), 0) AS last FROM claimed_ranges');
    const oldestUnclaimed = this.db.prepare('SELECT seq, length(data) AS bytes, events FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1000');
    const deleteOne = this.db.prepare('DELETE FROM outbox WHERE seq = ?');
    this.dl = {
      oldestForwarded: this.db.prepare('SELECT id, length(payload) AS bytes FROM dead_letters WHERE forwarded_at IS NOT NULL ORDER BY id LIMIT ?'),
      oldestUnforwarded: this.db.prepare('SELECT id, length(payload) AS bytes FROM dead_letters WHERE forwarded_at IS NULL ORDER BY id LIMIT ?'),
      deleteOne: this.db.prepare('DELETE FROM dead_letters WHERE id = ?'),
      markForwarded: this.db.prepare('UPDATE dead_letters SET forwarded_at = ? WHERE id BETWEEN ? AND ? AND forwarded_at IS NULL'),
      unforwarded: this.db.prepare(`SELECT ${DEAD_LETTER_COLUMNS}, payload FROM dead_letters WHERE forwarded_at IS NULL ORDER BY id LIMIT ?`),
      unforwardedBetween: this.db.prepare(
        `SELECT ${DEAD_LETTER_COLUMNS}, payload FROM dead_letters WHERE forwarded_at IS NULL AND id BETWEEN ? AND ? ORDER BY id`,
      ),
      claim: this.db.prepare('SELECT first, last FROM dead_letter_claim LIMIT 1'),
      one: this.db.prepare(`SELECT ${DEAD_LETTER_COLUMNS}, payload FROM dead_letters WHERE id = ?`),
    };

    this.appendTx = this.db.transaction((events: OutboxEvent[], deadLetters: DeadLetter[]) => {
      const at = this.now();
      for (const event of events) this.newestSeq = Number(this.insertEvent.run(event.partition, event.data, at, event.count ?? 1).lastInsertRowid);
      for (const letter of deadLetters) {
        const { lastInsertRowid } = this.insertDeadLetter.run(
          at,
          letter.source,
          letter.code,
          letter.reason,
          letter.origin ?? null,
          letter.payload,
          letter.defaultType ?? null,
          letter.expectedKey ?? null,
        );
        this.deadLetterCount++;
        this.deadLettersUnforwarded++;
        this.deadLetterBytes += letter.payload.byteLength;
        if (this.unforwardedCache.complete) this.appendedLetters.push(storedCopy(letter, Number(lastInsertRowid), at));
      }
      if (deadLetters.length > 0) this.boundDeadLetters();
    });
    const clearClaimWhenDone = this.db.prepare(
      'DELETE FROM dead_letter_claim WHERE NOT EXISTS (SELECT 1 FROM dead_letters WHERE forwarded_at IS NULL AND id BETWEEN dead_letter_claim.first AND dead_letter_claim.last)',
    );
    this.markForwardedTx = this.db.transaction((first: number, last: number) => {
      const marked = this.dl.markForwarded.run(this.now(), first, last).changes;
      clearClaimWhenDone.run();
      return marked;
    });
    const deleteClaims = this.db.prepare('DELETE FROM dead_letter_claim');
    const insertDeadLetterClaim = this.db.prepare('INSERT INTO dead_letter_claim (first, last) VALUES (?, ?)');
    this.claimDeadLettersTx = this.db.transaction((first: number, last: number) => {
      deleteClaims.run();
      insertDeadLetterClaim.run(first, last);
    });
    this.redriveTx = this.db.transaction((moves: Redrive[]) => {
      const at = this.now();
      const moved: number[] = [];
      for (const move of moves) {
        const letter = this.dl.one.get(move.id);
        if (!letter) continue;
        this.dl.deleteOne.run(move.id);
        for (const event of move.events) this.newestSeq = Number(this.insertEvent.run(event.partition, event.data, at, event.count ?? 1).lastInsertRowid);
        moved.push(move.id);
      }
      return moved;
    });
    this.acceptTx = this.db.transaction((range: OutboxRange) => {
      deleteRange.run(range.first, range.last);
      deleteClaim.run(range.first);
    });
    // drop-oldest never drops a claimed range: those rows may already be in the hub, and the claim must stay
    // re-sendable with the same message ids.
    this.dropTx = this.db.transaction((bytesNeeded: number) => {
      const after = (maxClaimed.get() as { last: number }).last;
      let freed = 0;
      let count = 0;
      for (const row of oldestUnclaimed.all(after) as { seq: number; bytes: number; events: number }[]) {
        if (freed >= bytesNeeded) break;
        deleteOne.run(row.seq);
        freed += row.bytes;
        count += row.events;
      }
      this.bytes -= freed;
      this.rows -= count;
      return count;
    });
  }

  append(events: OutboxEvent[], deadLetters: DeadLetter[]): void {
    let size = 0;
    let count = 0;
    for (const event of events) {
      size += event.data.byteLength;
      count += event.count ?? 1;
    }
    if (this.bytes + size > this.options.maxBytes && events.length > 0) {
      if (this.options.fullPolicy === 'reject') throw new OutboxFullError(this.bytes, this.options.maxBytes);
      this.dropped += this.dropTx(this.bytes + size - this.options.maxBytes);
      if (this.bytes + size > this.options.maxBytes) throw new OutboxFullError(this.bytes, this.options.maxBytes);
    }
    const droppedBefore = this.deadLettersDropped;
    try {
      this.appendTx(events, deadLetters);
    } catch (error) {
      // The dead-letter counters move inside the transaction; after a rollback, read them back.
      this.appendedLetters = [];
      this.readTotals();
      throw error;
    }
    this.bytes += size;
    this.rows += count;
    if (this.appendedLetters.length > 0) {
      // The bound deleted unforwarded dead letters: which ones, the cache cannot tell.
      if (this.deadLettersDropped !== droppedBefore) this.resyncUnforwardedCache();
      else this.unforwardedCache.add(this.appendedLetters);
      this.appendedLetters = [];
    }
  }

  get syncBeforeAck(): boolean {
    return this.options.synchronous === 'full';
  }

  durable(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.syncWaiters.push({ resolve, reject });
      this.startSync();
    });
  }

  /** One fdatasync at a time; the waiters that arrive meanwhile share the next one. */
  private startSync(): void {
    if (this.syncing || this.syncWaiters.length === 0 || this.walFd === undefined) return;
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    this.syncing = true;
    fdatasync(this.walFd, (error) => {
      this.syncing = false;
      for (const waiter of waiters) {
        if (error) waiter.reject(error);
        else waiter.resolve();
      }
      this.startSync();
    });
  }

  readAfter(afterSeq: number, maxEvents: number, maxBytes: number): OutboxRow[] {
    // Stepping row by row stops at the bound without copying the rest of a backlog out of SQLite.
    const rows: OutboxRow[] = [];
    let bytes = 0;
    let events = 0;
    for (const row of this.selectAfter.iterate(afterSeq)) {
      bytes += row.data.byteLength;
      events += row.events;
      if ((bytes > maxBytes || events > maxEvents) && rows.length > 0) break;
      rows.push(row);
    }
    return rows;
  }

  lastSeq(): number {
    return this.newestSeq;
  }

  readRange(range: OutboxRange): OutboxRow[] {
    return this.selectRange.all(range.first, range.last);
  }

  claim(range: OutboxRange): void {
    this.insertClaim.run(range.first, range.last, range.events, range.bytes);
  }

  claimed(): OutboxRange[] {
    return this.db.prepare('SELECT first, last, rows AS events, bytes FROM claimed_ranges ORDER BY first').all() as OutboxRange[];
  }

  accept(range: OutboxRange): void {
    this.acceptTx(range);
    this.bytes -= range.bytes;
    this.rows -= range.events;
  }

  stats(): OutboxStats {
    const oldest = this.selectOldest.get() as { at: number } | undefined;
    return {
      rows: this.rows,
      bytes: this.bytes,
      maxBytes: this.options.maxBytes,
      dropped: this.dropped,
      deadLetters: this.deadLetterCount,
      ...(oldest ? { oldestAppendedAtMs: oldest.at } : {}),
    };
  }

  // --- dead letters ------------------------------------------------------------------------------------------

  unforwarded(limit: number): StoredDeadLetter[] {
    return this.unforwardedCache.oldest(limit) ?? this.dl.unforwarded.all(limit).map(toStoredDeadLetter);
  }

  unforwardedBetween(first: number, last: number): StoredDeadLetter[] {
    return this.unforwardedCache.between(first, last) ?? this.dl.unforwardedBetween.all(first, last).map(toStoredDeadLetter);
  }

  deadLetterClaim(): { first: number; last: number } | undefined {
    return this.dl.claim.get();
  }

  claimDeadLetters(first: number, last: number): void {
    this.claimDeadLettersTx(first, last);
  }

  markForwarded(first: number, last: number): void {
    this.deadLettersUnforwarded -= this.markForwardedTx(first, last);
    this.unforwardedCache.forwarded(first, last);
    if (this.deadLettersUnforwarded === 0 && !this.unforwardedCache.complete) this.unforwardedCache.restart();
  }

  listDeadLetters(query: Omit<DeadLetterQuery, 'afterId'>): DeadLetterSummary[] {
    const rows = (
      query.code === undefined
        ? this.db.prepare(`SELECT ${DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT ?`).all(query.limit)
        : this.db.prepare(`SELECT ${DEAD_LETTER_COLUMNS} FROM dead_letters WHERE code = ? ORDER BY id DESC LIMIT ?`).all(query.code, query.limit)
    ) as DeadLetterRow[];
    return rows.map((row) => {
      const { payload: _payload, ...summary } = toStoredDeadLetter(row);
      return summary;
    });
  }

  readDeadLetters(query: DeadLetterQuery): StoredDeadLetter[] {
    const after = query.afterId ?? 0;
    const rows = (
      query.code === undefined
        ? this.db.prepare(`SELECT ${DEAD_LETTER_COLUMNS}, payload FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?`).all(after, query.limit)
        : this.db
            .prepare(`SELECT ${DEAD_LETTER_COLUMNS}, payload FROM dead_letters WHERE id > ? AND code = ? ORDER BY id LIMIT ?`)
            .all(after, query.code, query.limit)
    ) as DeadLetterRow[];
    return rows.map(toStoredDeadLetter);
  }

  getDeadLetter(id: number): StoredDeadLetter | undefined {
    const row = this.dl.one.get(id);
    return row ? toStoredDeadLetter(row) : undefined;
  }

  redrive(moves: Redrive[]): number[] {
    let size = 0;
    for (const move of moves) for (const event of move.events) size += event.data.byteLength;
    if (this.bytes + size > this.options.maxBytes) throw new OutboxFullError(this.bytes, this.options.maxBytes);
    const moved = this.redriveTx(moves);
    // Counters from the table: cheaper to re-read than to track which letters were forwarded, and redrive is rare.
    this.readTotals();
    this.resyncUnforwardedCache();
    return moved;
  }

  deadLetterStats(): DeadLetterStats {
    return {
      rows: this.deadLetterCount,
      bytes: this.deadLetterBytes,
      unforwarded: this.deadLettersUnforwarded,
      maxRows: this.deadLetterBound.maxRows,
      maxBytes: this.deadLetterBound.maxBytes,
      dropped: this.deadLettersDropped,
      pruned: this.deadLettersPruned,
    };
  }

  syncExternalChanges(): boolean {
    // PRAGMA data_version changes when another connection committed to the database (and only then).
    const version = this.db.pragma('data_version', { simple: true }) as number;
    if (version === this.dataVersion) return false;
    this.dataVersion = version;
    this.readTotals();
    this.resyncUnforwardedCache();
    return true;
  }

  /** The database, for state that must commit in the outbox's transactions (pre-aggregation windows). */
  get database(): Database.Database {
    return this.db;
  }

  /** Stops the checkpoint thread, then closes; SQLite's closing checkpoint syncs (synchronous=NORMAL). */
  close(): void {
    this.checkpointer.stop();
    if (this.walFd !== undefined) closeSync(this.walFd);
    this.walFd = undefined;
    this.db.close();
  }

  /** After a change the cache cannot follow: complete (empty) only when nothing is waiting to be forwarded. */
  private resyncUnforwardedCache(): void {
    if (this.deadLettersUnforwarded === 0) this.unforwardedCache.restart();
    else this.unforwardedCache.invalidate();
  }

  private readTotals(): void {
    const outbox = this.db.prepare('SELECT COALESCE(SUM(events), 0) AS rows, COALESCE(SUM(length(data)), 0) AS bytes FROM outbox').get() as { rows: number; bytes: number };
    this.rows = outbox.rows;
    this.bytes = outbox.bytes;
    const letters = this.db
      .prepare(
        'SELECT COUNT(*) AS rows, COALESCE(SUM(length(payload)), 0) AS bytes, COALESCE(SUM(forwarded_at IS NULL), 0) AS unforwarded FROM dead_letters',
      )
      .get() as { rows: number; bytes: number; unforwarded: number };
    this.deadLetterCount = letters.rows;
    this.deadLetterBytes = letters.bytes;
    this.deadLettersUnforwarded = letters.unforwarded;
  }

  /**
   * Runs inside the append transaction when the table is over its bound. Forwarded dead letters go first, down to
   * 90% of the bound so this does not run on every append; then, if still over, the oldest unforwarded ones, only
   * down to the bound, counted as dropped (edge_dead_letters_dropped_total).
   */
  private boundDeadLetters(): void {
    const { maxRows, maxBytes } = this.deadLetterBound;
    if (this.deadLetterCount <= maxRows && this.deadLetterBytes <= maxBytes) return;
    const lowRows = Math.floor(maxRows * 0.9);
    const lowBytes = Math.floor(maxBytes * 0.9);
    const trim = (select: Database.Statement<[number], { id: number; bytes: number }>, over: () => boolean, onDelete: () => void) => {
      while (over()) {
        const batch = select.all(500);
        if (batch.length === 0) return;
        for (const row of batch) {
          if (!over()) return;
          this.dl.deleteOne.run(row.id);
          this.deadLetterCount--;
          this.deadLetterBytes -= row.bytes;
          onDelete();
        }
      }
    };
    trim(this.dl.oldestForwarded, () => this.deadLetterCount > lowRows || this.deadLetterBytes > lowBytes, () => this.deadLettersPruned++);
    trim(
      this.dl.oldestUnforwarded,
      () => this.deadLetterCount > maxRows || this.deadLetterBytes > maxBytes,
      () => {
        this.deadLettersUnforwarded--;
        this.deadLettersDropped++;
      },
    );
  }
}

/** A dead letter just inserted, as the table would return it; the payload copied out of the request it came in. */
function storedCopy(letter: DeadLetter, id: number, at: number): StoredDeadLetter {
  // A view into the request body would keep the whole body alive until the dead letter is forwarded.
  const payload = letter.payload.byteLength === letter.payload.buffer.byteLength ? letter.payload : letter.payload.slice();
  const stored: StoredDeadLetter = { id, at, source: letter.source, code: letter.code, reason: letter.reason, payload, bytes: payload.byteLength };
  if (letter.origin !== undefined) stored.origin = letter.origin;
  if (letter.defaultType !== undefined) stored.defaultType = letter.defaultType;
  if (letter.expectedKey !== undefined) stored.expectedKey = letter.expectedKey;
  return stored;
}

function toStoredDeadLetter(row: DeadLetterRow): StoredDeadLetter {
  return {
    id: row.id,
    at: row.at,
    source: row.source,
    code: row.code,
    reason: row.reason,
    ...(row.origin !== null ? { origin: row.origin } : {}),
    ...(row.default_type !== null ? { defaultType: row.default_type } : {}),
    ...(row.expected_key !== null ? { expectedKey: row.expected_key } : {}),
    payload: row.payload ?? new Uint8Array(0),
    bytes: row.bytes,
    ...(row.forwarded_at !== null ? { forwardedAt: row.forwarded_at } : {}),
  };
}
