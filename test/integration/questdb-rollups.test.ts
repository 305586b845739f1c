/**
 * The OLAP rollups (hub/src/sinks/questdb-rollups.ts) against the real QuestDB, under the names the hub uses:
 * - the base tables are made as the hub makes them (ensureTables over the schema catalogue, the analytics sink for
 *   alerts), and rows reach them through the hub's own writers (QuestDbSink for events, the analytics sink for alerts);
 * - ensureRollups creates the views, and a second call finds them all and changes nothing;
 * - some rows are there before the views exist (initial refresh), more come after (incremental refresh): rows in a
 *   new hour and a new day, late rows into an hour already rolled up, and a replay of events already stored (dedup:
 *   counted once);
 * - every hourly and daily rollup row of this run equals a GROUP BY (SAMPLE BY) computed directly over the base table,
 *   and an offline computation of the rows written: counts exact, doubles within 1e-9 (min and max exact);
 * - a query over 90 days of one device's readings is timed over the base table and over the daily view (printed, not
 *   asserted).
 * Every value that identifies this run's rows (device ids, event types, rules) carries a run id, and event times are in
 * the past, so other tests' rows and earlier runs on the same stack do not disturb the comparison.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import type { EventBatch, WireEvent } from '../../shared/wire.js';
import type { Alert, Severity } from '../../hub/src/operators/operator.js';
import { createQuestDbAnalyticsSink, type QuestDbAnalyticsSink } from '../../hub/src/sinks/questdb-analytics-sink.js';
import { QuestDbRest } from '../../hub/src/sinks/questdb-rest.js';
import {
  createRollupSql,
  ensureRollups,
  listRollups,
  refreshRollupSql,
  rollupSpecs,
  type RollupSpec,
} from '../../hub/src/sinks/questdb-rollups.js';
import { RowMappings } from '../../hub/src/sinks/questdb-rows.js';
import { createQuestDbSink, type QuestDbSink } from '../../hub/src/sinks/questdb-sink.js';
import { ensureTables, tableSpecs } from '../../hub/src/sinks/questdb-tables.js';
import { testStack } from '../support/env.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const runId = `${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
const log = pino({ level: 'silent' });
const rest = new QuestDbRest({ httpUrl: stack.questdbHttp, timeoutMs: 60_000 });
const specs = rollupSpecs();
const catalog = loadSchemaCatalog();

const HOUR = 3_600_000;
/** Event times: two hours on one day, two on the next (UTC), months before any test runs. */
const D1_22 = Date.UTC(2026, 0, 20, 22, 0, 0);
const D1_23 = D1_22 + HOUR;
const D2_00 = D1_22 + 2 * HOUR;
const D2_05 = D1_22 + 7 * HOUR;

const devices = [`rollup-${runId}-a`, `rollup-${runId}-b`];
const bulkDevice = `rollup-${runId}-bulk`;
const eventTypes = [`rollup-${runId}-click`, `rollup-${runId}-view`];
const rules = [`rollup-${runId}-hot`, `rollup-${runId}-silent`];
const inList = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(', ');

