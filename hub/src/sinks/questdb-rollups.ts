/**
 * OLAP rollups: QuestDB materialized views over the hub's tables, created by the hub at start (issue 7), so that BI
 * queries over months read a few rows per hour or day instead of every event.
 *
 *   device_telemetry_1h / _1d   per device_id, metric, unit: readings, value_count, value_sum, value_avg, value_min,
 *                               value_max. The telemetry tables have no device type or location (the schemas map
 *                               none), so there is no rollup by those; `unit` is a dimension so that readings of one
 *                               metric in two units are never averaged together.
 *   app_events_1h / _1d         per event_type, device_type, location (from the event's context; null when absent):
 *                               events.
 *   alerts_1h / _1d             per rule and severity: alerts.
 *
 * Shape (checked on QuestDB 9.3.4):
 * - An hourly view reads the base table (`SAMPLE BY 1h`); the daily view reads the hourly view (`SAMPLE BY 1d`), so a
 *   day is made of at most 24 rows per key, never of the raw events. Averages travel as sum and count: the daily
 *   `value_avg` is `sum(value_sum) / sum(value_count)`, exact up to floating-point rounding.
 * - An incremental refresh recomputes every bucket its new rows fall into, from all the rows of the bucket (seen in
 *   QuestDB's refresh log): one row committed into an hour of 5M events cost 0.2-0.5 s of recomputation
 *   (count/sum/avg/min/max), 5 s with an exact `count_distinct` over a VARCHAR. The hub commits several times per
 *   second, so a view refreshed on every commit (REFRESH IMMEDIATE) would recompute the current hour all the time.
 *   The hourly views therefore refresh on a timer (`REFRESH EVERY 1m` by default): one recomputation of the hours
 *   touched per minute. The daily views refresh IMMEDIATE, i.e. after each refresh of their hourly view, over at most
 *   24 rows per key. What a BI query sees lags the events by up to the timer interval plus the refresh time.
 * - Buckets are UTC hours and UTC days (SAMPLE BY's calendar alignment); weeks, months and years are sums of days.
 * - No distinct counts: they cannot be added up from hours to days, and were the expensive part (above). Distinct
 *   users per 10 s are in window_results (rule app-events-per-device-10s).
 * - Refresh reads the base table after dedup (`DEDUP UPSERT KEYS(ts, event_id)`), and rewrites whole buckets, so a
 *   replayed event is not counted twice, and a replaced row that changed its dimension moves to its new key.
 * - window_results gets no rollup: its rows already are window aggregates, with one column per aggregate that rules
 *   add at run time, and per-partition partial rows; the app_events rollups count the same events exactly.
 *
 * Idempotent (`CREATE MATERIALIZED VIEW IF NOT EXISTS`, and a view created meanwhile by another hub process counts
 * as existing). A view that exists with another query is left as it is, with a warning: dropping it would throw away
 * history the base table may no longer have (TTL), and rebuilding it re-reads the whole base table; a different
 * refresh strategy is changed in place (ALTER MATERIALIZED VIEW ... SET REFRESH), which costs nothing. A missing base
 * table (`alerts` in a hub without analytics) or column skips that rollup and the ones built on it. Rollups never
 * stop the hub: only an unreachable QuestDB throws (for the caller's retry); anything QuestDB refuses is logged.
 *
 * Names (views, tables, columns) come only from the specs in this file, never from event payloads, are checked
 * against a plain identifier pattern and quoted.
 */
import type { Logger } from '../../../shared/logger.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import type { QuestDbRest } from './questdb-rest.js';
import { quoteIdentifier, showColumns } from './questdb-tables.js';

export type RollupInterval = '1h' | '1d';
export type RollupPartitioning = 'DAY' | 'WEEK' | 'MONTH' | 'YEAR';
/** IMMEDIATE: after every commit to the base; every N minutes: one refresh of all commits since the last one. */
export type RollupRefresh = { kind: 'immediate' } | { kind: 'every'; minutes: number };

