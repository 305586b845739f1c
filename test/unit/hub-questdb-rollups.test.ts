import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import { HubError, HubErrorCode } from '../../hub/src/errors.js';
import { analyticsTableSpecs } from '../../hub/src/sinks/questdb-analytics-sink.js';
import type { ExecResult } from '../../hub/src/sinks/questdb-rest.js';
import {
  baseColumns,
  checkRollupSpecs,
  createRollupSql,
  ensureRollups,
  rollUp,
  rollupQuery,
  rollupSpecs,
  type RollupSpec,
} from '../../hub/src/sinks/questdb-rollups.js';
import { tableSpecs } from '../../hub/src/sinks/questdb-tables.js';

const log = pino({ level: 'silent' });

test('the hourly telemetry view reads the table, the daily one the hourly view, with the average rebuilt from sum and count', () => {
  const specs = rollupSpecs();
  assert.deepEqual(specs.map((s) => `${s.view} <- ${s.base}`), [
    'device_telemetry_1h <- device_telemetry',
    'app_events_1h <- app_events',
    'alerts_1h <- alerts',
    'device_telemetry_1d <- device_telemetry_1h',
    'app_events_1d <- app_events_1h',
    'alerts_1d <- alerts_1h',
  ]);
  const [hourly, , , daily] = specs;
  assert.equal(
    createRollupSql(hourly!),
    'CREATE MATERIALIZED VIEW IF NOT EXISTS "device_telemetry_1h" REFRESH EVERY 1m AS (SELECT "ts", "device_id", "metric", "unit", ' +
      'count() "readings", count("value") "value_count", sum("value") "value_sum", avg("value") "value_avg", min("value") "value_min", ' +
      'max("value") "value_max" FROM "device_telemetry" SAMPLE BY 1h) PARTITION BY DAY',
  );
  assert.equal(
    createRollupSql(daily!),
    'CREATE MATERIALIZED VIEW IF NOT EXISTS "device_telemetry_1d" REFRESH IMMEDIATE AS (SELECT "ts", "device_id", "metric", "unit", ' +
      'sum("readings") "readings", sum("value_count") "value_count", sum("value_sum") "value_sum", ' +
      'sum("value_sum") / sum("value_count")::double "value_avg", min("value_min") "value_min", max("value_max") "value_max" ' +
      'FROM "device_telemetry_1h" SAMPLE BY 1d) PARTITION BY MONTH',
  );
  assert.match(createRollupSql(rollupSpecs(undefined, { refreshEveryMinutes: 0 })[0]!), /REFRESH IMMEDIATE AS/);
  assert.match(createRollupSql(rollupSpecs(undefined, { refreshEveryMinutes: 5 })[1]!), /"app_events_1h" REFRESH EVERY 5m AS/);
});

test('every column the default rollups read exists in the tables the hub makes from the schemas and for analytics', () => {
  const columns = new Map<string, Set<string>>();
  for (const spec of tableSpecs(loadSchemaCatalog())) columns.set(spec.table, new Set(spec.columns.map((c) => c.name)));
  for (const spec of analyticsTableSpecs()) columns.set(spec.table, new Set(spec.columns.map((c) => c.name)));
  const specs = rollupSpecs();
  for (const spec of specs) {
    const fromView = specs.find((s) => s.view === spec.base);
    const available = fromView ? new Set(['ts', ...fromView.dimensions, ...fromView.measures.map((m) => m.name)]) : columns.get(spec.base);
    assert.ok(available, `${spec.base} is a table the hub creates`);
    for (const column of ['ts', ...baseColumns(spec)]) assert.ok(available.has(column), `${spec.view}: ${spec.base} has ${column}`);
  }
  assert.deepEqual(checkRollupSpecs(specs), []);
});