/** Deterministic pseudo-random numbers (mulberry32), so a failure can be reproduced with the same run id. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = random(Number.parseInt(runId.slice(-6), 36));

// ---------------------------------------------------------------------------------------------------------- input

interface Reading {
  id: string;
  ts: number;
  device: string;
  metric: string;
  unit: string;
  value: number;
}
interface AppEvent {
  id: string;
  ts: number;
  type: string;
  user: string;
  deviceType?: string;
  location?: string;
}

let seq = 0;
function readings(hourStart: number, count: number): Reading[] {
  const out: Reading[] = [];
  for (let i = 0; i < count; i++) {
    const device = devices[i % devices.length]!;
    const [metric, unit] = i % 7 === 0 ? ['temperature', 'F'] : i % 2 === 0 ? ['temperature', 'C'] : ['humidity', '%'];
    out.push({
      id: `rollup-${runId}-r${seq++}`,
      ts: hourStart + Math.floor(rnd() * HOUR),
      device,
      metric,
      unit,
      value: Math.round((rnd() * 140 - 40) * 1e6) / 1e6,
    });
  }
  return out;
}

function appEvents(hourStart: number, count: number): AppEvent[] {
  const deviceTypes = ['ios', 'android', undefined];
  const locations = ['berlin', 'lisbon', undefined];
  const out: AppEvent[] = [];
  for (let i = 0; i < count; i++) {
    const deviceType = deviceTypes[Math.floor(rnd() * 3)];
    const location = locations[Math.floor(rnd() * 3)];
    out.push({
      id: `rollup-${runId}-e${seq++}`,
      ts: hourStart + Math.floor(rnd() * HOUR),
      type: eventTypes[Math.floor(rnd() * 2)]!,
      user: `user-${Math.floor(rnd() * 20)}`,
      ...(deviceType ? { deviceType } : {}),
      ...(location ? { location } : {}),
    });
  }
  return out;
}

function alerts(hourStart: number, count: number): Alert[] {
  const severities: Severity[] = ['info', 'warning', 'critical'];
  return Array.from({ length: count }, (_, i) => ({
    type: 'alert',
    rule: rules[i % 2]!,
    key: `key-${runId}-${seq++}`,
    severity: severities[Math.floor(rnd() * 3)]!,
    ts: hourStart + Math.floor(rnd() * HOUR),
    message: 'rollup test',
    details: {},
  }));
}

const micros = (ms: number): number => ms * 1000;

function telemetryEvent(r: Reading): WireEvent {
  return {
    id: r.id,
    type: 'device.telemetry',
    sv: 1,
    key: r.device,
    ts: micros(r.ts),
    its: micros(r.ts),
    src: 'test',
    body: { device_id: r.device, timestamp: r.ts, metric: r.metric, value: r.value, unit: r.unit },
  };
}

function appEvent(e: AppEvent): WireEvent {
  const context: Record<string, string> = {};
  if (e.deviceType) context.device_type = e.deviceType;
  if (e.location) context.location = e.location;
  return {
    id: e.id,
    type: 'app.event',
    sv: 1,
    key: e.user,
    ts: micros(e.ts),
    its: micros(e.ts),
    src: 'test',
    body: { event_id: e.id, event_type: e.type, user_id: e.user, session_id: 's', timestamp: e.ts, properties: {}, context },
  };
}

// -------------------------------------------------------------------------------------------------------- writers

let sink: QuestDbSink;
let analyticsSink: QuestDbAnalyticsSink;
const written = { readings: new Map<string, Reading>(), appEvents: new Map<string, AppEvent>(), alerts: new Map<string, Alert>() };

async function writeEvents(events: WireEvent[]): Promise<void> {
  const batch: EventBatch = { v: 1, agent: `rollup-${runId}`, partition: 0, first: 1, last: events.length, events };
  const result = sink.write(batch);
  assert.equal(result.rows, events.length, `every event became a row: ${JSON.stringify(result.skipped.slice(0, 3))}`);
  await sink.flush();
}

async function write(input: { readings?: Reading[]; appEvents?: AppEvent[]; alerts?: Alert[] }): Promise<void> {
  const events = [...(input.readings ?? []).map(telemetryEvent), ...(input.appEvents ?? []).map(appEvent)];
  if (events.length > 0) await writeEvents(events);
  for (const r of input.readings ?? []) written.readings.set(r.id, r);
  for (const e of input.appEvents ?? []) written.appEvents.set(e.id, e);
  if (input.alerts && input.alerts.length > 0) {
    analyticsSink.write(input.alerts);
    await analyticsSink.flush();
    for (const a of input.alerts) written.alerts.set(`${a.ts}|${a.rule}|${a.key}`, a);
  }
}

// ------------------------------------------------------------------------------------------------- waiting, rows

/** Waits until QuestDB applied every committed WAL transaction of each table (rows are visible after that). */
async function applied(tables: readonly string[]): Promise<void> {
  const read = () => query<{ name: string; writerTxn: number; sequencerTxn: number }>(stack.questdbHttp, `select name, writerTxn, sequencerTxn from wal_tables() where name in (${inList(tables)})`);
  const state = await waitFor(read, (rows) => rows.length === tables.length && rows.every((r) => Number(r.writerTxn) === Number(r.sequencerTxn)), 60_000, 100);
  assert.equal(state.filter((r) => Number(r.writerTxn) === Number(r.sequencerTxn)).length, tables.length, `WAL applied: ${JSON.stringify(state)}`);
}

/**
 * Brings every rollup up to date with its base: waits for the base tables' WAL, asks the timer-refreshed (hourly)
 * views to refresh now, then waits until every view has refreshed up to its base's last transaction and applied its
 * own WAL, twice in a row (a daily view refreshes after its hourly one committed).
 */
