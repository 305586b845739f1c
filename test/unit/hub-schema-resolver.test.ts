/**
 * Schema versions learned while the hub runs: the registry and QuestDB's DDL are in-memory fakes, the plan, the
 * compatibility check, the table specs and the row mappings are the real ones.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { toSchemaVersion, type SchemaVersion } from '../../shared/schema-catalog.js';
import type { CompatMode } from '../../shared/schema-compat.js';
import { HubError, HubErrorCode } from '../../hub/src/errors.js';
import { HubMetrics } from '../../hub/src/metrics.js';
import { RegistrySchemaResolver, StaticSchemaResolver, type RegistryEntry, type SchemaRegistryReader } from '../../hub/src/schema-resolver.js';
import { RowMappings } from '../../hub/src/sinks/questdb-rows.js';
import type { TableSpec } from '../../hub/src/sinks/questdb-tables.js';

const silent = pino({ level: 'silent' });
const TYPE = 'lab.reading';

type Change = (s: Record<string, any>) => void;

function version(v: number, change: Change = () => undefined, type = TYPE, table = 'lab_readings'): SchemaVersion {
  const s: Record<string, any> = {
    $id: `${type}/v${v}`,
    type: 'object',
    required: ['sensor_id', 'value'],
    additionalProperties: false,
    properties: {
      schema_version: { const: v },
      sensor_id: { type: 'string' },
      value: { type: 'number' },
    },
    'x-partition-key': 'sensor_id',
    'x-questdb': {
      table,
      columns: [
        { name: 'sensor_id', field: 'sensor_id', type: 'SYMBOL' },
        { name: 'value', field: 'value', type: 'DOUBLE' },
      ],
    },
  };
  change(s);
  return toSchemaVersion(type, v, s, `test ${type} v${v}`);
}

/** v2: an optional `quality` (a new LONG column) — backward compatible. */
const addQuality: Change = (s) => {
  s.properties.quality = { type: 'integer' };
  s['x-questdb'].columns.push({ name: 'quality', field: 'quality', type: 'LONG' });
};
/** ...made required: breaks backward. */
const requireQuality: Change = (s) => {
  addQuality(s);
  s.required.push('quality');
};

class MemoryRegistry implements SchemaRegistryReader {
  readonly name = 'registry bucket "schemas"';
  readonly entries = new Map<string, RegistryEntry>();
  reads: string[] = [];
  failReads = 0;
  delayMs = 0;

  put(entry: SchemaVersion): void {
    this.entries.set(`${entry.type}.v${entry.version}`, { type: 'schema', schema: entry });
  }

  async get(type: string, v: number): Promise<RegistryEntry> {
    const key = `${type}.v${v}`;
    this.reads.push(key);
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    if (this.failReads > 0) {
      this.failReads--;
      throw new Error('no responders');
    }
    return this.entries.get(key) ?? { type: 'missing' };
  }
}

function setup(options: { catalog?: SchemaVersion[]; modes?: Map<string, CompatMode> } = {}) {
  const catalog = options.catalog ?? [version(1)];
  const mappings = new RowMappings(catalog);
  const registry = new MemoryRegistry();
  for (const entry of catalog) registry.put(entry);
  const migrations: Array<{ specs: TableSpec[]; mappedDuring: string[] }> = [];
  let failMigrations: Error[] = [];
  const clock = { t: 1_000_000, now(): number { return this.t; } };
  const metrics = new HubMetrics();
  const resolver = new RegistrySchemaResolver({
    catalog,
    modes: options.modes ?? new Map(),
    mappings,
    registry,
    migrateTables: async (specs) => {
      // What the sink could map while the DDL runs: the new version must not be among them yet.
      migrations.push({ specs: [...specs], mappedDuring: [1, 2, 3, 4].filter((v) => mappings.get(TYPE, v)).map((v) => `v${v}`) });
      const failure = failMigrations.shift();
      if (failure) throw failure;
    },
    missingTtlMs: 1000,
    clock,
    log: silent,
    metrics,
  });
  return { resolver, registry, mappings, migrations, clock, metrics, failNextMigrations: (...errors: Error[]) => (failMigrations = errors) };
}

async function metric(metrics: HubMetrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const found = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  return found?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;
}