/** One column of a rollup. Only these shapes exist, so that every measure can be rolled up further or re-checked. */
export type RollupMeasure =
  /** count(): rows. */
  | { name: string; fn: 'count' }
  /** count(column) (non-null values), sum, avg, min, max of a base column. */
  | { name: string; fn: 'count' | 'sum' | 'avg' | 'min' | 'max'; column: string }
  /** sum(numerator) / sum(denominator): an average rebuilt from the sums and counts of a finer rollup. */
  | { name: string; fn: 'ratio'; numerator: string; denominator: string };

export interface RollupSpec {
  /** Name of the materialized view. */
  view: string;
  /** The table (or rollup view) it reads; its designated timestamp must be `ts`. */
  base: string;
  interval: RollupInterval;
  dimensions: readonly string[];
  measures: readonly RollupMeasure[];
  partitionBy: RollupPartitioning;
  refresh: RollupRefresh;
}

/** Tables the rollups read; tests use their own. */
export interface RollupBaseTables {
  /** @default device_telemetry */
  deviceTelemetry: string;
  /** @default app_events */
  appEvents: string;
  /** @default alerts */
  alerts: string;
}

export const DEFAULT_ROLLUP_BASES: Readonly<RollupBaseTables> = Object.freeze({
  deviceTelemetry: 'device_telemetry',
  appEvents: 'app_events',
  alerts: 'alerts',
});

export interface RollupOptions {
  /** Refresh interval of the hourly views, in minutes; 0 makes them refresh after every commit (IMMEDIATE). @default 1 */
  refreshEveryMinutes?: number;
}

/** The hourly and daily rollups of the hub's tables, hourly before daily (a daily view reads its hourly one). */
export function rollupSpecs(bases: RollupBaseTables = DEFAULT_ROLLUP_BASES, options: RollupOptions = {}): RollupSpec[] {
  const minutes = options.refreshEveryMinutes ?? 1;
  const hourlyRefresh: RollupRefresh = minutes > 0 ? { kind: 'every', minutes } : { kind: 'immediate' };
  const hourly: RollupSpec[] = [
    {
      view: `${bases.deviceTelemetry}_1h`,
      base: bases.deviceTelemetry,
      interval: '1h',
      dimensions: ['device_id', 'metric', 'unit'],
      measures: [
        { name: 'readings', fn: 'count' },
        { name: 'value_count', fn: 'count', column: 'value' },
        { name: 'value_sum', fn: 'sum', column: 'value' },
        { name: 'value_avg', fn: 'avg', column: 'value' },
        { name: 'value_min', fn: 'min', column: 'value' },
        { name: 'value_max', fn: 'max', column: 'value' },
      ],
      partitionBy: 'DAY',
      refresh: hourlyRefresh,
    },
    {
      view: `${bases.appEvents}_1h`,
      base: bases.appEvents,
      interval: '1h',
      dimensions: ['event_type', 'device_type', 'location'],
      measures: [{ name: 'events', fn: 'count' }],
      partitionBy: 'DAY',
      refresh: hourlyRefresh,
    },
    {
      view: `${bases.alerts}_1h`,
      base: bases.alerts,
      interval: '1h',
      dimensions: ['rule', 'severity'],
      measures: [{ name: 'alerts', fn: 'count' }],
      partitionBy: 'DAY',
      refresh: hourlyRefresh,
    },
  ];
  const daily = hourly.map((spec) => rollUp(spec, `${spec.base}_1d`, '1d', 'MONTH', { kind: 'immediate' }));
  return [...hourly, ...daily];
}

/**
 * The spec of a coarser rollup that reads `from` (a view) instead of its base table: counts and sums are summed,
 * minima and maxima taken again, averages rebuilt from the sum and count of the same column (which `from` must
 * have). Pure; throws on a measure that cannot be rolled up.
 */
