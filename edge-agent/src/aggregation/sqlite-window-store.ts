/**
 * Window state of the pre-aggregation, kept in the outbox's SQLite database and written in the same transaction
 * as the events it covers: after a crash, the restored windows hold exactly the events that were acknowledged.
 */
import type Database from 'better-sqlite3';
import type { AggregatorChanges, KeyState, WindowState } from './tumbling-aggregator.js';

export class SqliteWindowStore {
  private readonly upsertWindow: Database.Statement;
  private readonly deleteWindow: Database.Statement;
  private readonly upsertKey: Database.Statement;

  constructor(private readonly db: Database.Database) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS aggregation_windows (
        rule TEXT NOT NULL, key TEXT NOT NULL, start INTEGER NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL,
        count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, last_ts INTEGER NOT NULL, last REAL NOT NULL,
        PRIMARY KEY (rule, key, start)
      );
      CREATE TABLE IF NOT EXISTS aggregation_keys (
        rule TEXT NOT NULL, key TEXT NOT NULL, max_ts INTEGER NOT NULL, seen_at INTEGER NOT NULL,
        PRIMARY KEY (rule, key)
      );
    `);
    this.upsertWindow = db.prepare(
      'INSERT OR REPLACE INTO aggregation_windows (rule, key, start, device, metric, count, sum, min, max, last_ts, last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.deleteWindow = db.prepare('DELETE FROM aggregation_windows WHERE rule = ? AND key = ? AND start = ?');
    this.upsertKey = db.prepare('INSERT OR REPLACE INTO aggregation_keys (rule, key, max_ts, seen_at) VALUES (?, ?, ?, ?)');
  }

  load(rule: string): { windows: WindowState[]; keys: KeyState[] } {
    const windows = this.db
      .prepare('SELECT key, start, device, metric, count, sum, min, max, last_ts AS lastTs, last FROM aggregation_windows WHERE rule = ?')
      .all(rule) as WindowState[];
    const keys = this.db.prepare('SELECT key, max_ts AS maxTs, seen_at AS seenAt FROM aggregation_keys WHERE rule = ?').all(rule) as KeyState[];
    return { windows, keys };
  }

  /** Must run inside the caller's transaction. */
  save(rule: string, changes: AggregatorChanges): void {
    for (const w of changes.upsertWindows) this.upsertWindow.run(rule, w.key, w.start, w.device, w.metric, w.count, w.sum, w.min, w.max, w.lastTs, w.last);
    for (const d of changes.deleteWindows) this.deleteWindow.run(rule, d.key, d.start);
    for (const k of changes.upsertKeys) this.upsertKey.run(rule, k.key, k.maxTs, k.seenAt);
  }
}
