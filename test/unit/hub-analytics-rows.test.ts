/** The analytics sink's pure parts: outputs → rows, the table DDL and plan, and buffering/flush with a stand-in Sender. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Alert, WindowResult } from '../../hub/src/operators/operator.js';
import {
  QuestDbAnalyticsSink,
  analyticsRows,
  analyticsTableSpecs,
  createAnalyticsTableSql,
  planAnalyticsTable,
  writeAnalyticsRow,
  type AnalyticsRow,
} from '../../hub/src/sinks/questdb-analytics-sink.js';
import type { IlpSender } from '../../hub/src/sinks/questdb-sink.js';

const T0 = Date.UTC(2026, 0, 15, 10, 0, 0);

function result(overrides: Partial<WindowResult> = {}): WindowResult {
  return {
    type: 'window_result',
    rule: 'stats',
    key: 'dev-1',
    windowStart: T0,
    windowEnd: T0 + 10_000,
    values: { readings: 3, avg_value: 21.5 },
    final: false,
    revision: 0,
    ...overrides,
  };
}

const alert: Alert = {
  type: 'alert',
  rule: 'overheating',
  key: 'dev-1',
  severity: 'critical',
  ts: T0 + 1234,
  message: 'temperature > 80 for 60 s',
  details: { max: 91.5, readings: [80.5, 91.5] },
};

/** Rows as plain objects without the `table`, compared in tables. */
function shape(row: AnalyticsRow): Record<string, unknown> {
  const out: Record<string, unknown> = { ts: row.ts };
  for (const s of row.symbols) out[s.name] = s.value;
  // The partition column is checked with the identities (below); these cases write without one.
  for (const f of row.fields) if (f.name !== 'stream_partition') out[f.name] = f.value;
  return out;
}

describe('analyticsRows', () => {
  const cases: Array<{ name: string; outputs: Array<WindowResult | Alert>; expected: Array<Record<string, unknown>>; problems?: number }> = [
    {
      name: 'a window result gives one row, an aggregate per column, times in µs',
      outputs: [result()],
      expected: [{ ts: T0 * 1000, rule: 'stats', key: 'dev-1', readings: 3, avg_value: 21.5, window_end: (T0 + 10_000) * 1000, revision: 0, final: false, superseded: false }],
    },
    {
      name: 'non-numeric aggregates go to text_values as one JSON object; null and non-finite ones are left out',
      outputs: [result({ values: { last_state: 'on', flags: { a: true }, avg_value: null, up: true, readings: 4, ratio: Number.NaN }, final: true, revision: 2 })],
      expected: [
        {
          ts: T0 * 1000,
          rule: 'stats',
          key: 'dev-1',
          readings: 4,
          text_values: '{"last_state":"on","flags":{"a":true},"up":true}',
          window_end: (T0 + 10_000) * 1000,
          revision: 2,
          final: true,
          superseded: false,
        },
      ],
    },
    {
      name: 'a session that replaces others tombstones their rows, except one with its own start',
      outputs: [
        result({
          rule: 'sessions',
          windowStart: T0,
          windowEnd: T0 + 50_000,
          values: { events: 7 },
          revision: 1,
          replaces: [
            { windowStart: T0, windowEnd: T0 + 10_000 },
            { windowStart: T0 + 30_000, windowEnd: T0 + 50_000 },
          ],
        }),
      ],
      expected: [
        { ts: T0 * 1000, rule: 'sessions', key: 'dev-1', events: 7, window_end: (T0 + 50_000) * 1000, revision: 1, final: false, superseded: false },
        { ts: (T0 + 30_000) * 1000, rule: 'sessions', key: 'dev-1', window_end: (T0 + 50_000) * 1000, revision: 1, final: true, superseded: true },
      ],
    },
    {
      name: 'an alert gives one row with details as JSON text',
      outputs: [alert],
      expected: [
        {
          ts: (T0 + 1234) * 1000,
          rule: 'overheating',
          key: 'dev-1',
          severity: 'critical',
          message: 'temperature > 80 for 60 s',
          details: '{"max":91.5,"readings":[80.5,91.5]}',
        },
      ],
    },
    {
      name: 'an output whose time is not epoch ms is a problem, not a row',
      outputs: [result({ windowStart: 1.5 }), { ...alert, ts: -1 }],
      expected: [],
      problems: 2,
    },
    {
      name: 'late events are ignored',
      outputs: [{ type: 'late_event' } as unknown as WindowResult],
      expected: [],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { rows, problems } = analyticsRows(c.outputs);
      assert.deepEqual(rows.map(shape), c.expected);
      assert.equal(problems.length, c.problems ?? 0);
    });
  }

  test('rows go to the configured tables; identities are the dedup keys', () => {
    const tables = { windowResults: 'wr_test', alerts: 'al_test' };
    const { rows } = analyticsRows([result(), result({ revision: 1 }), alert, { ...alert, message: 'again' }], tables);
    assert.deepEqual(
      rows.map((r) => r.table),
      ['wr_test', 'wr_test', 'al_test', 'al_test'],
    );
    // Same window, another revision: the same identity (so the later one replaces it).
    assert.equal(rows[0]!.id, rows[1]!.id);
    assert.equal(rows[2]!.id, rows[3]!.id);
    assert.notEqual(rows[0]!.id, analyticsRows([result({ key: 'dev-2' })], tables).rows[0]!.id);
    // The same window of a rule not keyed by the partition key, from another partition: a row of its own.
    assert.notEqual(analyticsRows([result()], tables, 3).rows[0]!.id, analyticsRows([result()], tables, 4).rows[0]!.id);
    assert.equal(analyticsRows([result()], tables, 3).rows[0]!.id, analyticsRows([result({ revision: 5 })], tables, 3).rows[0]!.id);
  });
});