export function rollUp(from: RollupSpec, view: string, interval: RollupInterval, partitionBy: RollupPartitioning, refresh: RollupRefresh): RollupSpec {
  const measureOf = (fn: 'count' | 'sum', column: string): string | undefined =>
    from.measures.find((m) => m.fn === fn && 'column' in m && m.column === column)?.name;
  const measures = from.measures.map((m): RollupMeasure => {
    switch (m.fn) {
      case 'count':
      case 'sum':
        return { name: m.name, fn: 'sum', column: m.name };
      case 'min':
      case 'max':
        return { name: m.name, fn: m.fn, column: m.name };
      case 'ratio':
        return m;
      case 'avg': {
        const numerator = measureOf('sum', m.column);
        const denominator = measureOf('count', m.column);
        if (numerator === undefined || denominator === undefined) {
          throw new HubError(
            HubErrorCode.TABLE_SETUP,
            `rollup ${view}: ${from.view}.${m.name} is avg(${m.column}) without sum(${m.column}) and count(${m.column}) beside it, so it cannot be rolled up`,
          );
        }
        return { name: m.name, fn: 'ratio', numerator, denominator };
      }
    }
  });
  return { view, base: from.view, interval, dimensions: [...from.dimensions], measures, partitionBy, refresh };
}

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;

/** What is wrong with the specs (names, duplicates, a daily view before its hourly one); empty when fine. Pure. */
export function checkRollupSpecs(specs: readonly RollupSpec[]): string[] {
  const problems: string[] = [];
  const views = new Set<string>();
  for (const spec of specs) {
    const where = `rollup ${JSON.stringify(spec.view)}`;
    const names = [spec.view, spec.base, ...spec.dimensions, ...spec.measures.map((m) => m.name), ...baseColumns(spec)];
    for (const name of names) if (!IDENTIFIER.test(name)) problems.push(`${where}: ${JSON.stringify(name)} is not a plain lower-case identifier`);
    if (views.has(spec.view)) problems.push(`${where} appears twice`);
    const output = ['ts', ...spec.dimensions, ...spec.measures.map((m) => m.name)];
    const twice = output.filter((name, i) => output.indexOf(name) !== i);
    if (twice.length > 0) problems.push(`${where}: column(s) ${[...new Set(twice)].join(', ')} appear twice`);
    if (spec.measures.length === 0) problems.push(`${where} has no measure`);
    if (spec.refresh.kind === 'every' && !(Number.isInteger(spec.refresh.minutes) && spec.refresh.minutes > 0)) {
      problems.push(`${where}: refresh every ${spec.refresh.minutes} minutes is not a positive whole number`);
    }
    const later = specs.findIndex((s) => s.view === spec.base);
    if (later > specs.indexOf(spec)) problems.push(`${where} reads ${spec.base}, which comes after it`);
    views.add(spec.view);
  }
  return problems;
}

/** Columns of the base that the rollup reads, besides `ts`. */
export function baseColumns(spec: RollupSpec): string[] {
  const columns = new Set(spec.dimensions);
  for (const m of spec.measures) {
    if (m.fn === 'ratio') {
      columns.add(m.numerator);
      columns.add(m.denominator);
    } else if ('column' in m) columns.add(m.column);
  }
  return [...columns];
}

function measureSql(m: RollupMeasure): string {
  const expression =
    m.fn === 'ratio'
      ? `sum(${quoteIdentifier(m.numerator)}) / sum(${quoteIdentifier(m.denominator)})::double`
      : 'column' in m
        ? `${m.fn}(${quoteIdentifier(m.column)})`
        : 'count()';
  return `${expression} ${quoteIdentifier(m.name)}`;
}

/** The view's query; QuestDB keeps this text as the view's `view_sql`, which is how a changed definition is noticed. */
export function rollupQuery(spec: RollupSpec): string {
  const columns = [quoteIdentifier('ts'), ...spec.dimensions.map(quoteIdentifier), ...spec.measures.map(measureSql)];
  return `SELECT ${columns.join(', ')} FROM ${quoteIdentifier(spec.base)} SAMPLE BY ${spec.interval}`;
}

