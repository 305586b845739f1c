/**
 * Writes the operators' window results and alerts to QuestDB (ILP over HTTP, like questdb-sink.ts), into two tables
 * the hub creates at start over REST (never ILP auto-create), both WAL, daily partitions, with DEDUP UPSERT KEYS so a
 * later revision, a retried flush or a replay after a takeover overwrites rows instead of adding copies:
 *
 *   window_results  one row per (window, aggregate), long format, so every rule's aggregates fit one table.
 *                   ts = window start; DEDUP UPSERT KEYS(ts, rule, key, aggregate).
 *                   `value` DOUBLE holds a numeric aggregate; anything else (`last` of a string, a boolean, a JSON
 *                   object) goes as text into `text_value` VARCHAR with `value` null, so no aggregate is dropped; a
 *                   null aggregate (avg over no numbers) is a row with both null.
 *                   Session merges: QuestDB has no DELETE, so when a session result `replaces` earlier sessions the
 *                   sink upserts a tombstone over each of their rows (same keys, `superseded` = true, values null,
 *                   `final` = true). Queries read `WHERE NOT superseded`. A tombstone is an upsert like any row, so
 *                   replays stay idempotent and the last write of a key (in stream order) wins.
 *   alerts          ts = the alert's event time; DEDUP UPSERT KEYS(ts, rule, key); details as JSON text.
 *
 * Buffering: rows wait in a map keyed by their table's dedup key, so a window revised several times between two
 * flushes is sent once (the last revision), and a tombstone and the row it covers never share a request (QuestDB's
 * order within one transaction does not matter then). The map is encoded into the ILP buffer only at flush time:
 * analytics outputs are few next to raw events, and it makes a retry after a failed request trivially complete.
 *
 * One sink serves every partition processor of the worker: `flush()` calls are queued, each sends every row
 * written before it was called (or a flush queued before it does), and rejects if QuestDB did not confirm them;
 * the rows stay buffered for the next call. LateEvent outputs are not written here (they go to the DLQ).
 */
import { Sender } from '@questdb/nodejs-client';
import type { Logger } from '../../../shared/logger.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import type { Alert, Json, WindowResult } from '../operators/operator.js';
import { QuestDbRest } from './questdb-rest.js';
import { writeRow, type Field, type IlpRowWriter, type Row } from './questdb-rows.js';
import { senderConfig, type IlpSender, type QuestDbSinkOptions } from './questdb-sink.js';
import { quoteIdentifier, showColumns, type ExistingColumn, type TableColumn } from './questdb-tables.js';

/** Table names; tests use their own. */
export interface AnalyticsTables {
  /** @default window_results */
  windowResults: string;
  /** @default alerts */
  alerts: string;
}

export const DEFAULT_ANALYTICS_TABLES: Readonly<AnalyticsTables> = Object.freeze({ windowResults: 'window_results', alerts: 'alerts' });

export interface AnalyticsTableSpec {
  table: string;
  columns: readonly TableColumn[];
  /** DEDUP UPSERT KEYS, designated timestamp `ts` first. */
  dedupKeys: readonly string[];
}

/** Column written at flush time on both tables (epoch µs of the encoding, from the injected clock). */
const WRITTEN_AT = 'written_at';

export function analyticsTableSpecs(tables: AnalyticsTables = DEFAULT_ANALYTICS_TABLES): AnalyticsTableSpec[] {
  return [
    {
      table: tables.windowResults,
      columns: [
        { name: 'ts', sqlType: 'TIMESTAMP' },
        { name: 'rule', sqlType: 'SYMBOL' },
        { name: 'key', sqlType: 'SYMBOL' },
        { name: 'aggregate', sqlType: 'SYMBOL' },
        { name: 'value', sqlType: 'DOUBLE' },
        { name: 'text_value', sqlType: 'VARCHAR' },
        { name: 'window_end', sqlType: 'TIMESTAMP' },
        { name: 'revision', sqlType: 'LONG' },
        { name: 'final', sqlType: 'BOOLEAN' },
        { name: 'superseded', sqlType: 'BOOLEAN' },
        { name: WRITTEN_AT, sqlType: 'TIMESTAMP' },
      ],
      dedupKeys: ['ts', 'rule', 'key', 'aggregate'],
    },
    {
      table: tables.alerts,
      columns: [
        { name: 'ts', sqlType: 'TIMESTAMP' },
        { name: 'rule', sqlType: 'SYMBOL' },
        { name: 'key', sqlType: 'SYMBOL' },
        { name: 'severity', sqlType: 'SYMBOL' },
        { name: 'message', sqlType: 'VARCHAR' },
        { name: 'details', sqlType: 'VARCHAR' },
        { name: WRITTEN_AT, sqlType: 'TIMESTAMP' },
      ],
      dedupKeys: ['ts', 'rule', 'key'],
    },
  ];
}

