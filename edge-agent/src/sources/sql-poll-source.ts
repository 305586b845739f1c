/**
 * Database polling: new rows of a SQLite table, by a column that only grows (an INTEGER PRIMARY KEY, an
 * autoincrement id, an insert timestamp with unique values), become events:
 *
 *   SELECT <columns> FROM "<table>" WHERE "<position>" > ? ORDER BY "<position>" LIMIT <batchRows>
 *
 * The database is opened read-only. Table and column names come from the config, are checked against an
 * identifier pattern and quoted; row values are only ever bound parameters. The position of the last row is
 * written to the state file after the outbox commit, so a restart neither skips nor re-reads rows (a crash between
 * commit and state write reads the batch again; the rows are the same events, which QuestDB's dedup collapses).
 *
 * better-sqlite3 is synchronous: the query runs on the event loop, so it must be cheap. Index the position column,
 * keep `batchRows` moderate; a locked database (busy) is retried at the next poll instead of waiting.
 */
import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { EdgeError, EdgeErrorCode } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import type { Source, SourceDeps, SourceFactory } from './source.js';
import { SourceState, stateFilePath } from './source-state.js';
import { SourceStopped, Stopper, submitUntilStored } from './submit-retry.js';

/** SQL identifiers we accept from config: letters, digits, underscore; not starting with a digit. */
export const SQL_IDENTIFIER_PATTERN = '^[A-Za-z_][A-Za-z0-9_]{0,62}$';
const IDENTIFIER = new RegExp(SQL_IDENTIFIER_PATTERN);

export interface SqlTableConfig {
  /** Path of the SQLite database file. */
  database: string;
  table: string;
  positionColumn: string;
  type: string;
  /** Column → event field; empty: every column under its own name. */
  columns: Record<string, string>;
  batchRows: number;
  startAt: 'beginning' | 'end';
}

export interface SqlPollSourceConfig {
  enabled: boolean;
  driver: 'sqlite';
  pollIntervalMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  tables: SqlTableConfig[];
}

export const sqlPollSourceConfigSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'Database polling: new rows of SQLite tables, by a growing column, become events.',
  properties: {
    enabled: { type: 'boolean', default: false, description: 'Poll the configured tables.' },
    driver: { enum: ['sqlite'], default: 'sqlite', description: 'Database kind (SQLite files, opened read-only).' },
    pollIntervalMs: { type: 'integer', minimum: 10, default: 1000, description: 'Wait between polls of a table that had no new rows.' },
    retryInitialMs: { type: 'integer', minimum: 10, default: 100, description: 'First wait before retrying a commit the outbox refused (full).' },
    retryMaxMs: { type: 'integer', minimum: 10, default: 5000, description: 'Longest wait between commit retries (exponential backoff).' },
    tables: {
      type: 'array',
      default: [],
      description: 'Tables to poll.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['database', 'table', 'positionColumn', 'type'],
        properties: {
          database: { type: 'string', minLength: 1, description: 'Path of the SQLite database file.' },
          table: { type: 'string', pattern: SQL_IDENTIFIER_PATTERN, description: 'Table to read (a plain identifier).' },
          positionColumn: {
            type: 'string',
            pattern: SQL_IDENTIFIER_PATTERN,
            description: 'Column whose value grows with every new row and is unique (e.g. the INTEGER PRIMARY KEY); rows are read in its order.',
          },
          type: { type: 'string', minLength: 1, description: 'Event type of the rows.' },
          columns: {
            type: 'object',
            propertyNames: { pattern: SQL_IDENTIFIER_PATTERN },
            additionalProperties: { type: 'string', minLength: 1 },
            default: {},
            description: 'Column → event field, e.g. {"ts": "timestamp"}; only these columns are read. Empty: every column under its own name. NULLs are left out.',
          },
          batchRows: { type: 'integer', minimum: 1, maximum: 100000, default: 500, description: 'Most rows read and committed at once.' },
          startAt: {
            enum: ['beginning', 'end'],
            default: 'beginning',
            description: 'Where to begin when the agent has no position for this table: the first row, or after the last row there now.',
          },
        },
      },
    },
  },
} as const;