describe('analytics tables', () => {
  test('DDL: WAL, daily partitions, dedup on the window and aggregate / the alert keys', () => {
    const [windows, alerts] = analyticsTableSpecs().map(createAnalyticsTableSql);
    assert.equal(
      windows,
      'CREATE TABLE IF NOT EXISTS "window_results" ("ts" TIMESTAMP, "rule" SYMBOL, "key" SYMBOL, "window_end" TIMESTAMP, "revision" LONG, ' +
        '"final" BOOLEAN, "superseded" BOOLEAN, "text_values" VARCHAR, "written_at" TIMESTAMP, "stream_partition" LONG, "rule_version" SYMBOL) ' +
        'TIMESTAMP("ts") PARTITION BY DAY WAL DEDUP UPSERT KEYS("ts", "rule", "key", "stream_partition")',
    );
    assert.equal(
      alerts,
      'CREATE TABLE IF NOT EXISTS "alerts" ("ts" TIMESTAMP, "rule" SYMBOL, "key" SYMBOL, "severity" SYMBOL, "message" VARCHAR, ' +
        '"details" VARCHAR, "written_at" TIMESTAMP, "rule_version" SYMBOL) TIMESTAMP("ts") PARTITION BY DAY WAL DEDUP UPSERT KEYS("ts", "rule", "key")',
    );
  });

  test('an existing table missing a column and the dedup keys gets both; a wrong type is a problem', () => {
    const spec = analyticsTableSpecs()[1]!;
    const plan = planAnalyticsTable(spec, [
      { name: 'ts', type: 'TIMESTAMP', designated: true, upsertKey: true },
      { name: 'rule', type: 'SYMBOL', designated: false, upsertKey: false },
      { name: 'key', type: 'SYMBOL', designated: false, upsertKey: false },
      { name: 'severity', type: 'SYMBOL', designated: false, upsertKey: false },
      { name: 'message', type: 'STRING', designated: false, upsertKey: false },
      { name: 'details', type: 'DOUBLE', designated: false, upsertKey: false },
    ]);
    assert.deepEqual(plan.statements, [
      'ALTER TABLE "alerts" ADD COLUMN IF NOT EXISTS "written_at" TIMESTAMP',
      'ALTER TABLE "alerts" ADD COLUMN IF NOT EXISTS "rule_version" SYMBOL',
      'ALTER TABLE "alerts" DEDUP ENABLE UPSERT KEYS("ts", "rule", "key")',
    ]);
    assert.deepEqual(plan.problems, ['column details is DOUBLE, must be VARCHAR']);
  });

  test('a table keyed on a column this hub does not write (the long format of hub 0.1) is a problem, not altered', () => {
    const spec = analyticsTableSpecs()[0]!;
    const plan = planAnalyticsTable(spec, [
      ...spec.columns.map((c) => ({ name: c.name, type: c.sqlType, designated: c.name === 'ts', upsertKey: ['ts', 'rule', 'key', 'stream_partition'].includes(c.name) })),
      { name: 'aggregate', type: 'SYMBOL', designated: false, upsertKey: true },
    ]);
    assert.deepEqual(plan.statements, []);
    assert.deepEqual(plan.problems, ['its dedup keys include aggregate, which this hub does not write (an older format?); rename or drop the table']);
  });
});