test('learns a compatible version on a miss: the table gets its new column first, then the version is mapped', async () => {
  const { resolver, registry, mappings, migrations, metrics } = setup();
  registry.put(version(2, addQuality));
  assert.equal(mappings.get(TYPE, 2), undefined);
  assert.deepEqual(await resolver.resolve(TYPE, 2), { status: 'mapped' });
  assert.ok(mappings.get(TYPE, 2));
  assert.deepEqual(mappings.get(TYPE, 2)!.columns.map((c) => c.name), ['sensor_id', 'value', 'quality']);
  assert.equal(migrations.length, 1);
  assert.deepEqual(migrations[0]!.specs.map((s) => [s.table, s.columns.map((c) => c.name).slice(-3)]), [['lab_readings', ['sensor_id', 'value', 'quality']]]);
  assert.deepEqual(migrations[0]!.mappedDuring, ['v1'], 'not mapped before its table was ready');
  assert.equal(await metric(metrics, 'hub_schema_versions_learned_total', { via: 'lookup' }), 1);
  assert.equal(await metric(metrics, 'hub_schema_versions'), 2);
  assert.equal(await metric(metrics, 'hub_schema_lookups_total', { result: 'mapped' }), 1);
  // Known now: answered without the registry.
  const reads = registry.reads.length;
  assert.deepEqual(await resolver.resolve(TYPE, 2), { status: 'mapped' });
  assert.equal(registry.reads.length, reads);
});

test('refuses a version that breaks compatibility with the one before it, with the check\'s reasons, once for good', async () => {
  const { resolver, registry, mappings, migrations, metrics } = setup();
  registry.put(version(2, requireQuality));
  const result = await resolver.resolve(TYPE, 2);
  assert.equal(result.status, 'refused');
  assert.match(result.status === 'refused' ? result.reason : '', /lab\.reading v2: field "quality" was added as required \(breaks backward\)/);
  assert.equal(mappings.get(TYPE, 2), undefined);
  assert.deepEqual(migrations, [], 'no table change for a refused version');
  const reads = registry.reads.length;
  assert.equal((await resolver.resolve(TYPE, 2)).status, 'refused');
  assert.equal(registry.reads.length, reads, 'a refusal is not looked up again (published versions are immutable)');
  assert.equal(await metric(metrics, 'hub_schema_lookups_total', { result: 'refused' }), 1);
});

test('the type\'s compatibility mode applies: with mode none the same change is accepted', async () => {
  const { resolver, registry } = setup({ modes: new Map([[TYPE, 'none']]) });
  registry.put(version(2, requireQuality));
  assert.deepEqual(await resolver.resolve(TYPE, 2), { status: 'mapped' });
});

test('checks the chain: missing versions in between are learned first, and a version after a refused one is refused', async () => {
  const ok = setup();
  ok.registry.put(version(2, addQuality));
  ok.registry.put(version(3, addQuality));
  assert.deepEqual(await ok.resolver.resolve(TYPE, 3), { status: 'mapped' });
  assert.ok(ok.mappings.get(TYPE, 2), 'v2 learned on the way');
  assert.deepEqual(ok.registry.reads, ['lab.reading.v3', 'lab.reading.v2']);

  const broken = setup();
  broken.registry.put(version(2, requireQuality));
  broken.registry.put(version(3, requireQuality)); // compatible with v2, but v2 is refused
  const result = await broken.resolver.resolve(TYPE, 3);
  assert.equal(result.status, 'refused');
  assert.match(result.status === 'refused' ? result.reason : '', /v3: follows v2, which was refused/);
  assert.equal(broken.mappings.get(TYPE, 3), undefined);
});

test('a version in no registry is unknown; that is believed for missingTtlMs, and a version seen on the watch ends it', async () => {
  const { resolver, registry, clock, mappings } = setup();
  const result = await resolver.resolve(TYPE, 2);
  assert.deepEqual(result, { status: 'unknown', reason: 'no schema lab.reading v2 in the registry bucket "schemas"' });
  assert.equal((await resolver.resolve(TYPE, 2)).status, 'unknown');
  assert.equal(registry.reads.length, 1, 'no second read within missingTtlMs');
  clock.t += 1001;
  await resolver.resolve(TYPE, 2);
  assert.equal(registry.reads.length, 2, 'read again after missingTtlMs');

  // Published now, seen on the watch: mapped before any event asks.
  const v2 = version(2, addQuality);
  registry.put(v2);
  assert.deepEqual(await resolver.offer(v2), { status: 'mapped' });
  assert.ok(mappings.get(TYPE, 2));
});

