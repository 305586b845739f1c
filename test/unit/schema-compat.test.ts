import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SchemaDocument, SchemaVersion } from '../../shared/schema-catalog.js';
import { checkCompatibility, diffSchemas, loadCompatModes, type CompatMode } from '../../shared/schema-compat.js';
import { checkSchemas } from '../../shared/schema-cli.js';

/** A v1 in the style of schemas/: closed object, $defs, x-partition-key, x-questdb. */
function base(): SchemaDocument {
  return {
    $id: 'device.telemetry/v1',
    type: 'object',
    required: ['device_id', 'timestamp', 'value'],
    additionalProperties: false,
    properties: {
      type: { const: 'device.telemetry' },
      schema_version: { const: 1 },
      device_id: { type: 'string', minLength: 1, maxLength: 128 },
      timestamp: { $ref: '#/$defs/timestamp' },
      value: { type: 'number' },
      unit: { type: 'string', maxLength: 16 },
      level: { enum: ['low', 'high'] },
      tags: { type: 'array', items: { type: 'string' } },
      context: { type: 'object', properties: { site: { type: 'string' } } },
    },
    $defs: {
      timestamp: { oneOf: [{ type: 'string', format: 'date-time' }, { type: 'integer', minimum: 0 }] },
    },
    'x-partition-key': 'device_id',
    'x-questdb': { table: 'device_telemetry', columns: [{ name: 'value', field: 'value', type: 'DOUBLE' }] },
  };
}

type Schema = Record<string, any>;
const v = (schema: SchemaDocument, version: number): SchemaVersion => ({ type: 'device.telemetry', version, schema });

/** name, change from v1 to v2, mode, expected: 'compatible' or the break messages (formatted, in any order). */
const cases: Array<[string, (s: Schema) => void, CompatMode, 'compatible' | RegExp[]]> = [
  ['identical (only schema_version and $id differ)', () => undefined, 'full', 'compatible'],
  ['descriptions and titles are annotations', (s) => ((s.properties.unit.description = 'SI unit'), (s.title = 'x')), 'full', 'compatible'],
  ['new optional field: backward ok', (s) => (s.properties.firmware = { type: 'string' }), 'backward', 'compatible'],
  [
    'new optional field breaks forward on a closed object',
    (s) => (s.properties.firmware = { type: 'string' }),
    'forward',
    [/^device\.telemetry v2: field "firmware" was added \(the old version refuses unknown fields\) \(breaks forward\)$/],
  ],
  ['optional field became required', (s) => s.required.push('unit'), 'backward', [/^device\.telemetry v2: field "unit" became required \(breaks backward\)$/]],
  ['a required field became optional: backward ok', (s) => (s.required = ['device_id', 'timestamp']), 'backward', 'compatible'],
  ['a required field became optional breaks forward', (s) => (s.required = ['device_id', 'timestamp']), 'forward', [/field "value" is no longer required \(breaks forward\)/]],
  [
    'new required field breaks both ways',
    (s) => ((s.properties.site = { type: 'string' }), s.required.push('site')),
    'full',
    [/field "site" was added as required \(breaks backward\)/, /field "site" was added \(the old version refuses unknown fields\) \(breaks forward\)/],
  ],
  ['removing an optional field of a closed object breaks backward', (s) => delete s.properties.unit, 'backward', [/field "unit" was removed \(the new version refuses unknown fields\) \(breaks backward\)/]],
  ['removing an optional field: forward ok', (s) => delete s.properties.unit, 'forward', 'compatible'],
  ['maxLength narrowed', (s) => (s.properties.unit.maxLength = 8), 'backward', [/field "unit" maxLength lowered from 16 to 8 \(breaks backward\)/]],
  ['maxLength widened: backward ok', (s) => (s.properties.unit.maxLength = 32), 'backward', 'compatible'],
  ['maxLength widened breaks forward', (s) => (s.properties.unit.maxLength = 32), 'forward', [/field "unit" maxLength raised from 16 to 32 \(breaks forward\)/]],
  ['minLength added', (s) => (s.properties.unit.minLength = 1), 'backward', [/field "unit" got minLength 1 \(breaks backward\)/]],
  ['enum value removed', (s) => (s.properties.level.enum = ['low']), 'backward', [/field "level" no longer allows "high" \(breaks backward\)/]],
  ['enum value added: backward ok', (s) => s.properties.level.enum.push('max'), 'backward', 'compatible'],
  ['enum value added breaks forward', (s) => s.properties.level.enum.push('max'), 'forward', [/field "level" now also allows "max" \(breaks forward\)/]],
  ['type narrowed number -> integer', (s) => (s.properties.value.type = 'integer'), 'backward', [/field "value" type narrowed from number to integer \(breaks backward\)/]],
  ['type changed string -> number', (s) => (s.properties.unit = { type: 'number' }), 'full', [/field "unit" type changed from string to number \(breaks backward and forward\)/, /lost maxLength/]],
  ['type widened to string or null: backward ok', (s) => (s.properties.unit.type = ['string', 'null']), 'backward', 'compatible'],
  ['pattern added', (s) => (s.properties.device_id.pattern = '^d'), 'backward', [/field "device_id" got pattern "\^d" \(breaks backward\)/]],
  ['nested $ref target narrowed', (s) => (s.$defs.timestamp.oneOf[1].maximum = 10), 'backward', [/field "timestamp" got maximum 10 \(breaks backward\)/]],
  ['oneOf alternative removed', (s) => (s.$defs.timestamp.oneOf = [{ type: 'string', format: 'date-time' }]), 'backward', [/field "timestamp" no longer accepts oneOf alternative 2/]],
  ['array items narrowed', (s) => (s.properties.tags.items.maxLength = 4), 'backward', [/field "tags\[\]" got maxLength 4 \(breaks backward\)/]],
  ['constrained field added to an open object', (s) => (s.properties.context.properties.floor = { type: 'integer' }), 'backward', [/field "context.floor" was added with constraints, but the old version allowed any value there/]],
  ['unconstrained field added to an open object', (s) => (s.properties.context.properties.note = {}), 'full', 'compatible'],
  ['closing an open object', (s) => (s.properties.context.additionalProperties = false), 'backward', [/object "context" no longer accepts unknown fields \(breaks backward\)/]],
  ['mode none accepts a narrowing', (s) => (s.properties.unit.maxLength = 1), 'none', 'compatible'],
  ['x-partition-key change is refused even under none', (s) => (s['x-partition-key'] = 'unit'), 'none', [/x-partition-key changed from "device_id" to "unit".*\(always incompatible\)$/]],
  [
    'x-questdb column type change is refused even under none',
    (s) => (s['x-questdb'].columns[0].type = 'LONG'),
    'none',
    [/x-questdb column "value" changed type from DOUBLE to LONG .*\(always incompatible\)$/],
  ],
  ['x-questdb table change is refused', (s) => (s['x-questdb'].table = 'other'), 'forward', [/x-questdb table changed from "device_telemetry" to "other"/]],
  ['a new x-questdb column is fine', (s) => s['x-questdb'].columns.push({ name: 'unit', field: 'unit', type: 'SYMBOL' }), 'full', 'compatible'],
  ['an unanalysed keyword that changed counts as a break', (s) => (s.properties.unit.not = { const: 'x' }), 'backward', [/field "unit": "not" changed \(not analysed, so assumed to break\)/]],
];