/** Records ILP lines; flush() takes the buffer, then may fail (keeping the lines, as IlpHttpWriter does) or wait. */
class FakeSender implements IlpSender {
  sent: string[][] = [];
  failNext = 0;
  hold: Promise<void> | undefined;
  private buffer: string[] = [];
  private line = '';
  table(name: string): void {
    this.line = name;
  }
  symbol(name: string, value: string): void {
    this.line += `,${name}=${value}`;
  }
  stringColumn(name: string, value: string): void {
    this.line += ` ${name}="${value}"`;
  }
  floatColumn(name: string, value: number): void {
    this.line += ` ${name}=${value}`;
  }
  intColumn(name: string, value: number): void {
    this.line += ` ${name}=${value}i`;
  }
  booleanColumn(name: string, value: boolean): void {
    this.line += ` ${name}=${value}`;
  }
  timestampColumn(name: string, value: number): void {
    this.line += ` ${name}=${value}t`;
  }
  at(ts: number): void {
    this.buffer.push(`${this.line} ${ts}`);
  }
  abortRow(): void {
    this.line = '';
  }
  async flush(): Promise<boolean> {
    const data = this.buffer.splice(0);
    if (this.hold) await this.hold;
    if (this.failNext > 0) {
      this.failNext--;
      this.buffer.unshift(...data);
      throw new Error('connect ECONNREFUSED');
    }
    this.sent.push(data);
    return true;
  }
  reset(): void {
    this.buffer = [];
  }
  async close(): Promise<void> {}
}

/** A stand-in for QuestDB's REST API: records statements; SHOW COLUMNS answers with what was added (as `types`). */
class FakeRest {
  statements: string[] = [];
  types = new Map<string, string>();
  async ping(): Promise<void> {}
  async exec(sql: string): Promise<{ columns?: Array<{ name: string }>; dataset?: unknown[][] }> {
    this.statements.push(sql);
    const added = /ADD COLUMN IF NOT EXISTS "(\w+)" DOUBLE/.exec(sql);
    if (added && !this.types.has(added[1]!)) this.types.set(added[1]!, 'DOUBLE');
    if (sql.startsWith('SHOW COLUMNS')) {
      return {
        columns: ['column', 'type', 'designated', 'upsertKey'].map((name) => ({ name })),
        dataset: [...this.types].map(([name, type]) => [name, type, false, false]),
      };
    }
    return {};
  }
}

function sink(sender: FakeSender, rest = new FakeRest()): QuestDbAnalyticsSink {
  return new QuestDbAnalyticsSink(sender, rest as unknown as ConstructorParameters<typeof QuestDbAnalyticsSink>[1], { nowMicros: () => 42, log: pino({ level: 'silent' }) });
}