test('a measure that cannot be added up from hours to days is refused', () => {
  const hourly: RollupSpec = {
    view: 'x_1h',
    base: 'x',
    interval: '1h',
    dimensions: ['k'],
    measures: [{ name: 'v_avg', fn: 'avg', column: 'v' }],
    partitionBy: 'DAY',
    refresh: { kind: 'every', minutes: 1 },
  };
  assert.throws(() => rollUp(hourly, 'x_1d', '1d', 'MONTH', { kind: 'immediate' }), /avg\(v\) without sum\(v\) and count\(v\)/);
});

test('names that are not plain identifiers, duplicates and a view before its base are refused', () => {
  const [hourly, , , daily] = rollupSpecs();
  const bad: RollupSpec = { ...hourly!, view: 'x"; drop table y; --', dimensions: ['device_id', 'device_id'] };
  const problems = checkRollupSpecs([daily!, hourly!, bad]);
  assert.ok(problems.some((p) => /is not a plain lower-case identifier/.test(p)), problems.join('\n'));
  assert.ok(problems.some((p) => /device_id appear twice/.test(p)), problems.join('\n'));
  assert.ok(problems.some((p) => /reads device_telemetry_1h, which comes after it/.test(p)), problems.join('\n'));
});

/** A QuestDB stand-in: tables() and materialized_views() from the given state, SHOW COLUMNS, and every DDL recorded. */
function fakeRest(state: {
  tables: Record<string, string[]>;
  views?: Array<{ view: string; base: string; sql: string; refresh: 'immediate' | 'timer'; minutes?: number; status?: string }>;
  refuseCreate?: (sql: string) => string | undefined;
}) {
  const statements: string[] = [];
  const views = [...(state.views ?? [])];
  const rest = {
    async exec(sql: string): Promise<ExecResult> {
      if (sql.startsWith('SELECT table_name, table_type FROM tables()')) {
        return {
          columns: [{ name: 'table_name', type: 'STRING' }, { name: 'table_type', type: 'CHAR' }],
          dataset: [...Object.keys(state.tables).map((t) => [t, 'T']), ...views.map((v) => [v.view, 'M'])],
        };
      }
      if (sql.startsWith('SELECT view_name')) {
        return {
          dataset: views.map((v) => [v.view, v.base, v.sql, v.refresh, v.minutes ?? 0, v.refresh === 'timer' ? 'MINUTE' : null, v.status ?? 'valid', null]),
        };
      }
      const show = /^SHOW COLUMNS FROM "(\w+)"$/.exec(sql);
      if (show) {
        const view = rollupSpecs().find((s) => s.view === show[1] && views.some((v) => v.view === s.view));
        const names = view ? ['ts', ...view.dimensions, ...view.measures.map((m) => m.name)] : state.tables[show[1]!];
        if (!names) throw new HubError(HubErrorCode.QUESTDB_REFUSED, `table does not exist [table=${show[1]}]`);
        return {
          columns: ['column', 'type', 'designated', 'upsertKey'].map((name) => ({ name, type: 'STRING' })),
          dataset: names.map((n) => [n, 'DOUBLE', n === 'ts', false]),
        };
      }
      statements.push(sql);
      const refused = state.refuseCreate?.(sql);
      if (refused) throw new HubError(HubErrorCode.QUESTDB_REFUSED, refused);
      const created = /^CREATE MATERIALIZED VIEW IF NOT EXISTS "(\w+)"/.exec(sql);
      if (created) {
        const spec = rollupSpecs().find((s) => s.view === created[1])!;
        views.push({ view: spec.view, base: spec.base, sql: rollupQuery(spec), refresh: spec.refresh.kind === 'every' ? 'timer' : 'immediate', minutes: 1 });
      }
      return { ddl: 'OK' };
    },
  };
  return { rest, statements, views };
}

const telemetryColumns = ['ts', 'device_id', 'metric', 'unit', 'value'];
const appColumns = ['ts', 'event_type', 'device_type', 'location'];

