import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadSchemaCatalog, type QuestDbColumn, type SchemaVersion } from '../../shared/schema-catalog.js';
import { HubError, HubErrorCode } from '../../hub/src/errors.js';
import {
  addColumnSql,
  createTableSql,
  enableDedupSql,
  planTable,
  reservedTableWarnings,
  tableSpecs,
  type ExistingColumn,
} from '../../hub/src/sinks/questdb-tables.js';

function schema(type: string, version: number, table: string, columns: QuestDbColumn[]): SchemaVersion {
  return {
    type,
    version,
    schema: { $id: `${type}/v${version}`, 'x-partition-key': 'device_id', 'x-questdb': { table, columns } },
  };
}

const meterV1 = schema('meter.reading', 1, 'meter_readings', [
  { name: 'device_id', field: 'device_id', type: 'SYMBOL' },
  { name: 'value', field: 'value', type: 'DOUBLE' },
  { name: 'location', field: 'context.location', type: 'SYMBOL' },
  { name: 'extra', field: 'extra', type: 'JSON' },
]);
const meterV2 = schema('meter.reading', 2, 'meter_readings', [
  { name: 'device_id', field: 'device_id', type: 'SYMBOL' },
  { name: 'value', field: 'value', type: 'DOUBLE' },
  { name: 'count', field: 'count', type: 'LONG' },
  { name: 'ok', field: 'ok', type: 'BOOLEAN' },
  { name: 'read_at', field: 'read_at', type: 'TIMESTAMP' },
]);

test('creates a table with the standard columns, the schema columns, JSON as VARCHAR, WAL and dedup keys', () => {
  const [spec] = tableSpecs([meterV1]);
  assert.ok(spec);
  assert.equal(
    createTableSql(spec),
    'CREATE TABLE IF NOT EXISTS "meter_readings" (' +
      '"ts" TIMESTAMP, "event_id" VARCHAR, "schema_version" INT, "agent_id" SYMBOL, "source" SYMBOL, ' +
      '"ingest_ts" TIMESTAMP, "hub_ts" TIMESTAMP, ' +
      '"device_id" SYMBOL, "value" DOUBLE, "location" SYMBOL, "extra" VARCHAR' +
      ') TIMESTAMP("ts") PARTITION BY HOUR WAL DEDUP UPSERT KEYS("ts", "event_id")',
  );
});

test('one table takes the union of the columns of all versions mapping to it', () => {
  const specs = tableSpecs([meterV1, meterV2]);
  assert.equal(specs.length, 1);
  assert.deepEqual(specs[0]?.writers, ['meter.reading/v1', 'meter.reading/v2']);
  assert.deepEqual(
    specs[0]?.columns.slice(7).map((c) => `${c.name} ${c.sqlType}`),
    ['device_id SYMBOL', 'value DOUBLE', 'location SYMBOL', 'extra VARCHAR', 'count LONG', 'ok BOOLEAN', 'read_at TIMESTAMP'],
  );
});

test('refuses two versions that give one column two types', () => {
  const v3 = schema('meter.reading', 3, 'meter_readings', [{ name: 'value', field: 'value', type: 'VARCHAR' }]);
  assert.throws(
    () => tableSpecs([meterV1, v3]),
    (error: unknown) =>
      error instanceof HubError &&
      error.code === HubErrorCode.SCHEMA_CONFLICT &&
      /column value is VARCHAR in meter.reading\/v3 but DOUBLE in meter.reading\/v1/.test(error.message),
  );
});

test('adds the columns a later version introduced and keeps dedup as it is', () => {
  const [spec] = tableSpecs([meterV1, meterV2]);
  assert.ok(spec);
  const existing: ExistingColumn[] = spec.columns
    .filter((c) => !['count', 'ok', 'read_at'].includes(c.name))
    .map((c) => ({ name: c.name, type: c.sqlType, designated: c.name === 'ts', upsertKey: c.name === 'ts' || c.name === 'event_id' }));
  const plan = planTable(spec, existing);
  assert.deepEqual(plan.problems, []);
  assert.equal(plan.enableDedup, false);
  assert.deepEqual(
    plan.add.map((c) => addColumnSql(spec.table, c)),
    [
      'ALTER TABLE "meter_readings" ADD COLUMN IF NOT EXISTS "count" LONG',
      'ALTER TABLE "meter_readings" ADD COLUMN IF NOT EXISTS "ok" BOOLEAN',
      'ALTER TABLE "meter_readings" ADD COLUMN IF NOT EXISTS "read_at" TIMESTAMP',
    ],
  );
});

test('enables dedup on an existing table without it and reports columns of another type', () => {
  const [spec] = tableSpecs([meterV1]);
  assert.ok(spec);
  const existing: ExistingColumn[] = spec.columns.map((c) => ({
    name: c.name,
    type: c.name === 'value' ? 'VARCHAR' : c.name === 'extra' ? 'STRING' : c.sqlType,
    designated: c.name === 'ts',
    upsertKey: false,
  }));
  const plan = planTable(spec, existing);
  assert.equal(plan.enableDedup, true);
  assert.equal(enableDedupSql(spec.table), 'ALTER TABLE "meter_readings" DEDUP ENABLE UPSERT KEYS("ts", "event_id")');
  // STRING accepts what VARCHAR would; a VARCHAR where a DOUBLE is needed does not.
  assert.deepEqual(plan.problems, ['column value is VARCHAR, the schemas need DOUBLE']);
});

test('refuses a schema column that shadows a standard column', async () => {
  const { RowMappings } = await import('../../hub/src/sinks/questdb-rows.js');
  const bad = schema('meter.reading', 1, 'meter_readings', [{ name: 'source', field: 'origin', type: 'SYMBOL' }]);
  assert.throws(() => new RowMappings([bad]), (error: unknown) => error instanceof HubError && error.code === HubErrorCode.SCHEMA_CONFLICT);
});

test('the repo catalogue maps to tables, and a table named like QuestDB telemetry is flagged', () => {
  const specs = tableSpecs(loadSchemaCatalog());
  assert.ok(specs.length >= 3);
  for (const spec of specs) assert.match(createTableSql(spec), /DEDUP UPSERT KEYS\("ts", "event_id"\)$/);
  const warnings = reservedTableWarnings([{ table: 'telemetry', columns: [], writers: ['device.telemetry/v1'] }]);
  assert.equal(warnings.length, 1);
  assert.deepEqual(reservedTableWarnings([{ table: 'device_telemetry', columns: [], writers: [] }]), []);
});
