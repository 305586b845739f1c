/**
 * Writes the operators' window results and alerts to QuestDB (ILP over HTTP, like questdb-sink.ts), into two tables
 * the hub creates at start over REST (never ILP auto-create), both WAL, daily partitions, with DEDUP UPSERT KEYS so a
 * later revision, a retried flush or a replay after a takeover overwrites rows instead of adding copies:
 *
 *   window_results  one row per window (wide format): ts = window start; DEDUP UPSERT KEYS(ts, rule, key,
 *                   stream_partition). Each EVENTS partition runs the rule over its own events: a rule keyed by the
 *                   partition key (device, user) has one row per key, but one keyed by something else (event type x
 *                   device type) gets one partial row per partition, which queries add up (GROUP BY ts, key). Without
 *                   the partition in the key those partial rows overwrote each other and the last one won.
 *                   Each numeric aggregate is a DOUBLE column named after it (`avg_value`, `p95_value`), shared by
 *                   the rules that use the name; the sink adds a column (ALTER TABLE ... ADD COLUMN) the first time
 *                   a rule's result needs it, so a rule added at run time needs no restart. Anything not numeric
 *                   (`last` of a string, a boolean, a JSON object) goes into `text_values` as one JSON object
 *                   (`{"last_state":"on"}`), so no aggregate is dropped; a null aggregate (avg over no numbers) is
 *                   a null column. Rule validation reserves the names of the fixed columns.
 *                   Session merges: QuestDB has no DELETE, so when a session result `replaces` earlier sessions the
 *                   sink upserts a tombstone over each of their rows (same keys, `superseded` = true, values null,
 *                   `final` = true). Queries read `WHERE NOT superseded`. A tombstone is an upsert like any row, so
 *                   replays stay idempotent and the last write of a key (in stream order) wins.
 *   alerts          ts = the alert's event time; DEDUP UPSERT KEYS(ts, rule, key); details as JSON text.
 *   edge_refusals   one row per event an edge agent refused (from the DLQ stream): ts = when it was refused,
 *                   DEDUP UPSERT KEYS(ts, source, letter_id); `check` says which kind of check failed. Validity per
 *                   source and minute is events / (events + refusals), see the README.
 *   data_quality    one row per (minute, source, event type, partition): the counts of the data-quality rules
 *                   (operators/data-quality.ts) and the scores they give; DEDUP UPSERT KEYS(ts, source, event_type,
 *                   stream_partition), so a late event's correction replaces the minute's row. Each partition
 *                   counts its own events: scores over a source add the counts up (see the README's SQL).
 *
 * One row per window rather than one per aggregate: a rule with five aggregates over sparse keys (a 10 s window
 * per device reading) made five times the rows, and encoding rows is what the hub spends its time on.
 *
 * Buffering: rows wait in a map keyed by their table's dedup key, so a window revised several times between two
 * flushes is sent once (the last revision), and a tombstone and the row it covers never share a request (QuestDB's
 * order within one transaction does not matter then). The map is encoded into the ILP buffer only at flush time:
 * analytics outputs are few next to raw events, and it makes a retry after a failed request trivially complete.
 *
 * One sink serves every partition processor of the worker: `flush()` calls are queued, each sends every row
 * written before it was called (or a flush queued before it does), and rejects if QuestDB did not confirm them;
 * the rows stay buffered for the next call. LateEvent outputs are not written here (they go to the DLQ).
 *
 * Fencing: a row remembers the partition whose processor wrote it. Rows of a partition whose lease this worker lost
 * are discarded (`discard`), and right before each request the write guard (set by the analytics service) is asked
 * about every partition with rows in it: rows of a partition this worker may no longer write for are dropped, not
 * sent. After a pause longer than the lease (GC, a frozen VM, SIGSTOP) another worker owns the partition and may have
 * written newer revisions of the same rows; an upsert of ours would replace them with older ones (last write wins).
 * The next owner replays the dropped outputs from its snapshot.
 */