async function refreshed(): Promise<void> {
  await applied([...new Set(specs.filter((s) => !specs.some((o) => o.view === s.base)).map((s) => s.base))]);
  for (const spec of specs) if (spec.refresh.kind === 'every') await rest.exec(refreshRollupSql(spec.view));
  const views = specs.map((s) => s.view);
  const read = async () => {
    const state = await query<{ view_name: string; view_status: string; refresh_base_table_txn: number; base_table_txn: number }>(
      stack.questdbHttp,
      `select view_name, view_status, refresh_base_table_txn, base_table_txn from materialized_views() where view_name in (${inList(views)})`,
    );
    const wal = await query<{ writerTxn: number; sequencerTxn: number }>(stack.questdbHttp, `select writerTxn, sequencerTxn from wal_tables() where name in (${inList(views)})`);
    return {
      state,
      done:
        state.length === views.length &&
        state.every((v) => v.view_status === 'valid' && Number(v.refresh_base_table_txn) === Number(v.base_table_txn)) &&
        wal.every((w) => Number(w.writerTxn) === Number(w.sequencerTxn)),
    };
  };
  let stable = 0;
  const deadline = Date.now() + 120_000;
  let last: Awaited<ReturnType<typeof read>> | undefined;
  while (stable < 2 && Date.now() < deadline) {
    last = await read();
    stable = last.done ? stable + 1 : 0;
    await new Promise((r) => setTimeout(r, 300));
  }
  assert.equal(stable, 2, `views refreshed: ${JSON.stringify(last?.state)}`);
}

type Row = Record<string, unknown>;

/** Rows keyed by bucket and dimensions, for comparing two result sets whatever their order. */
function byKey(rows: readonly Row[], dimensions: readonly string[]): Map<string, Row> {
  const map = new Map<string, Row>();
  for (const row of rows) {
    const key = [String(row.ts), ...dimensions.map((d) => String(row[d] ?? '<null>'))].join(' | ');
    assert.ok(!map.has(key), `one row per bucket and key: ${key}`);
    map.set(key, row);
  }
  return map;
}