/** Throws naming the field unless `name` is a plain SQL identifier; returns it quoted. */
export function quoteIdentifier(name: string, field: string): string {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) {
    throw new EdgeError(EdgeErrorCode.SOURCE_CONFIG, `${field} must be a plain SQL identifier (${SQL_IDENTIFIER_PATTERN}), got ${JSON.stringify(name)}`);
  }
  return `"${name}"`;
}

export type Position = number | string | bigint;

export interface PollQuery {
  /** Without a position yet. */
  first: string;
  /** After a position (one bound parameter). */
  next: string;
  last: string;
}

/** The statements of one table; every name checked and quoted. `field` prefixes error messages. */
export function buildPollQueries(table: SqlTableConfig, field: string): PollQuery {
  const t = quoteIdentifier(table.table, `${field}.table`);
  const p = quoteIdentifier(table.positionColumn, `${field}.positionColumn`);
  const mapped = Object.keys(table.columns);
  const columns =
    mapped.length === 0
      ? '*'
      : [...new Set([table.positionColumn, ...mapped])].map((c) => quoteIdentifier(c, `${field}.columns`)).join(', ');
  const limit = Number.isSafeInteger(table.batchRows) && table.batchRows > 0 ? table.batchRows : 500;
  return {
    first: `SELECT ${columns} FROM ${t} WHERE ${p} IS NOT NULL ORDER BY ${p} LIMIT ${limit}`,
    next: `SELECT ${columns} FROM ${t} WHERE ${p} > ? ORDER BY ${p} LIMIT ${limit}`,
    last: `SELECT MAX(${p}) AS position FROM ${t}`,
  };
}

/** A row → the event body: mapped columns under their field names (or all columns), NULLs left out, BLOBs base64. */
export function rowToEvent(row: Record<string, unknown>, columns: Record<string, string>): Record<string, unknown> {
  const entries: Array<[string, unknown]> = [];
  const mapping = Object.keys(columns).length === 0 ? Object.keys(row).map((c) => [c, c] as const) : Object.entries(columns);
  for (const [column, field] of mapping) {
    let value = row[column];
    if (value === null || value === undefined) continue;
    if (Buffer.isBuffer(value)) value = value.toString('base64');
    else if (typeof value === 'bigint') value = Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
    entries.push([field, value]);
  }
  return Object.fromEntries(entries);
}

interface SqlEntry {
  position: Position | null;
}

export const createSqlPollSource: SourceFactory<SqlPollSourceConfig> = (config, deps) => new SqlPollSource(config, deps);

export class SqlPollSource implements Source {
  readonly name = 'sqlPoll';
  private readonly stopper = new Stopper();
  private readonly loops: Promise<void>[] = [];
  private state: SourceState<SqlEntry> | undefined;
  private readonly queries: PollQuery[];

  constructor(
    private readonly config: SqlPollSourceConfig,
    private readonly deps: SourceDeps,
  ) {
    // Checked here too (the config schema checks the pattern): a name never reaches SQL unchecked.
    this.queries = config.tables.map((table, i) => buildPollQueries(table, `config.sources.sqlPoll.tables[${i}]`));
  }

  async start(): Promise<void> {
    this.state = new SourceState<SqlEntry>(stateFilePath(this.deps, 'sql-poll'));
    this.config.tables.forEach((table, i) => {
      const poller = new TablePoller(this, table, this.queries[i]!, `config.sources.sqlPoll.tables[${i}]`);
      // A wrong table or column stops the agent at start, like any wrong config; a database not there yet is waited for.
      if (existsSync(table.database)) poller.open();
      this.loops.push(this.run(poller));
    });
    this.deps.log.info({ tables: this.config.tables.map((t) => `${t.database}:${t.table}`), state: this.state.path }, 'sql poll source started');
  }

  async stop(): Promise<void> {
    this.stopper.stop();
    await Promise.all(this.loops.splice(0));
  }