import type { Logger } from '../../../shared/logger.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import type { Alert, Json, QualityMinute, WindowResult } from '../operators/operator.js';
import { QuestDbRest } from './questdb-rest.js';
import { writeRow, type Field, type IlpRowWriter, type Row } from './questdb-rows.js';
import type { IlpSender, QuestDbSinkOptions } from './questdb-sink.js';
import { addColumnSql, quoteIdentifier, showColumns, type ExistingColumn, type TableColumn } from './questdb-tables.js';
import { IlpHttpWriter } from './ilp-http-writer.js';

/** Table names; tests use their own. */
export interface AnalyticsTables {
  /** @default window_results */
  windowResults: string;
  /** @default alerts */
  alerts: string;
  /** @default data_quality */
  dataQuality?: string;
  /** @default edge_refusals */
  edgeRefusals?: string;
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
/** The non-numeric aggregates of a window result, as one JSON object. */
const TEXT_VALUES = 'text_values';
/** Lineage: the version (content hash) of the rule that made the row; null for rows of older hubs. */
const RULE_VERSION = 'rule_version';
/** The EVENTS partition whose processor made a window result (-1: unknown, in tests that write without one). */
const STREAM_PARTITION = 'stream_partition';

export function analyticsTableSpecs(tables: AnalyticsTables = DEFAULT_ANALYTICS_TABLES): AnalyticsTableSpec[] {
  return [
    {
      table: tables.windowResults,
      columns: [
        { name: 'ts', sqlType: 'TIMESTAMP' },
        { name: 'rule', sqlType: 'SYMBOL' },
        { name: 'key', sqlType: 'SYMBOL' },
        { name: 'window_end', sqlType: 'TIMESTAMP' },
        { name: 'revision', sqlType: 'LONG' },
        { name: 'final', sqlType: 'BOOLEAN' },
        { name: 'superseded', sqlType: 'BOOLEAN' },
        { name: TEXT_VALUES, sqlType: 'VARCHAR' },
        { name: WRITTEN_AT, sqlType: 'TIMESTAMP' },
        { name: STREAM_PARTITION, sqlType: 'LONG' },
        { name: RULE_VERSION, sqlType: 'SYMBOL' },
      ],
      dedupKeys: ['ts', 'rule', 'key', STREAM_PARTITION],
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
        { name: RULE_VERSION, sqlType: 'SYMBOL' },
      ],
      dedupKeys: ['ts', 'rule', 'key'],
    },
    {
      table: tables.dataQuality ?? DATA_QUALITY_TABLE,
      columns: [
        { name: 'ts', sqlType: 'TIMESTAMP' },
        { name: 'source', sqlType: 'SYMBOL' },
        { name: 'event_type', sqlType: 'SYMBOL' },
        { name: STREAM_PARTITION, sqlType: 'LONG' },
        ...QUALITY_COUNTS.map((name) => ({ name, sqlType: 'LONG' as const })),
        ...QUALITY_SCORES.map((name) => ({ name, sqlType: 'DOUBLE' as const })),
        { name: 'missing_by_field', sqlType: 'VARCHAR' },
        { name: 'out_of_range_by_field', sqlType: 'VARCHAR' },
        { name: 'revision', sqlType: 'LONG' },
        { name: 'final', sqlType: 'BOOLEAN' },
        { name: WRITTEN_AT, sqlType: 'TIMESTAMP' },
        { name: RULE_VERSION, sqlType: 'SYMBOL' },
      ],
      dedupKeys: ['ts', 'source', 'event_type', STREAM_PARTITION],
    },
    {
      table: tables.edgeRefusals ?? EDGE_REFUSALS_TABLE,
      columns: [
        { name: 'ts', sqlType: 'TIMESTAMP' },
        { name: 'source', sqlType: 'SYMBOL' },
        { name: 'letter_id', sqlType: 'LONG' },
        { name: 'event_type', sqlType: 'SYMBOL' },
        { name: 'check', sqlType: 'SYMBOL' },
        { name: 'code', sqlType: 'SYMBOL' },
        { name: 'ingest', sqlType: 'SYMBOL' },
        { name: 'reason', sqlType: 'VARCHAR' },
        { name: WRITTEN_AT, sqlType: 'TIMESTAMP' },
      ],
      dedupKeys: ['ts', 'source', 'letter_id'],
    },
  ];
}