describe('QuestDbAnalyticsSink', () => {
  test('writes written_at before the designated timestamp', () => {
    const sender = new FakeSender();
    const [row] = analyticsRows([alert]).rows;
    writeAnalyticsRow(sender, row!, 42);
    void sender.flush();
    assert.match(sender.sent[0]![0]!, /^alerts,rule=overheating,key=dev-1,severity=critical message=".*" details=".*" written_at=42t \d+$/);
  });

  test('sends a window revised twice between flushes once, with the last revision', async () => {
    const sender = new FakeSender();
    const s = sink(sender);
    s.write([result({ values: { readings: 1 } })]);
    s.write([result({ values: { readings: 2 }, revision: 1 }), alert]);
    assert.equal(s.bufferedRows, 2);
    await s.flush();
    assert.equal(sender.sent.length, 1);
    assert.equal(sender.sent[0]!.length, 2);
    assert.match(sender.sent[0]!.find((l) => l.startsWith('window_results'))!, / readings=2 .*revision=1i/);
    assert.equal(s.bufferedRows, 0);
  });

  test('keeps the rows of a failed flush and sends them with the next one', async () => {
    const sender = new FakeSender();
    const s = sink(sender);
    s.write([alert]);
    sender.failNext = 1;
    await assert.rejects(s.flush(), /HUB_ERR_FLUSH_FAILED|analytics rows to QuestDB failed/);
    assert.equal(s.bufferedRows, 1);
    s.write([result()]);
    await s.flush();
    assert.equal(sender.sent[0]!.length, 2);
    assert.equal(s.bufferedRows, 0);
  });

  test('queues concurrent flushes; rows written during a flush go with the next', async () => {
    const sender = new FakeSender();
    const s = sink(sender);
    let release!: () => void;
    sender.hold = new Promise((resolve) => (release = resolve));
    s.write([alert]);
    const first = s.flush();
    await new Promise((resolve) => setImmediate(resolve));
    s.write([result()]);
    const second = s.flush();
    const third = s.flush();
    assert.equal(third, second, 'a flush that has not started yet is shared by later calls');
    sender.hold = undefined;
    release();
    await Promise.all([first, second, third]);
    assert.deepEqual(
      sender.sent.map((batch) => batch.length),
      [1, 1],
    );
    assert.equal(s.bufferedRows, 0);
  });

  test('adds the DOUBLE column of a new aggregate once before writing it; another type there fails the flush, naming it', async () => {
    const sender = new FakeSender();
    const rest = new FakeRest();
    const s = sink(sender, rest);
    s.write([result()]);
    await s.flush();
    s.write([result({ values: { readings: 5 }, revision: 1 })]);
    await s.flush();
    assert.deepEqual(
      rest.statements.filter((sql) => sql.startsWith('ALTER')),
      ['ALTER TABLE "window_results" ADD COLUMN IF NOT EXISTS "readings" DOUBLE', 'ALTER TABLE "window_results" ADD COLUMN IF NOT EXISTS "avg_value" DOUBLE'],
    );
    rest.types.set('label', 'VARCHAR');
    s.write([result({ values: { label: 3 } })]);
    await assert.rejects(s.flush(), /column label of window_results is VARCHAR; the aggregate label needs DOUBLE/);
    assert.equal(s.bufferedRows, 1, 'the row waits for the next flush');
  });

  test('does not send the rows of a partition the write guard refuses at flush time, and drops them', async () => {
    const sender = new FakeSender();
    const s = sink(sender);
    const owned = new Set([1]);
    s.setWriteGuard((partition) => owned.has(partition));
    s.write([result({ key: 'dev-of-p1' })], 1);
    s.write([result({ key: 'dev-of-p2' })], 2);
    s.write([alert]); // untagged: never fenced
    await s.flush();
    assert.equal(sender.sent.length, 1);
    assert.deepEqual(sender.sent[0]!.map((line) => /key=([\w-]+)/.exec(line)![1]).sort(), ['dev-1', 'dev-of-p1']);
    assert.equal(s.bufferedRows, 0, 'the refused row is dropped, not kept for later');
  });

  test('discard drops the unwritten rows a partition wrote last, and only those', async () => {
    const sender = new FakeSender();
    const s = sink(sender);
    s.write([result({ key: 'a' })], 1);
    s.write([result({ key: 'b' })], 2);
    s.write([result({ key: 'b', revision: 1 })], 1); // the same window from another partition: a row of its own
    s.write([result({ key: 'a', revision: 1 })], 1); // a revision of partition 1's row replaces it
    assert.equal(s.bufferedRows, 3);
    assert.equal(s.discard(2), 1);
    assert.equal(s.discard(1), 2);
    assert.equal(s.bufferedRows, 0);
  });
});

test('lineage: a window result and an alert carry the version of their rule as rule_version', () => {
  const { rows } = analyticsRows([result({ ruleVersion: 'abc123' }), { type: 'alert', rule: 'hot', key: 'dev-1', severity: 'warning', ts: T0, message: 'm', details: {}, ruleVersion: 'def456' }]);
  assert.deepEqual(rows.map((r) => r.symbols.find((s) => s.name === 'rule_version')?.value), ['abc123', 'def456']);
  const { rows: older } = analyticsRows([result()]);
  assert.equal(older[0]!.symbols.some((s) => s.name === 'rule_version'), false, 'none given, none written (null)');
  // Every table of rule outputs; edge_refusals holds the agents' refusals, which no rule made.
  const ruleTables = analyticsTableSpecs().filter((spec) => spec.table !== 'edge_refusals');
  assert.deepEqual(ruleTables.map((spec) => spec.table), ['window_results', 'alerts', 'data_quality']);
  assert.ok(ruleTables.every((spec) => spec.columns.some((c) => c.name === 'rule_version' && c.sqlType === 'SYMBOL')));
});