test('without the alerts table its two rollups are skipped and the others created; run again, nothing is executed', async () => {
  const fake = fakeRest({ tables: { device_telemetry: telemetryColumns, app_events: appColumns } });
  const first = await ensureRollups(fake.rest, rollupSpecs(), log);
  assert.deepEqual(first.map((s) => [s.view, s.state]), [
    ['device_telemetry_1h', 'created'],
    ['app_events_1h', 'created'],
    ['alerts_1h', 'skipped'],
    ['device_telemetry_1d', 'created'],
    ['app_events_1d', 'created'],
    ['alerts_1d', 'skipped'],
  ]);
  assert.equal(first[2]?.reason, 'base table alerts does not exist');
  assert.equal(first[5]?.reason, 'its base rollup alerts_1h is not there');
  assert.equal(fake.statements.length, 4);
  fake.statements.length = 0;
  const second = await ensureRollups(fake.rest, rollupSpecs(), log);
  assert.deepEqual(second.filter((s) => s.state !== 'skipped').map((s) => s.state), ['exists', 'exists', 'exists', 'exists']);
  assert.deepEqual(fake.statements, []);
});

test('a base without a column the rollup needs: skipped, with the column named', async () => {
  const fake = fakeRest({ tables: { device_telemetry: ['ts', 'device_id', 'metric', 'value'], app_events: appColumns } });
  const [telemetry] = await ensureRollups(fake.rest, rollupSpecs(), log);
  assert.deepEqual(telemetry, { view: 'device_telemetry_1h', base: 'device_telemetry', state: 'skipped', reason: 'device_telemetry has no column unit' });
});

test('a view with another query is kept and reported; another refresh strategy is changed in place', async () => {
  const [hourly] = rollupSpecs();
  const fake = fakeRest({
    tables: { device_telemetry: telemetryColumns, app_events: appColumns },
    views: [{ view: 'device_telemetry_1h', base: 'device_telemetry', sql: 'SELECT ts, count() n FROM device_telemetry SAMPLE BY 1h', refresh: 'immediate' }],
  });
  const [telemetry] = await ensureRollups(fake.rest, [hourly!], log);
  assert.equal(telemetry?.state, 'altered');
  assert.match(telemetry?.reason ?? '', /exists with another query .*DROP MATERIALIZED VIEW device_telemetry_1h/);
  assert.deepEqual(fake.statements, ['ALTER MATERIALIZED VIEW "device_telemetry_1h" SET REFRESH EVERY 1m']);
});

test('a view created by another hub in the meantime counts as existing; a refused CREATE is reported, not thrown', async () => {
  const [hourly, app] = rollupSpecs();
  let raced = false;
  const fake = fakeRest({
    tables: { device_telemetry: telemetryColumns, app_events: appColumns },
    refuseCreate: (sql) => {
      if (sql.includes('"device_telemetry_1h"') && !raced) {
        raced = true;
        fake.views.push({ view: hourly!.view, base: hourly!.base, sql: rollupQuery(hourly!), refresh: 'timer', minutes: 1 });
        return 'materialized view already exists';
      }
      return sql.includes('"app_events_1h"') ? 'some QuestDB refusal' : undefined;
    },
  });
  const result = await ensureRollups(fake.rest, [hourly!, app!], log);
  assert.deepEqual(result.map((s) => [s.view, s.state]), [['device_telemetry_1h', 'exists'], ['app_events_1h', 'failed']]);
  assert.match(result[1]?.reason ?? '', /some QuestDB refusal/);
});

test('an unreachable QuestDB is thrown, for the caller to retry', async () => {
  const rest = {
    exec: async (): Promise<ExecResult> => {
      throw new HubError(HubErrorCode.QUESTDB_UNAVAILABLE, 'not reachable');
    },
  };
  await assert.rejects(ensureRollups(rest, rollupSpecs(), log), (error: unknown) => error instanceof HubError && error.code === HubErrorCode.QUESTDB_UNAVAILABLE);
});