export function createAnalyticsTableSql(spec: AnalyticsTableSpec): string {
  const columns = spec.columns.map((c) => `${quoteIdentifier(c.name)} ${c.sqlType}`).join(', ');
  return (
    `CREATE TABLE IF NOT EXISTS ${quoteIdentifier(spec.table)} (${columns}) ` +
    `TIMESTAMP(${quoteIdentifier('ts')}) PARTITION BY DAY WAL ` +
    `DEDUP UPSERT KEYS(${spec.dedupKeys.map(quoteIdentifier).join(', ')})`
  );
}

/** A column as `SHOW COLUMNS` reports it. */
export type ShownColumn = ExistingColumn;

export interface AnalyticsTablePlan {
  /** ALTER statements that make an existing table fit (missing columns, dedup keys). */
  statements: string[];
  /** What the hub cannot fix: another column type, another designated timestamp. */
  problems: string[];
}

/** What to change on an existing table so it matches the spec. Pure. */
export function planAnalyticsTable(spec: AnalyticsTableSpec, existing: readonly ShownColumn[]): AnalyticsTablePlan {
  const byName = new Map(existing.map((c) => [c.name, c]));
  const plan: AnalyticsTablePlan = { statements: [], problems: [] };
  const table = quoteIdentifier(spec.table);
  for (const column of spec.columns) {
    const current = byName.get(column.name);
    if (!current) plan.statements.push(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${quoteIdentifier(column.name)} ${column.sqlType}`);
    else if (current.type !== column.sqlType && !(column.sqlType === 'VARCHAR' && current.type === 'STRING')) {
      plan.problems.push(`column ${column.name} is ${current.type}, must be ${column.sqlType}`);
    }
  }
  const designated = existing.find((c) => c.designated);
  if (designated?.name !== 'ts') plan.problems.push(`designated timestamp is ${designated ? designated.name : 'not set'}, must be ts`);
  const keys = existing.filter((c) => c.upsertKey).map((c) => c.name);
  if (keys.length !== spec.dedupKeys.length || !spec.dedupKeys.every((k) => keys.includes(k))) {
    plan.statements.push(`ALTER TABLE ${table} DEDUP ENABLE UPSERT KEYS(${spec.dedupKeys.map(quoteIdentifier).join(', ')})`);
  }
  return plan;
}

/** Creates both tables if missing and fixes what can be fixed; throws HUB_ERR_TABLE_SETUP on a mismatch. Idempotent. */
export async function ensureAnalyticsTables(rest: QuestDbRest, tables: AnalyticsTables, log: Logger): Promise<void> {
  for (const spec of analyticsTableSpecs(tables)) {
    await rest.exec(createAnalyticsTableSql(spec));
    const plan = planAnalyticsTable(spec, await showColumns(rest, spec.table));
    if (plan.problems.length > 0) {
      throw new HubError(HubErrorCode.TABLE_SETUP, `table ${spec.table} exists but does not fit the analytics sink: ${plan.problems.join('; ')}`);
    }
    for (const statement of plan.statements) await rest.exec(statement);
    log.info({ table: spec.table, altered: plan.statements.length }, 'questdb analytics table ready');
  }
}


/** A row plus its identity in its table: the DEDUP UPSERT KEYS values, as one string. */
export interface AnalyticsRow extends Row {
  id: string;
}

export interface AnalyticsRowsResult {
  rows: AnalyticsRow[];
  /** Outputs that cannot become rows (a time that is not epoch ms), one sentence each. */
  problems: string[];
}

/**
 * Pure: the rows of window results and alerts (times converted from epoch ms to µs). A window result gives one row
 * per aggregate, plus one tombstone per aggregate for each replaced session whose start differs from its own
 * (a session that kept its start is overwritten by the new row itself). Other output types are ignored.
 */
export function analyticsRows(outputs: ReadonlyArray<WindowResult | Alert>, tables: AnalyticsTables = DEFAULT_ANALYTICS_TABLES): AnalyticsRowsResult {
  const rows: AnalyticsRow[] = [];
  const problems: string[] = [];
  for (const output of outputs) {
    if (output.type === 'window_result') windowRows(output, tables.windowResults, rows, problems);
    else if (output.type === 'alert') alertRow(output, tables.alerts, rows, problems);
  }
  return { rows, problems };
}

function windowRows(result: WindowResult, table: string, rows: AnalyticsRow[], problems: string[]): void {
  const start = micros(result.windowStart);
  const end = micros(result.windowEnd);
  if (start === undefined || end === undefined) {
    problems.push(`window result of rule "${result.rule}" key "${result.key}" has bounds that are not epoch ms: [${result.windowStart}, ${result.windowEnd})`);
    return;
  }
  const aggregates = Object.keys(result.values);
  for (const aggregate of aggregates) {
    const fields: Field[] = [...aggregateValue(result.values[aggregate] ?? null)];
    fields.push(
      { name: 'window_end', kind: 'timestamp', value: end },
      { name: 'revision', kind: 'long', value: result.revision },
      { name: 'final', kind: 'boolean', value: result.final },
      // Explicit: an upsert replaces the whole row, and this one must un-hide a window once tombstoned.
      { name: 'superseded', kind: 'boolean', value: false },
    );
    rows.push(windowRow(table, start, result, aggregate, fields));
  }
  for (const replaced of result.replaces ?? []) {
    if (replaced.windowStart === result.windowStart) continue;
    const oldStart = micros(replaced.windowStart);
    const oldEnd = micros(replaced.windowEnd);
    if (oldStart === undefined || oldEnd === undefined) {
      problems.push(`window result of rule "${result.rule}" key "${result.key}" replaces bounds that are not epoch ms: [${replaced.windowStart}, ${replaced.windowEnd})`);
      continue;
    }
    for (const aggregate of aggregates) {
      rows.push(
        windowRow(table, oldStart, result, aggregate, [
          { name: 'window_end', kind: 'timestamp', value: oldEnd },
          { name: 'revision', kind: 'long', value: result.revision },
          { name: 'final', kind: 'boolean', value: true },
          { name: 'superseded', kind: 'boolean', value: true },
        ]),
      );
    }
  }
}

function windowRow(table: string, ts: number, result: WindowResult, aggregate: string, fields: Field[]): AnalyticsRow {
  return {
    table,
    ts,
    id: identity(table, ts, result.rule, result.key, aggregate),
    symbols: [
      { name: 'rule', value: result.rule },
      { name: 'key', value: result.key },
      { name: 'aggregate', value: aggregate },
    ],
    fields,
  };
}

/** A number goes to `value`; a string as it is and anything else as JSON text to `text_value`; null to neither. */
function aggregateValue(value: Json): Field[] {
  if (value === null) return [];
  if (typeof value === 'number') return Number.isFinite(value) ? [{ name: 'value', kind: 'double', value }] : [];
  return [{ name: 'text_value', kind: 'string', value: typeof value === 'string' ? value : JSON.stringify(value) }];
}

function alertRow(alert: Alert, table: string, rows: AnalyticsRow[], problems: string[]): void {
  const ts = micros(alert.ts);
  if (ts === undefined) {
    problems.push(`alert of rule "${alert.rule}" key "${alert.key}" has a time that is not epoch ms: ${alert.ts}`);
    return;
  }
  rows.push({
    table,
    ts,
    id: identity(table, ts, alert.rule, alert.key),
    symbols: [
      { name: 'rule', value: alert.rule },
      { name: 'key', value: alert.key },
      { name: 'severity', value: alert.severity },
    ],
    fields: [
      { name: 'message', kind: 'string', value: alert.message },
      { name: 'details', kind: 'string', value: JSON.stringify(alert.details) },
    ],
  });
}

function micros(ms: number): number | undefined {
  if (!Number.isSafeInteger(ms) || ms < 0) return undefined;
  const us = ms * 1000;
  return Number.isSafeInteger(us) ? us : undefined;
}

function identity(...parts: Array<string | number>): string {
  return parts.join('\u0000');
}

/** Writes one row, then `written_at`, then the designated timestamp (the event path's writer). */
export function writeAnalyticsRow(writer: IlpRowWriter, row: Row, writtenAtMicros: number): unknown {
  return writeRow(writer, row, writtenAtMicros, WRITTEN_AT);
}

export interface QuestDbAnalyticsSinkOptions extends Pick<QuestDbSinkOptions, 'httpUrl' | 'username' | 'password' | 'requestTimeoutMs' | 'retryTimeoutMs'> {
  /** @default { windowResults: 'window_results', alerts: 'alerts' } */
  tables?: AnalyticsTables | undefined;
  /** Epoch microseconds, for `written_at`. */
  nowMicros: () => number;
  log: Logger;
}

/** Creates (or checks) both tables over REST, then opens the ILP sender. */
export async function createQuestDbAnalyticsSink(options: QuestDbAnalyticsSinkOptions): Promise<QuestDbAnalyticsSink> {
  const { log } = options;
  const tables = options.tables ?? DEFAULT_ANALYTICS_TABLES;
  const rest = new QuestDbRest({ httpUrl: options.httpUrl, username: options.username, password: options.password, timeoutMs: options.requestTimeoutMs });
  await ensureAnalyticsTables(rest, tables, log);
  const sender = await Sender.fromConfig(senderConfig(options), {
    log: (level, message) => {
      if (level === 'warn' || level === 'error') log[level]({ questdbClient: true }, String(message));
    },
  });
  return new QuestDbAnalyticsSink(sender, rest, { tables, nowMicros: options.nowMicros, log });
}

export class QuestDbAnalyticsSink {
  /** Rows not yet confirmed, by identity: a later row of the same keys replaces the earlier one (last write wins). */
  private pending = new Map<string, AnalyticsRow>();
  /** The last queued flush; the next one starts after it settles. */
  private tail: Promise<void> = Promise.resolve();
  private readonly tables: AnalyticsTables;

  constructor(
    private readonly sender: IlpSender,
    private readonly rest: { ping(): Promise<void> },
    private readonly options: { tables?: AnalyticsTables | undefined; nowMicros: () => number; log: Logger },
  ) {
    this.tables = options.tables ?? DEFAULT_ANALYTICS_TABLES;
  }

  /** Rows buffered and not yet confirmed (after collapsing rows of the same keys). */
  get bufferedRows(): number {
    return this.pending.size;
  }

  /** Buffers the rows of the outputs. Synchronous; an output that cannot become a row is logged and skipped. */
  write(outputs: ReadonlyArray<WindowResult | Alert>): void {
    const { rows, problems } = analyticsRows(outputs, this.tables);
    for (const row of rows) {
      this.pending.delete(row.id); // re-inserted at the end: the map's order stays the order of last writes
      this.pending.set(row.id, row);
    }
    for (const problem of problems) this.options.log.error({ problem }, 'analytics output not written');
  }

  /**
   * Resolves once QuestDB confirmed every row written before the call; rejects with HUB_ERR_FLUSH_FAILED otherwise
   * (the rows stay buffered and the next flush sends them). Calls are queued, never concurrent.
   */
  flush(): Promise<void> {
    const run = this.tail.then(
      () => this.send(),
      () => this.send(),
    );
    this.tail = run.catch(() => undefined);
    return run;
  }

  probe(): Promise<void> {
    return this.rest.ping();
  }

  /** Waits for a queued flush, then closes the sender; unconfirmed rows are dropped (their messages are not acked). */
  async close(): Promise<void> {
    await this.tail;
    if (this.pending.size > 0) this.options.log.warn({ rows: this.pending.size }, 'analytics sink closed with unconfirmed rows');
    this.pending.clear();
    this.sender.reset();
    await this.sender.close();
  }

  private async send(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = [...this.pending.entries()];
    // Encoded afresh each time: after a failed request the Sender does not give its buffer back.
    this.sender.reset();
    const writtenAt = this.options.nowMicros();
    for (const [id, row] of batch) {
      try {
        const closed = writeAnalyticsRow(this.sender, row, writtenAt);
        // With auto-flush off, at() only closes the row; its promise cannot carry a network error.
        if (closed instanceof Promise) closed.catch(() => undefined);
      } catch (error) {
        // A half-written row would corrupt the request: start over without it.
        this.options.log.error({ table: row.table, ts: row.ts, err: errorMessage(error) }, 'ILP client cannot encode analytics row; dropped');
        if (this.pending.get(id) === row) this.pending.delete(id);
        return this.send();
      }
    }
    try {
      await this.sender.flush();
    } catch (error) {
      throw new HubError(HubErrorCode.FLUSH_FAILED, `writing ${batch.length} analytics rows to QuestDB failed: ${errorMessage(error)}`, { cause: error });
    }
    // A row rewritten while the request was in flight stays for the next flush.
    for (const [id, row] of batch) if (this.pending.get(id) === row) this.pending.delete(id);
  }
}
