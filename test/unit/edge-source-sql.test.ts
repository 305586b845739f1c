/**
 * Database polling: identifier checks and query building (pure), and the source against a real temporary SQLite
 * database with an in-memory fake of the ingest pipeline.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { OutboxFullError } from '../../edge-agent/src/errors.js';
import type { IngestItem, IngestPipeline, IngestResult } from '../../edge-agent/src/ingest.js';
import {
  buildPollQueries,
  quoteIdentifier,
  rowToEvent,
  SqlPollSource,
  type SqlPollSourceConfig,
  type SqlTableConfig,
} from '../../edge-agent/src/sources/sql-poll-source.js';
import { agentConfigSchema } from '../../edge-agent/src/config.js';
import { validateConfig } from '../../shared/config.js';

const log = pino({ level: 'silent' });

class FakeIngest {
  readonly committed: Array<{ items: IngestItem[]; defaultType?: string; origin?: string }> = [];
  refuseFull = 0;

  submit(items: IngestItem[], context: { defaultType?: string; origin?: string }): Promise<IngestResult> {
    if (this.refuseFull > 0) {
      this.refuseFull--;
      return Promise.reject(new OutboxFullError(1, 1));
    }
    this.committed.push({ items, ...context });
    return Promise.resolve({ accepted: items.length, rejected: [] });
  }

  values(): Array<Record<string, unknown>> {
    return this.committed.flatMap((s) => s.items.map((i) => ('value' in i ? (i.value as Record<string, unknown>) : {})));
  }
}

const dirs: string[] = [];
const running: SqlPollSource[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function table(over: Partial<SqlTableConfig> = {}): SqlTableConfig {
  return { database: '/x.db', table: 'readings', positionColumn: 'id', type: 'device.telemetry', columns: {}, batchRows: 500, startAt: 'beginning', ...over };
}

function config(tables: SqlTableConfig[]): SqlPollSourceConfig {
  return { enabled: true, driver: 'sqlite', pollIntervalMs: 10, retryInitialMs: 10, retryMaxMs: 20, tables };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const settle = () => new Promise((r) => setTimeout(r, 60));

test('identifiers: plain names are quoted, anything else is refused naming the field', () => {
  assert.equal(quoteIdentifier('readings', 'f'), '"readings"');
  assert.equal(quoteIdentifier('_t2', 'f'), '"_t2"');
  for (const bad of ['', '1abc', 'a b', 'a"; DROP TABLE x; --', 'a.b', 'x'.repeat(64), 'ä']) {
    assert.throws(() => quoteIdentifier(bad, 'config.sources.sqlPoll.tables[0].table'), /config\.sources\.sqlPoll\.tables\[0\]\.table must be a plain SQL identifier/, bad);
  }
  assert.throws(() => buildPollQueries(table({ columns: { 'x"': 'y' } }), 'config.t'), /config\.t\.columns must be a plain SQL identifier/);
});

test('the poll queries select the mapped columns (and the position) after a bound position, in position order', () => {
  assert.deepEqual(buildPollQueries(table({ batchRows: 50 }), 'f'), {
    first: 'SELECT * FROM "readings" WHERE "id" IS NOT NULL ORDER BY "id" LIMIT 50',
    next: 'SELECT * FROM "readings" WHERE "id" > ? ORDER BY "id" LIMIT 50',
    last: 'SELECT MAX("id") AS position FROM "readings"',
  });
  assert.equal(
    buildPollQueries(table({ columns: { dev: 'device_id', ts: 'timestamp' } }), 'f').next,
    'SELECT "id", "dev", "ts" FROM "readings" WHERE "id" > ? ORDER BY "id" LIMIT 500',
  );
});

test('the config schema refuses a table or column name that is not an identifier, naming the field', () => {
  const bad = { sources: { sqlPoll: { tables: [{ database: 'x.db', table: 'x; drop', positionColumn: 'id', type: 't', columns: { 'a b': 'c' } }] } } };
  assert.throws(
    () => validateConfig(agentConfigSchema, bad, 'edge agent'),
    (error: Error) => /config\.sources\.sqlPoll\.tables\.0\.table must match pattern/.test(error.message) && /config\.sources\.sqlPoll\.tables\.0\.columns/.test(error.message),
  );
});

test('rows become events: mapped columns renamed, NULLs left out, BLOBs base64', () => {
  assert.deepEqual(rowToEvent({ id: 1, dev: 'd', ts: 5, unit: null }, { dev: 'device_id', ts: 'timestamp', unit: 'unit' }), { device_id: 'd', timestamp: 5 });
  assert.deepEqual(rowToEvent({ a: 1, b: null, c: Buffer.from([1, 2]) }, {}), { a: 1, c: 'AQI=' });
});

function makeDb(dir: string, rows: number): Database.Database {
  const db = new Database(join(dir, 'plc.db'));
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE readings (id INTEGER PRIMARY KEY, dev TEXT, ts INTEGER, metric TEXT, val REAL, note TEXT)');
  insert(db, 1, rows);
  return db;
}

function insert(db: Database.Database, from: number, count: number): void {
  const stmt = db.prepare('INSERT INTO readings (id, dev, ts, metric, val, note) VALUES (?, ?, ?, ?, ?, NULL)');
  db.transaction(() => {
    for (let i = from; i < from + count; i++) stmt.run(i, `dev-${i % 3}`, 1_700_000_000_000 + i, 'temp', i / 2);
  })();
}

async function start(dir: string, cfg: SqlPollSourceConfig, ingest: FakeIngest): Promise<SqlPollSource> {
  const source = new SqlPollSource(cfg, { ingest: ingest as unknown as IngestPipeline, log, dataDir: dir, agentId: 'unit' });
  await source.start();
  running.push(source);
  return source;
}

test('polls new rows in batches, remembers the last position after the commit, and resumes there after a restart', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sql-poll-'));
  dirs.push(d);
  const db = makeDb(d, 12);
  const mapping = { dev: 'device_id', ts: 'timestamp', metric: 'metric', val: 'value', note: 'unit' };
  const cfg = config([table({ database: join(d, 'plc.db'), columns: mapping, batchRows: 5 })]);
  const ingest = new FakeIngest();
  ingest.refuseFull = 2;
  let source = await start(d, cfg, ingest);
  await until(() => ingest.values().length === 12, '12 rows');
  assert.deepEqual(ingest.committed.map((c) => c.items.length), [5, 5, 2]);
  assert.deepEqual(ingest.values()[0], { device_id: 'dev-1', timestamp: 1_700_000_000_001, metric: 'temp', value: 0.5 });
  assert.equal(ingest.committed[0]!.defaultType, 'device.telemetry');
  assert.equal(ingest.committed[0]!.origin, 'plc.db:readings');
  insert(db, 13, 3);
  await until(() => ingest.values().length === 15, '15 rows');
  await source.stop();
  running.length = 0;
  const saved = JSON.parse(readFileSync(join(d, 'source-state-unit-sql-poll.json'), 'utf8')) as { entries: Record<string, { position: number }> };
  assert.deepEqual(Object.values(saved.entries), [{ position: 15 }]);

  insert(db, 16, 4);
  source = await start(d, cfg, ingest);
  await until(() => ingest.values().length === 19, '19 rows');
  await settle();
  assert.deepEqual(ingest.values().map((v) => v.timestamp as number - 1_700_000_000_000), Array.from({ length: 19 }, (_, i) => i + 1), 'every row once, in order');
  db.close();
});

test('startAt end begins after the rows already there; a database that appears later is waited for', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sql-poll-'));
  dirs.push(d);
  const db = makeDb(d, 5);
  const ingest = new FakeIngest();
  await start(d, config([table({ database: join(d, 'plc.db'), startAt: 'end' }), table({ database: join(d, 'later.db') })]), ingest);
  await settle();
  assert.equal(ingest.values().length, 0);
  insert(db, 6, 2);
  await until(() => ingest.values().length === 2, 'the two new rows');
  assert.deepEqual(ingest.values().map((v) => v.id), [6, 7]);
  const later = new Database(join(d, 'later.db'));
  later.exec('CREATE TABLE readings (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO readings (v) VALUES (\'x\')');
  await until(() => ingest.values().length === 3, 'the row of the database created later');
  assert.deepEqual(ingest.values()[2], { id: 1, v: 'x' });
  later.close();
  db.close();
});

test('a missing table or column stops the start with the field named', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sql-poll-'));
  dirs.push(d);
  makeDb(d, 1).close();
  const database = join(d, 'plc.db');
  await assert.rejects(start(d, config([table({ database, table: 'nope' })]), new FakeIngest()), /config\.sources\.sqlPoll\.tables\[0\]\.table: no table "nope"/);
  await assert.rejects(
    start(d, config([table({ database, columns: { missing: 'x' } })]), new FakeIngest()),
    /config\.sources\.sqlPoll\.tables\[0\]\.columns: table "readings" has no column "missing"/,
  );
});
