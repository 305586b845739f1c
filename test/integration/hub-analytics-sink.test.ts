/**
 * The analytics sink against the real QuestDB (tables of this run, created by the sink over REST):
 * - a window revised after its first flush, then the whole sequence replayed and flushed twice, leaves exactly one
 *   row per window, with the latest revision, its aggregates as columns (added by the sink);
 * - a session that absorbed another hides the absorbed session's rows (tombstones: `superseded`);
 * - an alert replayed leaves one row;
 * - creating the tables again is harmless.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { Alert, WindowResult } from '../../hub/src/operators/operator.js';
import { createQuestDbAnalyticsSink, type QuestDbAnalyticsSink } from '../../hub/src/sinks/questdb-analytics-sink.js';
import { testStack } from '../support/env.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const runId = Date.now().toString(36);
const tables = { windowResults: `wr_${runId}`, alerts: `al_${runId}` };
const log = pino({ level: 'silent' });
const T0 = Date.UTC(2026, 0, 15, 10, 0, 0);

let sink: QuestDbAnalyticsSink;

function openSink(): Promise<QuestDbAnalyticsSink> {
  return createQuestDbAnalyticsSink({
    httpUrl: stack.questdbHttp,
    requestTimeoutMs: 10_000,
    retryTimeoutMs: 2_000,
    tables,
    nowMicros: () => Date.now() * 1000,
    log,
  });
}

function windowResult(windowStart: number, values: WindowResult['values'], revision: number, extra: Partial<WindowResult> = {}): WindowResult {
  return { type: 'window_result', rule: `stats-${runId}`, key: 'dev-1', windowStart, windowEnd: windowStart + 10_000, values, final: false, revision, ...extra };
}

/** Waits until QuestDB applied every committed WAL transaction of the table (rows are visible after that). */
async function applied(table: string): Promise<void> {
  const state = await waitFor(
    () => query<{ writerTxn: number; sequencerTxn: number }>(stack.questdbHttp, `select writerTxn, sequencerTxn from wal_tables() where name = '${table}'`),
    (rows) => rows.length === 1 && Number(rows[0]!.writerTxn) === Number(rows[0]!.sequencerTxn),
    30_000,
    100,
  );
  assert.equal(state.length, 1, `table ${table} is not a WAL table`);
}

interface WindowRow {
  ts: string;
  rule: string;
  key: string;
  readings: number | null;
  avg_value: number | null;
  text_values: string | null;
  revision: number;
  final: boolean;
  superseded: boolean;
}

async function windowRows(): Promise<WindowRow[]> {
  await applied(tables.windowResults);
  return query<WindowRow & Record<string, unknown>>(stack.questdbHttp, `select * from ${tables.windowResults} order by ts`);
}

describe('QuestDB analytics sink', () => {
  before(async () => {
    sink = await openSink();
  });

  after(async () => {
    await sink?.close();
  });

  test('creating the tables again is harmless', async () => {
    const again = await openSink();
    await again.close();
    const columns = await query<{ column: string; upsertKey: boolean }>(stack.questdbHttp, `show columns from ${tables.windowResults}`);
    assert.deepEqual(
      columns.filter((c) => c.upsertKey).map((c) => c.column).sort(),
      ['key', 'rule', 'stream_partition', 'ts'],
    );
  });

  test('a revised window, replayed and flushed twice, leaves one row per window with the latest revision', async () => {
    const sequence: WindowResult[] = [
      windowResult(T0, { readings: 2, avg_value: 20 }, 0),
      windowResult(T0 + 10_000, { readings: 1, avg_value: 30 }, 0),
    ];
    sink.write(sequence);
    await sink.flush();
    const revised = windowResult(T0, { readings: 3, avg_value: 21, last_state: 'on' }, 1, { final: true });
    sink.write([revised]);
    await sink.flush();
    // A replay: the same outputs again, flushed twice.
    sink.write([...sequence, revised]);
    await sink.flush();
    sink.write([...sequence, revised]);
    await sink.flush();
    await sink.flush();

    const rows = await windowRows();
    assert.deepEqual(
      rows.map((r) => [r.readings, r.avg_value, r.text_values, Number(r.revision), r.final, r.superseded]),
      [
        [3, 21, '{"last_state":"on"}', 1, true, false],
        [1, 30, null, 0, false, false],
      ],
      'one row per window, the latest revision',
    );
    const columns = await query<{ column: string; type: string }>(stack.questdbHttp, `show columns from ${tables.windowResults}`);
    assert.deepEqual(
      columns.filter((c) => ['readings', 'avg_value'].includes(c.column)).map((c) => [c.column, c.type]),
      [
        ['readings', 'DOUBLE'],
        ['avg_value', 'DOUBLE'],
      ],
    );
  });

  test('a session that absorbed another hides the absorbed session\'s rows', async () => {
    const rule = `sessions-${runId}`;
    const start1 = T0 + 100_000;
    const start2 = T0 + 130_000;
    const session = (windowStart: number, windowEnd: number, events: number, replaces?: WindowResult['replaces']): WindowResult => ({
      type: 'window_result',
      rule,
      key: 'user-1',
      windowStart,
      windowEnd,
      values: { events },
      final: false,
      revision: 0,
      ...(replaces ? { replaces } : {}),
    });
    sink.write([session(start1, start1 + 10_000, 2), session(start2, start2 + 10_000, 3)]);
    await sink.flush();
    // A late event bridged them: one session from start1, replacing the one at start2.
    const merged = session(start1, start2 + 10_000, 6, [{ windowStart: start2, windowEnd: start2 + 10_000 }]);
    sink.write([merged]);
    await sink.flush();
    // Replayed: still hidden.
    sink.write([session(start1, start1 + 10_000, 2), session(start2, start2 + 10_000, 3), merged]);
    await sink.flush();

    await applied(tables.windowResults);
    const visible = await query<{ ts: string; events: number }>(
      stack.questdbHttp,
      `select ts, events from ${tables.windowResults} where rule = '${rule}' and not superseded order by ts`,
    );
    assert.deepEqual(visible.map((r) => r.events), [6]);
    const all = await query<{ n: number }>(stack.questdbHttp, `select count() n from ${tables.windowResults} where rule = '${rule}'`);
    assert.equal(Number(all[0]!.n), 2, 'the absorbed session is one tombstone row, not a second copy');
  });

  test('an alert replayed leaves one row', async () => {
    const alert: Alert = {
      type: 'alert',
      rule: `overheating-${runId}`,
      key: 'dev-9',
      severity: 'critical',
      ts: T0 + 5_000,
      message: 'temperature above 80 for 60 s',
      details: { max: 91.5, unit: 'C' },
    };
    sink.write([alert]);
    await sink.flush();
    sink.write([alert]);
    await sink.flush();
    await sink.flush();
    await applied(tables.alerts);
    const rows = await query<{ rule: string; key: string; severity: string; message: string; details: string }>(
      stack.questdbHttp,
      `select rule, key, severity, message, details from ${tables.alerts}`,
    );
    assert.deepEqual(rows, [{ rule: alert.rule, key: 'dev-9', severity: 'critical', message: alert.message, details: '{"max":91.5,"unit":"C"}' }]);
  });
});