  private async run(poller: TablePoller): Promise<void> {
    let lastError = '';
    try {
      while (!this.stopper.isStopped) {
        let progressed = false;
        try {
          progressed = await poller.step();
          lastError = '';
        } catch (error) {
          if (error instanceof SourceStopped) break;
          const message = (error as Error).message;
          if (message !== lastError) this.deps.log.error({ err: message, table: poller.label }, 'table poll failed; retrying');
          lastError = message;
          poller.close();
        }
        if (!progressed) await this.stopper.sleep(this.config.pollIntervalMs);
      }
    } finally {
      poller.close();
    }
  }

  /** @internal Submits the rows and, after the commit, records the new position. */
  async commit(key: string, items: IngestItem[], position: Position, origin: string, type: string): Promise<void> {
    const result = await submitUntilStored(this.deps, items, { source: 'sql', origin, defaultType: type }, this.config, this.stopper);
    if (result.rejected.length > 0) {
      this.deps.log.warn({ table: origin, rejected: result.rejected.length, first: result.rejected.slice(0, 3) }, 'rows dead-lettered');
    }
    this.state!.set(key, { position: typeof position === 'bigint' ? position.toString() : position });
    this.state!.save();
  }

  /** @internal */
  get stateStore(): SourceState<SqlEntry> {
    return this.state!;
  }

  /** @internal */
  get log(): SourceDeps['log'] {
    return this.deps.log;
  }
}

class TablePoller {
  readonly label: string;
  private readonly key: string;
  private db: Database.Database | undefined;
  private first: Database.Statement | undefined;
  private next: Database.Statement | undefined;

  constructor(
    private readonly source: SqlPollSource,
    private readonly table: SqlTableConfig,
    private readonly queries: PollQuery,
    private readonly field: string,
  ) {
    this.label = `${basename(table.database)}:${table.table}`;
    this.key = `${resolve(table.database)}#${table.table}`;
  }

  /** Opens the database read-only and checks that the table and the columns exist. */
  open(): void {
    // timeout 0: a locked database answers SQLITE_BUSY at once and is retried at the next poll, instead of
    // blocking the event loop (and every other source) while it waits.
    const db = new Database(this.table.database, { readonly: true, fileMustExist: true, timeout: 0 });
    try {
      const columns = (db.prepare('SELECT name FROM pragma_table_info(?)').all(this.table.table) as Array<{ name: string }>).map((c) => c.name);
      if (columns.length === 0) throw new EdgeError(EdgeErrorCode.SOURCE_CONFIG, `${this.field}.table: no table "${this.table.table}" in ${this.table.database}`);
      for (const [column, field] of [[this.table.positionColumn, 'positionColumn'], ...Object.keys(this.table.columns).map((c) => [c, 'columns'])] as const) {
        if (!columns.includes(column)) {
          throw new EdgeError(EdgeErrorCode.SOURCE_CONFIG, `${this.field}.${field}: table "${this.table.table}" has no column "${column}" (it has ${columns.join(', ')})`);
        }
      }
      this.first = db.prepare(this.queries.first);
      this.next = db.prepare(this.queries.next);
      if (!this.source.stateStore.get(this.key)) {
        const position = this.table.startAt === 'end' ? ((db.prepare(this.queries.last).get() as { position: Position | null }).position ?? null) : null;
        this.source.stateStore.set(this.key, { position });
        this.source.stateStore.save();
      }
      this.db = db;
    } catch (error) {
      db.close();
      throw error;
    }
  }

  async step(): Promise<boolean> {
    if (!this.db) {
      if (!existsSync(this.table.database)) return false;
      this.open();
    }
    const position = this.source.stateStore.get(this.key)?.position ?? null;
    const rows = (position === null ? this.first!.all() : this.next!.all(position)) as Array<Record<string, unknown>>;
    if (rows.length === 0) return false;
    const last = rows[rows.length - 1]![this.table.positionColumn] as Position;
    const items: IngestItem[] = rows.map((row) => ({ value: rowToEvent(row, this.table.columns) }));
    await this.source.commit(this.key, items, last, this.label, this.table.type);
    return true;
  }

  close(): void {
    this.db?.close();
    this.db = undefined;
  }
}