function refreshSql(refresh: RollupRefresh): string {
  return refresh.kind === 'every' ? `REFRESH EVERY ${refresh.minutes}m` : 'REFRESH IMMEDIATE';
}

export function createRollupSql(spec: RollupSpec): string {
  return (
    `CREATE MATERIALIZED VIEW IF NOT EXISTS ${quoteIdentifier(spec.view)} ${refreshSql(spec.refresh)} ` +
    `AS (${rollupQuery(spec)}) PARTITION BY ${spec.partitionBy}`
  );
}

export function alterRollupRefreshSql(spec: RollupSpec): string {
  return `ALTER MATERIALIZED VIEW ${quoteIdentifier(spec.view)} SET ${refreshSql(spec.refresh)}`;
}

/** Asks QuestDB to refresh a view now with what its base got since the last refresh (asynchronous). */
export function refreshRollupSql(view: string): string {
  return `REFRESH MATERIALIZED VIEW ${quoteIdentifier(view)} INCREMENTAL`;
}

/** A materialized view as `materialized_views()` reports it. */
export interface ExistingRollup {
  view: string;
  base: string;
  sql: string;
  refreshType: string;
  /** Timer interval in minutes (refresh type `timer`), else 0. */
  timerMinutes: number;
  status: string;
  invalidationReason: string | null;
}

export type RollupState = 'created' | 'exists' | 'altered' | 'skipped' | 'failed';

export interface RollupSetup {
  view: string;
  base: string;
  state: RollupState;
  /** Why it was skipped or failed, or what differs from the spec (a view kept as it is). */
  reason?: string;
}

const TIMER_UNIT_MINUTES: Record<string, number> = { SECOND: 1 / 60, MINUTE: 1, HOUR: 60, DAY: 1440, WEEK: 10080 };

function sameRefresh(spec: RollupRefresh, existing: ExistingRollup): boolean {
  if (spec.kind === 'immediate') return existing.refreshType === 'immediate';
  return existing.refreshType === 'timer' && existing.timerMinutes === spec.minutes;
}

const normalized = (sql: string): string => sql.replace(/\s+/g, ' ').trim();

/**
 * Creates the rollups that are missing, in order, and checks the ones that exist (see the file comment). Throws
 * HUB_ERR_TABLE_SETUP on malformed specs, HUB_ERR_QUESTDB_UNAVAILABLE when QuestDB cannot be reached (retry);
 * everything else ends up in the returned states and the log.
 */