for (const [name, change, mode, expected] of cases) {
  test(`compat ${mode}: ${name}`, () => {
    const next = structuredClone(base()) as Schema;
    next.$id = 'device.telemetry/v2';
    next.properties.schema_version = { const: 2 };
    change(next);
    const result = checkCompatibility(v(base(), 1), v(next as SchemaDocument, 2), mode);
    if (expected === 'compatible') {
      assert.deepEqual(result.breaks, [], `expected compatible, got: ${result.breaks.join('; ')}`);
      assert.equal(result.compatible, true);
    } else {
      assert.equal(result.compatible, false);
      for (const pattern of expected) assert.ok(result.breaks.some((b) => pattern.test(b)), `no break matches ${pattern}; got:\n${result.breaks.join('\n')}`);
    }
  });
}

test('the same change seen from both directions is reported once, as breaking both', () => {
  const next = structuredClone(base()) as Schema;
  next.properties.unit = { type: 'integer' };
  const changes = diffSchemas(base(), next).filter((c) => c.path === 'unit' && /type changed/.test(c.message));
  assert.equal(changes.length, 1);
  assert.equal(changes[0]!.backward && changes[0]!.forward, true);
});

test('compat modes come from <type>/compat.json; an unknown mode is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'compat-'));
  mkdirSync(join(dir, 'a.x'));
  mkdirSync(join(dir, 'b.y'));
  writeFileSync(join(dir, 'a.x', 'compat.json'), '{ "mode": "full" }');
  assert.deepEqual([...loadCompatModes(dir)], [['a.x', 'full']]);
  writeFileSync(join(dir, 'b.y', 'compat.json'), '{ "mode": "sideways" }');
  assert.throws(() => loadCompatModes(dir), /b\.y\/compat\.json: mode must be one of "backward", "forward", "full", "none", got "sideways"/);
});

test('npm run schemas -- check: the repo catalogue passes, an incompatible version fails with the break named', () => {
  assert.equal(checkSchemas(join(import.meta.dirname, '../../schemas')).ok, true);
  const dir = mkdtempSync(join(tmpdir(), 'schemas-'));
  mkdirSync(join(dir, 'device.telemetry'));
  const v1 = base();
  const v2 = structuredClone(v1) as Schema;
  v2.$id = 'device.telemetry/v2';
  v2.properties.schema_version = { const: 2 };
  v2.required.push('unit');
  writeFileSync(join(dir, 'device.telemetry', 'v1.json'), JSON.stringify(v1));
  writeFileSync(join(dir, 'device.telemetry', 'v2.json'), JSON.stringify(v2));
  const report = checkSchemas(dir);
  assert.equal(report.ok, false);
  assert.ok(report.lines.includes('       device.telemetry v2: field "unit" became required (breaks backward)'), report.lines.join('\n'));
  writeFileSync(join(dir, 'device.telemetry', 'compat.json'), '{"mode":"forward"}');
  assert.equal(checkSchemas(dir).ok, true, 'under forward, making a field required is fine');
});
