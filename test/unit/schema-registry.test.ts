import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadSchemaCatalog, type SchemaDocument, type SchemaVersion } from '../../shared/schema-catalog.js';
import { encodeSchemaValue, parseSchemaKey, schemaKey } from '../../shared/schema-registry.js';
import { EventValidator } from '../../edge-agent/src/validation/event-validator.js';
import { KvSchemaWatcher, loadAgentCatalog } from '../../edge-agent/src/validation/kv-schema-watcher.js';
import type { NatsConnection } from '@nats-io/transport-node';
import { planSchemas } from '../../hub/src/schema-publisher.js';

const log = pino({ level: 'silent' });
const ctx = { source: 'test', ingestTimeUs: 1 };
const catalog = loadSchemaCatalog();
const telemetryV1 = catalog.find((e) => e.type === 'device.telemetry' && e.version === 1)!;

/** device.telemetry v2: v1 plus an optional `quality` field. */
function telemetryV2(change: (s: Record<string, any>) => void = () => undefined): SchemaVersion {
  const schema = structuredClone(telemetryV1.schema) as Record<string, any>;
  schema.$id = 'device.telemetry/v2';
  schema.properties.schema_version = { const: 2 };
  schema.properties.quality = { type: 'integer', minimum: 0, maximum: 100 };
  change(schema);
  return { type: 'device.telemetry', version: 2, schema: schema as SchemaDocument };
}

const reading = { type: 'device.telemetry', device_id: 'd1', timestamp: 1700000000000, metric: 'temp', value: 21.5 };

test('a version added at run time is used at once; events of the older version keep validating', () => {
  const validator = new EventValidator(catalog);
  const before = validator.validate({ ...reading, schema_version: 2, quality: 90 }, ctx);
  assert.ok(!before.ok && /no schema version 2/.test(before.rejection.reason));

  assert.equal(validator.addVersion(telemetryV2()), 'added');
  const v2 = validator.validate({ ...reading, schema_version: 2, quality: 90 }, ctx);
  assert.ok(v2.ok);
  assert.equal(v2.event.sv, 2);
  const v1 = validator.validate({ ...reading, schema_version: 1 }, ctx);
  assert.ok(v1.ok);
  assert.equal(v1.event.sv, 1);
  assert.ok(!validator.validate({ ...reading, schema_version: 1, quality: 90 }, ctx).ok, 'v1 still refuses the v2 field');
  // Without schema_version an event validates against the latest version.
  const latest = validator.validate({ ...reading }, ctx);
  assert.ok(latest.ok && latest.event.sv === 2);
  assert.ok(validator.versions().includes('device.telemetry/v2'));
});

test('an ingest pipeline holding the validator sees the new version without being rebuilt', async () => {
  const { IngestPipeline } = await import('../../edge-agent/src/ingest.js');
  const validator = new EventValidator(catalog);
  const appended: number[] = [];
  const outbox = { append: (events: unknown[]) => appended.push(events.length) };
  const ingest = new IngestPipeline(validator, outbox as never, 4, log);
  const item = { value: { ...reading, schema_version: 2, quality: 5 } };
  assert.equal((await ingest.submit([item], { source: 'test' })).accepted, 0);
  validator.addVersion(telemetryV2());
  assert.equal((await ingest.submit([item], { source: 'test' })).accepted, 1);
});

test('a version is immutable: the same content is unchanged, other content is refused and nothing changes', () => {
  const validator = new EventValidator(catalog);
  validator.addVersion(telemetryV2());
  assert.equal(validator.addVersion(telemetryV2()), 'unchanged');
  assert.throws(() => validator.addVersion(telemetryV2((s) => (s.properties.quality.maximum = 5))), /device\.telemetry v2 differs from the version already loaded/);
  assert.ok(validator.validate({ ...reading, schema_version: 2, quality: 90 }, ctx).ok);
});

test('a schema that does not compile is refused and leaves the validator as it was, able to take a fixed one', () => {
  const validator = new EventValidator(catalog);
  const broken = telemetryV2((s) => (s.properties.quality = { type: 'integer', minimumm: 1 }));
  assert.throws(() => validator.addVersion(broken), /device\.telemetry v2 does not compile: .*minimumm/);
  assert.ok(!validator.versions().includes('device.telemetry/v2'));
  assert.equal(validator.addVersion(telemetryV2()), 'added');
});