export async function ensureRollups(rest: Pick<QuestDbRest, 'exec'>, specs: readonly RollupSpec[], log: Logger): Promise<RollupSetup[]> {
  const problems = checkRollupSpecs(specs);
  if (problems.length > 0) throw new HubError(HubErrorCode.TABLE_SETUP, `rollup specs: ${problems.join('; ')}`);
  const objects = await listTables(rest);
  let views = await listRollups(rest);
  const usable = new Set<string>();
  const done: RollupSetup[] = [];
  const finish = (spec: RollupSpec, state: RollupState, reason?: string): void => {
    const setup: RollupSetup = { view: spec.view, base: spec.base, state, ...(reason !== undefined ? { reason } : {}) };
    if (state === 'skipped') log.info(setup, 'questdb rollup skipped');
    else if (state === 'failed') log.error(setup, 'questdb rollup failed');
    else if (reason !== undefined) log.warn(setup, 'questdb rollup kept, but not as specified');
    else log.info(setup, 'questdb rollup ready');
    if (state !== 'skipped' && state !== 'failed') usable.add(spec.view);
    done.push(setup);
  };

  for (const spec of specs) {
    const baseIsRollup = specs.some((s) => s.view === spec.base);
    if (baseIsRollup ? !usable.has(spec.base) : !objects.has(spec.base)) {
      finish(spec, 'skipped', baseIsRollup ? `its base rollup ${spec.base} is not there` : `base table ${spec.base} does not exist`);
      continue;
    }
    const kind = objects.get(spec.view);
    if (kind !== undefined && kind !== 'M') {
      finish(spec, 'failed', `a ${kind === 'V' ? 'view' : 'table'} named ${spec.view} exists; rename or drop it to get the rollup`);
      continue;
    }
    let existing = views.get(spec.view);
    if (!existing) {
      const present = new Set((await showColumns(rest, spec.base)).map((c) => c.name));
      const missing = ['ts', ...baseColumns(spec)].filter((c) => !present.has(c));
      if (missing.length > 0) {
        finish(spec, 'skipped', `${spec.base} has no column ${missing.join(', ')}`);
        continue;
      }
      try {
        await rest.exec(createRollupSql(spec));
        objects.set(spec.view, 'M');
        finish(spec, 'created');
        continue;
      } catch (error) {
        if (!(error instanceof HubError) || error.code !== HubErrorCode.QUESTDB_REFUSED) throw error;
        // Another hub process may have created it between our listing and our CREATE.
        views = await listRollups(rest);
        existing = views.get(spec.view);
        if (!existing) {
          finish(spec, 'failed', errorMessage(error));
          continue;
        }
      }
    }
    const notes: string[] = [];
    if (normalized(existing.sql) !== normalized(rollupQuery(spec))) {
      notes.push(
        `it exists with another query (${existing.sql}); kept as it is. To get this version: DROP MATERIALIZED VIEW ${spec.view}, ` +
          'and the next hub start creates it again from the whole base table',
      );
    }
    if (existing.status === 'invalid') {
      notes.push(`QuestDB marked it invalid (${existing.invalidationReason ?? 'no reason given'}); REFRESH MATERIALIZED VIEW ${spec.view} FULL rebuilds it`);
    }
    let state: RollupState = 'exists';
    if (!sameRefresh(spec.refresh, existing)) {
      try {
        await rest.exec(alterRollupRefreshSql(spec));
        state = 'altered';
      } catch (error) {
        if (!(error instanceof HubError) || error.code !== HubErrorCode.QUESTDB_REFUSED) throw error;
        notes.push(`its refresh could not be changed to ${refreshSql(spec.refresh)}: ${errorMessage(error)}`);
      }
    }
    finish(spec, state, notes.length > 0 ? notes.join('; ') : undefined);
  }
  return done;
}

/** Every table, view and materialized view by name, with its kind (`T`, `V`, `M`). */
async function listTables(rest: Pick<QuestDbRest, 'exec'>): Promise<Map<string, string>> {
  const result = await rest.exec('SELECT table_name, table_type FROM tables()');
  const names = (result.columns ?? []).map((c) => c.name);
  const [iName, iType] = [names.indexOf('table_name'), names.indexOf('table_type')];
  if (iName < 0 || iType < 0) throw new HubError(HubErrorCode.TABLE_SETUP, 'tables() has no table_name or table_type column');
  return new Map((result.dataset ?? []).map((row) => [String(row[iName]), String(row[iType])]));
}

/** The materialized views QuestDB has, by name. */
export async function listRollups(rest: Pick<QuestDbRest, 'exec'>): Promise<Map<string, ExistingRollup>> {
  const result = await rest.exec(
    'SELECT view_name, base_table_name, view_sql, refresh_type, timer_interval, timer_interval_unit, view_status, invalidation_reason FROM materialized_views()',
  );
  return new Map(
    (result.dataset ?? []).map((row) => {
      const [view, base, sql, refreshType, interval, unit, status, reason] = row;
      const rollup: ExistingRollup = {
        view: String(view),
        base: String(base),
        sql: String(sql ?? ''),
        refreshType: String(refreshType),
        timerMinutes: String(refreshType) === 'timer' ? Number(interval) * (TIMER_UNIT_MINUTES[String(unit)] ?? Number.NaN) : 0,
        status: String(status),
        invalidationReason: reason === null || reason === undefined ? null : String(reason),
      };
      return [rollup.view, rollup];
    }),
  );
}