export const EDGE_REFUSALS_TABLE = 'edge_refusals';

export const DATA_QUALITY_TABLE = 'data_quality';
/** Counts of a data_quality row (columns, LONG). */
const QUALITY_COUNTS = ['events', 'complete', 'late', 'future', 'duplicates', 'out_of_range', 'drift'] as const;
/** Scores of a data_quality row (columns, DOUBLE): shares of the row's events, and the ingest lag in ms. */
const QUALITY_SCORES = ['completeness', 'late_share', 'future_share', 'duplicate_share', 'out_of_range_share', 'lag_p50_ms', 'lag_p95_ms', 'lag_max_ms'] as const;

export function createAnalyticsTableSql(spec: AnalyticsTableSpec): string {
  const columns = spec.columns.map((c) => `${quoteIdentifier(c.name)} ${c.sqlType}`).join(', ');
  return (
    `CREATE TABLE IF NOT EXISTS ${quoteIdentifier(spec.table)} (${columns}) ` +
    `TIMESTAMP(${quoteIdentifier('ts')}) PARTITION BY DAY WAL ` +
    `DEDUP UPSERT KEYS(${spec.dedupKeys.map(quoteIdentifier).join(', ')})`
  );
}

export interface AnalyticsTablePlan {
  /** ALTER statements that make an existing table fit (missing columns, dedup keys). */
  statements: string[];
  /** What the hub cannot fix: another column type, another designated timestamp. */
  problems: string[];
}

/** What to change on an existing table so it matches the spec. Pure. */
export function planAnalyticsTable(spec: AnalyticsTableSpec, existing: readonly ExistingColumn[]): AnalyticsTablePlan {
  const byName = new Map(existing.map((c) => [c.name, c]));
  const plan: AnalyticsTablePlan = { statements: [], problems: [] };
  const table = quoteIdentifier(spec.table);
  for (const column of spec.columns) {
    const current = byName.get(column.name);
    if (!current) plan.statements.push(addColumnSql(spec.table, column));
    else if (current.type !== column.sqlType && !(column.sqlType === 'VARCHAR' && current.type === 'STRING')) {
      plan.problems.push(`column ${column.name} is ${current.type}, must be ${column.sqlType}`);
    }
  }
  const designated = existing.find((c) => c.designated);
  if (designated?.name !== 'ts') plan.problems.push(`designated timestamp is ${designated ? designated.name : 'not set'}, must be ts`);
  const keys = existing.filter((c) => c.upsertKey).map((c) => c.name);
  const foreignKeys = keys.filter((k) => !spec.columns.some((c) => c.name === k));
  if (foreignKeys.length > 0) {
    // The long format of hub 0.1 (one row per aggregate, keyed by `aggregate`): rows of both would mix.
    plan.problems.push(`its dedup keys include ${foreignKeys.join(', ')}, which this hub does not write (an older format?); rename or drop the table`);
    return plan;
  }
  if (keys.length !== spec.dedupKeys.length || !spec.dedupKeys.every((k) => keys.includes(k))) {
    plan.statements.push(`ALTER TABLE ${table} DEDUP ENABLE UPSERT KEYS(${spec.dedupKeys.map(quoteIdentifier).join(', ')})`);
  }
  return plan;
}

/** Creates both tables if missing and fixes what can be fixed; throws HUB_ERR_TABLE_SETUP on a mismatch. Idempotent. */
export async function ensureAnalyticsTables(rest: QuestDbRest, tables: AnalyticsTables, log: Logger): Promise<void> {
  for (const spec of analyticsTableSpecs(tables)) await ensureSpecTable(rest, spec, log);
}