test('the agent applies registry entries, caches new versions, and loads the cache at the next start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'schema-cache-'));
  const validator = new EventValidator(catalog);
  const watcher = new KvSchemaWatcher(validator, {} as NatsConnection, { bucket: 'schemas', cacheDir: dir, retryMs: 1000 }, log);
  const v2 = telemetryV2();
  assert.equal(watcher.apply('device.telemetry.v2', encodeSchemaValue(v2)), 'added');
  assert.equal(watcher.apply('device.telemetry.v2', encodeSchemaValue(v2)), 'unchanged');
  assert.equal(watcher.apply('device.telemetry.v3', encodeSchemaValue(v2)), 'refused', '$id must match the key');
  assert.equal(watcher.apply('device.telemetry.v1', '{not json'), 'refused');
  assert.deepEqual({ learned: watcher.stats.learned, refused: watcher.stats.refused }, { learned: 1, refused: 2 });
  assert.ok(existsSync(join(dir, 'device.telemetry', 'v2.json')));
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'device.telemetry', 'v2.json'), 'utf8')), v2.schema);

  // Next start: local folder + cache; a broken cache file is skipped, not fatal.
  mkdirSync(join(dir, 'app.event'));
  writeFileSync(join(dir, 'app.event', 'v7.json'), '{');
  const loaded = loadAgentCatalog(join(import.meta.dirname, '../../schemas'), dir);
  assert.ok(loaded.catalog.some((e) => e.type === 'device.telemetry' && e.version === 2));
  assert.equal(loaded.skipped.length, 1);
  assert.deepEqual(loaded.conflicts, []);
});

test('registry keys are <type>.v<N>', () => {
  assert.equal(schemaKey('device.telemetry', 2), 'device.telemetry.v2');
  assert.deepEqual(parseSchemaKey('device.telemetry.v12'), { type: 'device.telemetry', version: 12 });
  assert.equal(parseSchemaKey('device.telemetry'), undefined);
  assert.equal(parseSchemaKey('Bad.v1'), undefined);
  assert.equal(parseSchemaKey('device.telemetry.v0'), undefined);
});

// --- the hub's publishing plan ---------------------------------------------------------------------------------

const keys = (versions: SchemaVersion[]) => versions.map((e) => `${e.type}/v${e.version}`);
const noModes = new Map();

test('hub: new compatible versions are published, the registry\'s kept, all mapped', () => {
  const v2 = telemetryV2();
  const plan = planSchemas([telemetryV1, v2], [telemetryV1], noModes);
  assert.deepEqual(keys(plan.publish), ['device.telemetry/v2']);
  assert.deepEqual(plan.refused, []);
  assert.deepEqual(keys(plan.catalog), ['device.telemetry/v1', 'device.telemetry/v2']);
});

test('hub: an incompatible version is refused with the break named, and so are the versions after it', () => {
  const v2 = telemetryV2((s) => s.required.push('quality'));
  const v3 = telemetryV2((s) => ((s.$id = 'device.telemetry/v3'), (s.properties.schema_version = { const: 3 })));
  const plan = planSchemas([telemetryV1, v2, { ...v3, version: 3 }], [], noModes);
  assert.deepEqual(keys(plan.publish), ['device.telemetry/v1']);
  assert.deepEqual(plan.refused, [
    { type: 'device.telemetry', version: 2, reasons: ['device.telemetry v2: field "quality" was added as required (breaks backward)'] },
    { type: 'device.telemetry', version: 3, reasons: ['device.telemetry v3: follows v2, which was refused'] },
  ]);
  assert.deepEqual(keys(plan.catalog), ['device.telemetry/v1']);
  // Under mode none the same change is accepted.
  assert.deepEqual(keys(planSchemas([telemetryV1, v2], [], new Map([['device.telemetry', 'none']])).publish), ['device.telemetry/v1', 'device.telemetry/v2']);
});

test('hub: a folder version differing from the published one is refused; versions only in the registry are mapped', () => {
  const changed = telemetryV2((s) => (s.properties.quality.maximum = 10));
  const plan = planSchemas([telemetryV1, changed], [telemetryV1, telemetryV2()], noModes);
  assert.deepEqual(plan.publish, []);
  assert.match(plan.refused[0]!.reasons[0]!, /device\.telemetry v2: differs from the version already in the registry; published versions are immutable/);
  assert.deepEqual(plan.catalog.find((e) => e.version === 2)!.schema, telemetryV2().schema, 'the registry\'s v2 is mapped');
  const onlyRegistry = planSchemas([telemetryV1], [telemetryV1, telemetryV2()], noModes);
  assert.deepEqual(keys(onlyRegistry.catalog), ['device.telemetry/v1', 'device.telemetry/v2']);
});
