/**
 * SQLite outbox (better-sqlite3, WAL).
 *
 * Durability: WAL with `synchronous=FULL` fsyncs the WAL on every commit, so an acknowledged event survives a
 * process kill and a power loss. `NORMAL` survives a process kill but may lose the last commits on power loss;
 * it is offered for gateways that prefer throughput. Ingest batches concurrent events into one transaction
 * (group commit), so the fsync cost is paid per batch, not per event.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { OutboxFullError } from '../errors.js';
import type { DeadLetter, FullPolicy, Outbox, OutboxEvent, OutboxRange, OutboxRow, OutboxStats } from './outbox.js';

export interface SqliteOutboxOptions {
  path: string;
  maxBytes: number;
  fullPolicy: FullPolicy;
  synchronous: 'full' | 'normal';
  /** Injected clock (epoch ms) for row timestamps. */
  now?: () => number;
}

export class SqliteOutbox implements Outbox {
  private readonly db: Database.Database;
  private readonly now: () => number;
  private bytes: number;
  private rows: number;
  private dropped = 0;
  private deadLetterCount: number;
  private readonly insertEvent: Database.Statement<[number, Uint8Array, number]>;
  private readonly insertDeadLetter: Database.Statement<[number, string, string, string, string | null, Uint8Array]>;
  private readonly appendTx: (events: OutboxEvent[], deadLetters: DeadLetter[]) => void;
  private readonly selectAfter: Database.Statement<[number, number], OutboxRow>;
  private readonly selectRange: Database.Statement<[number, number], OutboxRow>;
  private readonly acceptTx: (range: OutboxRange) => void;
  private readonly dropTx: (bytesNeeded: number) => number;

  constructor(private readonly options: SqliteOutboxOptions) {
    this.now = options.now ?? Date.now;
    mkdirSync(dirname(options.path), { recursive: true });
    this.db = new Database(options.path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
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
    const totals = this.db.prepare('SELECT COUNT(*) AS rows, COALESCE(SUM(length(data)), 0) AS bytes FROM outbox').get() as {
      rows: number;
      bytes: number;
    };
    this.rows = totals.rows;
    this.bytes = totals.bytes;
    this.deadLetterCount = (this.db.prepare('SELECT COUNT(*) AS n FROM dead_letters').get() as { n: number }).n;

    this.insertEvent = this.db.prepare('INSERT INTO outbox (partition, data, appended_at) VALUES (?, ?, ?)');
    this.insertDeadLetter = this.db.prepare(
      'INSERT INTO dead_letters (at, source, code, reason, origin, payload) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.selectAfter = this.db.prepare('SELECT seq, partition, data FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?');
    this.selectRange = this.db.prepare('SELECT seq, partition, data FROM outbox WHERE seq BETWEEN ? AND ? ORDER BY seq');
    const deleteRange = this.db.prepare('DELETE FROM outbox WHERE seq BETWEEN ? AND ?');
    const deleteClaim = this.db.prepare('DELETE FROM claimed_ranges WHERE first = ?');
    const maxClaimed = this.db.prepare('SELECT COALESCE(MAX(last), 0) AS last FROM claimed_ranges');
    const oldestUnclaimed = this.db.prepare('SELECT seq, length(data) AS bytes FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1000');
    const deleteOne = this.db.prepare('DELETE FROM outbox WHERE seq = ?');

    this.appendTx = this.db.transaction((events: OutboxEvent[], deadLetters: DeadLetter[]) => {
      const at = this.now();
      for (const event of events) this.insertEvent.run(event.partition, event.data, at);
      for (const letter of deadLetters) {
        this.insertDeadLetter.run(at, letter.source, letter.code, letter.reason, letter.origin ?? null, letter.payload);
      }
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
      for (const row of oldestUnclaimed.all(after) as { seq: number; bytes: number }[]) {
        if (freed >= bytesNeeded) break;
        deleteOne.run(row.seq);
        freed += row.bytes;
        count++;
      }
      this.bytes -= freed;
      this.rows -= count;
      return count;
    });
  }

  append(events: OutboxEvent[], deadLetters: DeadLetter[]): void {
    let size = 0;
    for (const event of events) size += event.data.byteLength;
    if (this.bytes + size > this.options.maxBytes && events.length > 0) {
      if (this.options.fullPolicy === 'reject') throw new OutboxFullError(this.bytes, this.options.maxBytes);
      this.dropped += this.dropTx(this.bytes + size - this.options.maxBytes);
      if (this.bytes + size > this.options.maxBytes) throw new OutboxFullError(this.bytes, this.options.maxBytes);
    }
    this.appendTx(events, deadLetters);
    this.bytes += size;
    this.rows += events.length;
    this.deadLetterCount += deadLetters.length;
  }

  readAfter(afterSeq: number, maxRows: number, maxBytes: number): OutboxRow[] {
    const rows = this.selectAfter.all(afterSeq, maxRows);
    let bytes = 0;
    for (let i = 0; i < rows.length; i++) {
      bytes += rows[i]!.data.byteLength;
      if (bytes > maxBytes && i > 0) return rows.slice(0, i);
    }
    return rows;
  }

  readRange(range: OutboxRange): OutboxRow[] {
    return this.selectRange.all(range.first, range.last);
  }

  claim(range: OutboxRange): void {
    this.db
      .prepare('INSERT OR REPLACE INTO claimed_ranges (first, last, rows, bytes) VALUES (?, ?, ?, ?)')
      .run(range.first, range.last, range.rows, range.bytes);
  }

  claimed(): OutboxRange[] {
    return this.db.prepare('SELECT first, last, rows, bytes FROM claimed_ranges ORDER BY first').all() as OutboxRange[];
  }

  accept(range: OutboxRange): void {
    this.acceptTx(range);
    this.bytes -= range.bytes;
    this.rows -= range.rows;
  }

  stats(): OutboxStats {
    const oldest = this.db.prepare('SELECT appended_at AS at FROM outbox ORDER BY seq LIMIT 1').get() as { at: number } | undefined;
    return {
      rows: this.rows,
      bytes: this.bytes,
      maxBytes: this.options.maxBytes,
      dropped: this.dropped,
      deadLetters: this.deadLetterCount,
      ...(oldest ? { oldestAppendedAtMs: oldest.at } : {}),
    };
  }

  close(): void {
    this.db.close();
  }
}