/** One table of the hub's own (WAL, daily partitions, dedup keys): created if missing, missing columns and keys added. */
export async function ensureSpecTable(rest: Pick<QuestDbRest, 'exec'>, spec: AnalyticsTableSpec, log: Logger): Promise<void> {
  await rest.exec(createAnalyticsTableSql(spec));
  const plan = planAnalyticsTable(spec, await showColumns(rest, spec.table));
  if (plan.problems.length > 0) {
    throw new HubError(HubErrorCode.TABLE_SETUP, `table ${spec.table} exists but does not fit what the hub writes: ${plan.problems.join('; ')}`);
  }
  for (const statement of plan.statements) await rest.exec(statement);
  log.info({ table: spec.table, altered: plan.statements.length }, 'questdb table of the hub ready');
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
 * Pure: the rows of window results and alerts (times converted from epoch ms to µs). A window result gives one row,
 * plus one tombstone for each replaced session whose start differs from its own (a session that kept its start is
 * overwritten by the new row itself). Other output types are ignored.
 */
export function analyticsRows(
  outputs: ReadonlyArray<WindowResult | Alert | QualityMinute>,
  tables: AnalyticsTables = DEFAULT_ANALYTICS_TABLES,
  partition = -1,
): AnalyticsRowsResult {
  const rows: AnalyticsRow[] = [];
  const problems: string[] = [];
  for (const output of outputs) {
    if (output.type === 'window_result') windowRows(output, tables.windowResults, partition, rows, problems);
    else if (output.type === 'alert') alertRow(output, tables.alerts, rows, problems);
    else if (output.type === 'quality_minute') qualityRow(output, tables.dataQuality ?? DATA_QUALITY_TABLE, partition, rows, problems);
  }
  return { rows, problems };
}

function qualityRow(minute: QualityMinute, table: string, partition: number, rows: AnalyticsRow[], problems: string[]): void {
  const ts = micros(minute.minuteStart);
  if (ts === undefined) {
    problems.push(`data quality of ${minute.eventType} from ${minute.source} has a minute that is not epoch ms: ${minute.minuteStart}`);
    return;
  }
  const share = (n: number) => (minute.events > 0 ? n / minute.events : 0);
  const counts: Record<(typeof QUALITY_COUNTS)[number], number> = {
    events: minute.events,
    complete: minute.complete,
    late: minute.late,
    future: minute.future,
    duplicates: minute.duplicates,
    out_of_range: minute.outOfRange,
    drift: minute.drift,
  };
  const scores: Record<(typeof QUALITY_SCORES)[number], number | null> = {
    completeness: share(minute.complete),
    late_share: share(minute.late),
    future_share: share(minute.future),
    duplicate_share: share(minute.duplicates),
    out_of_range_share: share(minute.outOfRange),
    lag_p50_ms: minute.lagP50Ms,
    lag_p95_ms: minute.lagP95Ms,
    lag_max_ms: minute.lagMaxMs,
  };
  const fields: Field[] = [];
  for (const [name, value] of Object.entries(counts)) fields.push({ name, kind: 'long', value });
  // An upsert replaces the whole row: a score without a value is left out (null), never an old value.
  for (const [name, value] of Object.entries(scores)) if (value !== null && Number.isFinite(value)) fields.push({ name, kind: 'double', value });
  fields.push(
    { name: 'missing_by_field', kind: 'string', value: JSON.stringify(minute.missing) },
    { name: 'out_of_range_by_field', kind: 'string', value: JSON.stringify(minute.outOfRangeByField) },
    { name: 'revision', kind: 'long', value: minute.revision },
    { name: 'final', kind: 'boolean', value: minute.final },
    { name: STREAM_PARTITION, kind: 'long', value: partition },
  );
  rows.push({
    table,
    ts,
    id: identity(table, ts, minute.source, minute.eventType, partition),
    symbols: [
      { name: 'source', value: minute.source },
      { name: 'event_type', value: minute.eventType },
      ...(minute.ruleVersion !== undefined ? [{ name: RULE_VERSION, value: minute.ruleVersion }] : []),
    ],
    fields,
  });
}

function windowRows(result: WindowResult, table: string, partition: number, rows: AnalyticsRow[], problems: string[]): void {
  const start = micros(result.windowStart);
  const end = micros(result.windowEnd);
  if (start === undefined || end === undefined) {
    problems.push(`window result of rule "${result.rule}" key "${result.key}" has bounds that are not epoch ms: [${result.windowStart}, ${result.windowEnd})`);
    return;
  }
  const fields: Field[] = [];
  let texts: Record<string, Json> | undefined;
  for (const [aggregate, value] of Object.entries(result.values)) {
    if (typeof value === 'number') {
      if (Number.isFinite(value)) fields.push({ name: aggregate, kind: 'double', value });
    } else if (value !== null) (texts ??= {})[aggregate] = value;
  }
  if (texts) fields.push({ name: TEXT_VALUES, kind: 'string', value: JSON.stringify(texts) });
  fields.push(
    { name: 'window_end', kind: 'timestamp', value: end },
    { name: 'revision', kind: 'long', value: result.revision },
    { name: 'final', kind: 'boolean', value: result.final },
    // Explicit: an upsert replaces the whole row, and this one must un-hide a window once tombstoned.
    { name: 'superseded', kind: 'boolean', value: false },
  );
  rows.push(windowRow(table, start, result, partition, fields));
  for (const replaced of result.replaces ?? []) {
    if (replaced.windowStart === result.windowStart) continue;
    const oldStart = micros(replaced.windowStart);
    const oldEnd = micros(replaced.windowEnd);
    if (oldStart === undefined || oldEnd === undefined) {
      problems.push(`window result of rule "${result.rule}" key "${result.key}" replaces bounds that are not epoch ms: [${replaced.windowStart}, ${replaced.windowEnd})`);
      continue;
    }
    rows.push(
      windowRow(table, oldStart, result, partition, [
        { name: 'window_end', kind: 'timestamp', value: oldEnd },
        { name: 'revision', kind: 'long', value: result.revision },
        { name: 'final', kind: 'boolean', value: true },
        { name: 'superseded', kind: 'boolean', value: true },
      ]),
    );
  }
}

function windowRow(table: string, ts: number, result: WindowResult, partition: number, fields: Field[]): AnalyticsRow {
  return {
    table,
    ts,
    id: identity(table, ts, result.rule, result.key, partition),
    symbols: [
      { name: 'rule', value: result.rule },
      { name: 'key', value: result.key },
      ...(result.ruleVersion !== undefined ? [{ name: RULE_VERSION, value: result.ruleVersion }] : []),
    ],
    fields: [...fields, { name: STREAM_PARTITION, kind: 'long', value: partition }],
  };
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
      ...(alert.ruleVersion !== undefined ? [{ name: RULE_VERSION, value: alert.ruleVersion }] : []),
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

export function identity(...parts: Array<string | number>): string {
  return parts.join('\u0000');
}

/** Writes one row, then `written_at`, then the designated timestamp (the event path's writer). */
export function writeAnalyticsRow(writer: IlpRowWriter, row: Row, writtenAtMicros: number): void {
  writeRow(writer, row, writtenAtMicros, WRITTEN_AT);
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
  // No retries inside the writer: a retry re-sends the same bytes later, past the write guard (a request timed out
  // across a pause would be sent again after it, stale). The sink's next flush encodes the rows afresh, guarded.
  const sender = new IlpHttpWriter({ ...options, retryTimeoutMs: 0 });
  return new QuestDbAnalyticsSink(sender, rest, { tables, nowMicros: options.nowMicros, log });
}

/** A buffered row and the partition whose processor wrote it (undefined: not fenced, always written). */
interface PendingRow {
  row: AnalyticsRow;
  partition: number | undefined;
}

export class QuestDbAnalyticsSink {
  /** Rows not yet confirmed, by identity: a later row of the same keys replaces the earlier one (last write wins). */
  private pending = new Map<string, PendingRow>();
  /** Whether rows of a partition may still be written; rows of a partition it refuses are dropped before a request. */
  private writeGuard: (partition: number) => boolean = () => true;
  /** The last queued flush; the next one starts after it settles. */
  private tail: Promise<void> = Promise.resolve();
  /** A flush waiting for the one in flight; later calls share it. */
  private queued: Promise<void> | undefined;
  /** Lower-cased names of the window table's columns known to be there (DOUBLE, for the aggregates). */
  private readonly windowColumns: Set<string>;
  private readonly tables: AnalyticsTables;

  constructor(
    private readonly sender: IlpSender,
    private readonly rest: Pick<QuestDbRest, 'ping' | 'exec'>,
    private readonly options: { tables?: AnalyticsTables | undefined; nowMicros: () => number; log: Logger },
  ) {
    this.tables = options.tables ?? DEFAULT_ANALYTICS_TABLES;
    this.windowColumns = new Set(analyticsTableSpecs(this.tables)[0]!.columns.map((c) => c.name.toLowerCase()));
  }

  /** Rows buffered and not yet confirmed (after collapsing rows of the same keys). */
  get bufferedRows(): number {
    return this.pending.size;
  }

  /**
   * Buffers the rows of the outputs, as written by `partition`'s processor (for `discard` and the write guard).
   * Synchronous; an output that cannot become a row is logged and skipped.
   */
  write(outputs: ReadonlyArray<WindowResult | Alert | QualityMinute>, partition?: number): void {
    const { rows, problems } = analyticsRows(outputs, this.tables, partition);
    this.buffer(rows, partition);
    for (const problem of problems) this.options.log.error({ problem }, 'analytics output not written');
  }

  /** Buffers rows made elsewhere (the edge refusals): written with the next flush, never fenced. */
  writeRows(rows: readonly AnalyticsRow[]): void {
    this.buffer(rows, undefined);
  }

  private buffer(rows: readonly AnalyticsRow[], partition: number | undefined): void {
    for (const row of rows) {
      this.pending.delete(row.id); // re-inserted at the end: the map's order stays the order of last writes
      this.pending.set(row.id, { row, partition });
    }
  }

  /** Drops the buffered rows `partition` wrote last (its lease was lost); returns how many. */
  discard(partition: number): number {
    let dropped = 0;
    for (const [id, entry] of this.pending) {
      if (entry.partition !== partition) continue;
      this.pending.delete(id);
      dropped++;
    }
    return dropped;
  }

  /** Asked right before each request, once per partition with rows in it; rows of a refused partition are dropped. */
  setWriteGuard(guard: (partition: number) => boolean): void {
    this.writeGuard = guard;
  }

  /**
   * Resolves once QuestDB confirmed every row written before the call; rejects with HUB_ERR_FLUSH_FAILED otherwise
   * (the rows stay buffered and the next flush sends them). Calls are queued, never concurrent.
   */
  flush(): Promise<void> {
    // A flush that is queued and has not started yet sends what was written before this call too: share it, so
    // many partitions flushing at once make one QuestDB transaction, not one each.
    if (this.queued) return this.queued;
    const start = () => {
      this.queued = undefined;
      return this.send();
    };
    const run = this.tail.then(start, start);
    this.queued = run;
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
    await this.addAggregateColumns([...this.pending.values()].map((entry) => entry.row));
    // The guard last, just before the bytes go out: nothing between here and the request waits for I/O.
    const batch = this.guardedBatch();
    if (batch.length === 0) return;
    // Encoded afresh from `pending` each time (a newer revision of a row replaces the older one), so the bytes a
    // failed request left in the writer are dropped first.
    this.sender.reset();
    const writtenAt = this.options.nowMicros();
    for (const [id, entry] of batch) {
      try {
        writeAnalyticsRow(this.sender, entry.row, writtenAt);
      } catch (error) {
        // Only the open row is lost: the rows closed before it stay in the request.
        this.sender.abortRow();
        this.options.log.error({ table: entry.row.table, ts: entry.row.ts, err: errorMessage(error) }, 'ILP writer cannot encode analytics row; dropped');
        if (this.pending.get(id) === entry) this.pending.delete(id);
      }
    }
    try {
      await this.sender.flush();
    } catch (error) {
      throw new HubError(HubErrorCode.FLUSH_FAILED, `writing ${batch.length} analytics rows to QuestDB failed: ${errorMessage(error)}`, { cause: error });
    }
    // A row rewritten while the request was in flight stays for the next flush.
    for (const [id, entry] of batch) if (this.pending.get(id) === entry) this.pending.delete(id);
  }

  /** The pending rows, minus (and without) those of partitions the write guard refuses now. */
  private guardedBatch(): Array<[string, PendingRow]> {
    const verdicts = new Map<number, boolean>();
    const allowed = (partition: number | undefined): boolean => {
      if (partition === undefined) return true;
      let verdict = verdicts.get(partition);
      if (verdict === undefined) {
        verdict = this.writeGuard(partition);
        verdicts.set(partition, verdict);
      }
      return verdict;
    };
    const batch: Array<[string, PendingRow]> = [];
    const refused = new Map<number, number>();
    for (const [id, entry] of [...this.pending]) {
      if (allowed(entry.partition)) {
        batch.push([id, entry]);
        continue;
      }
      if (this.pending.get(id) === entry) this.pending.delete(id);
      refused.set(entry.partition!, (refused.get(entry.partition!) ?? 0) + 1);
    }
    for (const [partition, rows] of refused) {
      this.options.log.warn({ partition, rows }, 'analytics rows of a partition this worker no longer owns dropped, not written (the next owner replays them)');
    }
    return batch;
  }

  /**
   * Adds the DOUBLE column of every aggregate the rows name that the table does not have yet (a rule added or
   * changed at run time), so ILP never creates a column with a type of its choosing. Throws HUB_ERR_TABLE_SETUP
   * when a column of that name exists with another type (the flush fails, and says why, until it is fixed).
   */
  private async addAggregateColumns(rows: readonly AnalyticsRow[]): Promise<void> {
    const missing = new Set<string>();
    for (const row of rows) {
      if (row.table !== this.tables.windowResults) continue;
      for (const field of row.fields) if (field.kind === 'double' && !this.windowColumns.has(field.name.toLowerCase())) missing.add(field.name);
    }
    if (missing.size === 0) return;
    const table = this.tables.windowResults;
    // Types first: on a WAL table an ALTER is applied asynchronously, so SHOW COLUMNS right after it may not list
    // the column yet; the ALTER itself is sequenced before the rows that follow it.
    const types = new Map((await showColumns(this.rest, table)).map((c) => [c.name.toLowerCase(), c.type]));
    for (const name of missing) {
      const type = types.get(name.toLowerCase());
      if (type !== undefined && type !== 'DOUBLE') {
        throw new HubError(HubErrorCode.TABLE_SETUP, `column ${name} of ${table} is ${type}; the aggregate ${name} needs DOUBLE (rename the aggregate or the column)`);
      }
    }
    const added: string[] = [];
    for (const name of missing) {
      if (!types.has(name.toLowerCase())) {
        await this.rest.exec(addColumnSql(table, { name, sqlType: 'DOUBLE' }));
        added.push(name);
      }
      this.windowColumns.add(name.toLowerCase());
    }
    if (added.length > 0) this.options.log.info({ table, columns: added }, 'aggregate columns added');
  }
}
