/**
 * `npm run schemas -- check [--dir schemas]`: checks the schema catalogue before it ships. Every version must be a
 * well-formed document that compiles the way the agent compiles it, and every version must be compatible with
 * the one before it under its type's mode (`<type>/compat.json`, `backward` by default). Exits 1 on any problem,
 * naming it: `device.telemetry v2: field "unit" became required (breaks backward)`.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createSchemaAjv } from './schema-ajv.js';
import { DEFAULT_SCHEMA_DIR, loadSchemaCatalog, type SchemaVersion } from './schema-catalog.js';
import { checkCatalog, DEFAULT_COMPAT_MODE, loadCompatModes, type CompatMode } from './schema-compat.js';

export interface CheckReport {
  ok: boolean;
  lines: string[];
}

/** The whole check as lines of text; `ok` is false when the catalogue must not ship. */
export function checkSchemas(dir: string): CheckReport {
  const lines: string[] = [];
  let catalog: SchemaVersion[];
  let modes: Map<string, CompatMode>;
  try {
    catalog = loadSchemaCatalog(dir);
    modes = loadCompatModes(dir);
  } catch (error) {
    return { ok: false, lines: [`FAIL ${(error as Error).message}`] };
  }
  let ok = true;
  const ajv = createSchemaAjv();
  for (const entry of catalog) {
    try {
      ajv.compile(entry.schema);
    } catch (error) {
      ok = false;
      lines.push(`FAIL ${entry.type} v${entry.version} does not compile: ${(error as Error).message}`);
    }
  }
  const types = [...new Set(catalog.map((e) => e.type))];
  for (const type of types) {
    const versions = catalog.filter((e) => e.type === type).map((e) => e.version);
    const gaps = versions.filter((v, i) => i > 0 && v !== versions[i - 1]! + 1);
    const mode = modes.get(type) ?? DEFAULT_COMPAT_MODE;
    lines.push(`${type}: v${versions.join(', v')} (mode ${mode})${gaps.length > 0 ? `; note: no version before v${gaps.join(', v')}` : ''}`);
  }
  for (const pair of checkCatalog(catalog, modes)) {
    if (pair.result.compatible) {
      lines.push(`  ok   ${pair.type} v${pair.from} -> v${pair.to} (${pair.mode})`);
    } else {
      ok = false;
      lines.push(`  FAIL ${pair.type} v${pair.from} -> v${pair.to} (${pair.mode}):`);
      for (const line of pair.result.breaks) lines.push(`       ${line}`);
    }
  }
  lines.push(ok ? `schemas in ${dir}: ok` : `schemas in ${dir}: NOT compatible, see FAIL lines`);
  return { ok, lines };
}

function main(argv: string[]): number {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { dir: { type: 'string', default: DEFAULT_SCHEMA_DIR } } });
  if (positionals[0] !== 'check' || positionals.length !== 1) {
    process.stderr.write('usage: npm run schemas -- check [--dir <schemas folder>]\n');
    return 2;
  }
  const report = checkSchemas(values.dir);
  for (const line of report.lines) process.stdout.write(`${line}\n`);
  return report.ok ? 0 : 1;
}

// Run as a script (npm run schemas), not when a test imports checkSchemas.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) process.exitCode = main(process.argv.slice(2));