/** Same keys, counts exactly equal, doubles within 1e-9, min and max exactly equal. */
function assertSameRollup(what: string, actual: Map<string, Row>, expected: Map<string, Row>, measures: readonly string[]): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: the same buckets and keys`);
  for (const [key, want] of expected) {
    const got = actual.get(key)!;
    for (const m of measures) {
      const [g, w] = [Number(got[m]), Number(want[m])];
      if (/count|readings|events|alerts|_min|_max/.test(m)) assert.equal(g, w, `${what} ${key}: ${m}`);
      else assert.ok(Math.abs(g - w) <= 1e-9, `${what} ${key}: ${m} ${g} vs ${w} (difference ${Math.abs(g - w)})`);
    }
  }
}

const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
const floorTo = (ms: number, interval: '1h' | '1d'): number => ms - (ms % (interval === '1h' ? HOUR : 24 * HOUR));

/** The rollup of the rows this test wrote, computed here. */
function offline(kind: 'telemetry' | 'app' | 'alerts', interval: '1h' | '1d'): Map<string, Row> {
  const groups = new Map<string, Row & { values?: number[] }>();
  const add = (ts: number, dims: Record<string, string | null>, value?: number): void => {
    const row = { ts: iso(floorTo(ts, interval)), ...dims };
    const key = [row.ts, ...Object.values(dims).map((d) => d ?? '<null>')].join(' | ');
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { ...row, n: 0, values: [] }));
    group.n = Number(group.n) + 1;
    if (value !== undefined) group.values!.push(value);
  };
  if (kind === 'telemetry') for (const r of written.readings.values()) add(r.ts, { device_id: r.device, metric: r.metric, unit: r.unit }, r.value);
  if (kind === 'app') for (const e of written.appEvents.values()) add(e.ts, { event_type: e.type, device_type: e.deviceType ?? null, location: e.location ?? null });
  if (kind === 'alerts') for (const a of written.alerts.values()) add(a.ts, { rule: a.rule, severity: a.severity });
  const out = new Map<string, Row>();
  for (const [key, { values, n, ...row }] of groups) {
    if (kind === 'telemetry') {
      const sum = values!.reduce((s, v) => s + v, 0);
      out.set(key, { ...row, readings: n, value_count: values!.length, value_sum: sum, value_avg: sum / values!.length, value_min: Math.min(...values!), value_max: Math.max(...values!) });
    } else out.set(key, { ...row, [kind === 'app' ? 'events' : 'alerts']: n });
  }
  return out;
}

interface Check {
  kind: 'telemetry' | 'app' | 'alerts';
  table: string;
  dimensions: string[];
  measures: string[];
  /** The hourly spec's aggregates, written out again here, over the base table. */
  direct: string;
  where: string;
}

const checks: Check[] = [
  {
    kind: 'telemetry',
    table: 'device_telemetry',
    dimensions: ['device_id', 'metric', 'unit'],
    measures: ['readings', 'value_count', 'value_sum', 'value_avg', 'value_min', 'value_max'],
    direct: 'count() readings, count(value) value_count, sum(value) value_sum, avg(value) value_avg, min(value) value_min, max(value) value_max',
    where: `device_id in (${inList(devices)})`,
  },
  {
    kind: 'app',
    table: 'app_events',
    dimensions: ['event_type', 'device_type', 'location'],
    measures: ['events'],
    direct: 'count() events',
    where: `event_type in (${inList(eventTypes)})`,
  },
  {
    kind: 'alerts',
    table: 'alerts',
    dimensions: ['rule', 'severity'],
    measures: ['alerts'],
    direct: 'count() alerts',
    where: `rule in (${inList(rules)})`,
  },
];

async function compareAll(): Promise<void> {
  const compared: string[] = [];
  for (const check of checks) {
    for (const interval of ['1h', '1d'] as const) {
      const view = `${check.table}_${interval}`;
      const columns = ['ts', ...check.dimensions, ...check.measures].join(', ');
      const fromView = byKey(await query(stack.questdbHttp, `select ${columns} from ${view} where ${check.where}`), check.dimensions);
      const direct = byKey(
        await query(stack.questdbHttp, `select ts, ${check.dimensions.join(', ')}, ${check.direct} from ${check.table} where ${check.where} sample by ${interval}`),
        check.dimensions,
      );
      assertSameRollup(`${view} vs sample by ${interval} over ${check.table}`, fromView, direct, check.measures);
      assertSameRollup(`${view} vs the rows written`, fromView, offline(check.kind, interval), check.measures);
      compared.push(`${view} ${fromView.size}`);
    }
  }
  console.log(`# rollup rows equal to SAMPLE BY over the base and to the offline computation: ${compared.join(', ')}`);
}

// ----------------------------------------------------------------------------------------------------------- tests