test('offer() from the watch maps a new version, counted as learned via the watch; a known one is a no-op', async () => {
  const { resolver, registry, metrics, migrations } = setup();
  const v2 = version(2, addQuality);
  registry.put(v2);
  assert.deepEqual(await resolver.offer(v2), { status: 'mapped' });
  assert.equal(await resolver.offer(v2), undefined);
  assert.equal(await resolver.offer(version(1)), undefined);
  assert.equal(migrations.length, 1);
  assert.equal(await metric(metrics, 'hub_schema_versions_learned_total', { via: 'watch' }), 1);
});

test('concurrent lookups of one version share one registry read and one table change', async () => {
  const { resolver, registry, migrations } = setup();
  registry.put(version(2, addQuality));
  registry.delayMs = 5;
  const results = await Promise.all([resolver.resolve(TYPE, 2), resolver.resolve(TYPE, 2), resolver.resolve(TYPE, 2)]);
  assert.deepEqual(results.map((r) => r.status), ['mapped', 'mapped', 'mapped']);
  assert.deepEqual(registry.reads, ['lab.reading.v2']);
  assert.equal(migrations.length, 1);
});

test('a registry that cannot be read or a QuestDB that does not answer decides nothing: rejects, and the next lookup learns it', async () => {
  const { resolver, registry, mappings, failNextMigrations, metrics } = setup();
  registry.put(version(2, addQuality));
  registry.failReads = 1;
  await assert.rejects(resolver.resolve(TYPE, 2), (error: unknown) => error instanceof HubError && error.code === HubErrorCode.SCHEMA_LOOKUP_FAILED);
  failNextMigrations(new HubError(HubErrorCode.QUESTDB_UNAVAILABLE, 'QuestDB at http://q:9000 is not reachable'));
  await assert.rejects(resolver.resolve(TYPE, 2), /cannot prepare table lab_readings for lab\.reading v2: QuestDB at http:\/\/q:9000 is not reachable/);
  assert.equal(mappings.get(TYPE, 2), undefined);
  assert.deepEqual(await resolver.resolve(TYPE, 2), { status: 'mapped' });
  assert.equal(await metric(metrics, 'hub_schema_lookups_total', { result: 'error' }), 2);
});

test('refuses a version whose table cannot take it: a column of another type, or a table QuestDB refuses to change', async () => {
  // Another type writing to the same table with `value` as a string.
  const other = setup();
  const clash = version(1, (s) => (s['x-questdb'].columns[1].type = 'VARCHAR'), 'lab.other');
  other.registry.put(clash);
  const result = await other.resolver.resolve('lab.other', 1);
  assert.equal(result.status, 'refused');
  assert.match(result.status === 'refused' ? result.reason : '', /table lab_readings: column value is DOUBLE in lab\.reading\/v1 but VARCHAR in lab\.other\/v1/);
  assert.deepEqual(other.migrations, []);

  const table = setup();
  table.registry.put(version(2, addQuality));
  table.failNextMigrations(new HubError(HubErrorCode.TABLE_SETUP, 'table lab_readings exists but does not fit: column quality is STRING'));
  const refused = await table.resolver.resolve(TYPE, 2);
  assert.equal(refused.status, 'refused');
  assert.match(refused.status === 'refused' ? refused.reason : '', /column quality is STRING/);
});

test('an entry that is not a usable schema is refused', async () => {
  const { resolver, registry } = setup();
  registry.entries.set('lab.reading.v2', { type: 'unusable', reason: 'registry key "lab.reading.v2": not valid JSON' });
  const result = await resolver.resolve(TYPE, 2);
  assert.equal(result.status, 'refused');
  assert.match(result.status === 'refused' ? result.reason : '', /not a usable schema: .*not valid JSON/);
});

test('a brand-new type is learned with its earlier versions', async () => {
  const { resolver, registry, mappings } = setup();
  registry.put(version(1, () => undefined, 'lab.other', 'lab_other'));
  registry.put(version(2, addQuality, 'lab.other', 'lab_other'));
  assert.deepEqual(await resolver.resolve('lab.other', 2), { status: 'mapped' });
  assert.ok(mappings.get('lab.other', 1));
});

test('without a registry only the versions mapped at start exist', async () => {
  const resolver = new StaticSchemaResolver(new RowMappings([version(1)]));
  assert.deepEqual(await resolver.resolve(TYPE, 1), { status: 'mapped' });
  assert.equal((await resolver.resolve(TYPE, 2)).status, 'unknown');
});