describe('QuestDB rollups (materialized views)', () => {
  before(async () => {
    await ensureTables(rest, tableSpecs(catalog), log);
    sink = await createQuestDbSink({
      httpUrl: stack.questdbHttp,
      requestTimeoutMs: 30_000,
      retryTimeoutMs: 5_000,
      mappings: new RowMappings(catalog),
      nowMicros: () => Date.now() * 1000,
      log,
    });
    analyticsSink = await createQuestDbAnalyticsSink({
      httpUrl: stack.questdbHttp,
      requestTimeoutMs: 30_000,
      retryTimeoutMs: 5_000,
      nowMicros: () => Date.now() * 1000,
      log,
    });
  });

  after(async () => {
    await sink?.close();
    await analyticsSink?.close();
  });

  test('rows written before the views exist are in them after their creation; a second ensureRollups changes nothing', async () => {
    await write({ readings: [...readings(D1_22, 120), ...readings(D1_23, 80)], appEvents: [...appEvents(D1_22, 150), ...appEvents(D1_23, 90)], alerts: alerts(D1_22, 12) });
    await applied(['device_telemetry', 'app_events', 'alerts']);

    const first = await ensureRollups(rest, specs, log);
    for (const setup of first) assert.ok(setup.state === 'created' || setup.state === 'exists', `${setup.view}: ${setup.state} ${setup.reason ?? ''}`);
    assert.deepEqual(first.map((s) => s.view), specs.map((s) => s.view));
    assert.deepEqual(first.filter((s) => s.reason !== undefined), [], 'no view differs from its spec');

    const second = await ensureRollups(rest, specs, log);
    assert.deepEqual(second.map((s) => [s.view, s.state, s.reason]), specs.map((s) => [s.view, 'exists', undefined]));

    const views = await listRollups(rest);
    for (const spec of specs) {
      const view = views.get(spec.view);
      assert.ok(view, `${spec.view} is a materialized view`);
      assert.equal(view.base, spec.base);
      assert.equal(view.refreshType, spec.refresh.kind === 'every' ? 'timer' : 'immediate', `${spec.view} refresh`);
    }
    printDdl(specs);

    await refreshed();
    await compareAll();
  });

  test('rows in a new hour and a new day, late rows and a replay are rolled up incrementally, the replay once', async () => {
    const replay = [...written.readings.values()].slice(0, 25);
    const replayApp = [...written.appEvents.values()].slice(0, 25);
    await write({
      readings: [...readings(D2_00, 90), ...readings(D2_05, 40), ...readings(D1_23, 30), ...replay],
      appEvents: [...appEvents(D2_00, 100), ...appEvents(D2_05, 30), ...appEvents(D1_22, 20), ...replayApp],
      alerts: [...alerts(D2_00, 9), ...alerts(D1_23, 5)],
    });
    await refreshed();
    await compareAll();

    const [total] = await query<{ n: number }>(stack.questdbHttp, `select sum(readings) n from device_telemetry_1d where device_id in (${inList(devices)})`);
    assert.equal(Number(total?.n), written.readings.size, 'each reading counted once, the replayed ones too');
    const hours = await query<{ ts: string }>(stack.questdbHttp, `select distinct ts from device_telemetry_1h where device_id in (${inList(devices)}) order by ts`);
    assert.deepEqual(hours.map((h) => h.ts), [D1_22, D1_23, D2_00, D2_05].map(iso), 'four hours');
    const days = await query<{ ts: string }>(stack.questdbHttp, `select distinct ts from app_events_1d where event_type in (${inList(eventTypes)}) order by ts`);
    assert.deepEqual(days.map((d) => d.ts), [floorTo(D1_22, '1d'), floorTo(D2_00, '1d')].map(iso), 'two days');
  });

  test('a query over 90 days: base table vs daily rollup (timed, printed)', async () => {
    const start = Date.UTC(2026, 5, 1);
    const rows = 1_000_000;
    const stepMicros = Math.floor((90 * 24 * HOUR * 1000) / rows);
    await rest.exec(
      `insert into device_telemetry (ts, event_id, device_id, metric, value, unit, agent_id, source, schema_version) ` +
        `select timestamp_sequence(${start * 1000}, ${stepMicros}), 'rollup-${runId}-bulk-' || x, '${bulkDevice}', ` +
        `rnd_symbol('temperature', 'humidity', 'pressure', 'co2'), rnd_double() * 100 - 20, 'u', 'rollup-${runId}', 'sql', 1 from long_sequence(${rows})`,
    );
    await refreshed();

    const base =
      `select ts, metric, count() readings, avg(value) value_avg, min(value) value_min, max(value) value_max ` +
      `from device_telemetry where device_id = '${bulkDevice}' sample by 1d`;
    const rollup =
      `select ts, metric, readings, value_avg, value_min, value_max from device_telemetry_1d where device_id = '${bulkDevice}'`;
    const fromBase = byKey(await query(stack.questdbHttp, base), ['metric']);
    const fromRollup = byKey(await query(stack.questdbHttp, rollup), ['metric']);
    assertSameRollup('90 days, daily', fromRollup, fromBase, ['readings', 'value_avg', 'value_min', 'value_max']);
    assert.equal([...fromRollup.values()].reduce((n, r) => n + Number(r.readings), 0), rows);

    const timed = async (sql: string): Promise<number> => {
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        await query(stack.questdbHttp, sql);
        times.push(performance.now() - t);
      }
      return times.sort((a, b) => a - b)[2]!;
    };
    const [tBase, tRollup] = [await timed(base), await timed(rollup)];
    const [{ n: baseRows } = { n: 0 }] = await query<{ n: number }>(stack.questdbHttp, 'select count() n from device_telemetry');
    console.log(
      `# daily stats of one device over 90 days (${rows.toLocaleString('en')} readings; device_telemetry holds ${Number(baseRows).toLocaleString('en')} rows): ` +
        `base table ${tBase.toFixed(1)} ms, device_telemetry_1d ${tRollup.toFixed(1)} ms (median of 5, over HTTP)`,
    );
  });
});

function printDdl(all: readonly RollupSpec[]): void {
  for (const spec of all) console.log(`# ${createRollupSql(spec)}`);
}
