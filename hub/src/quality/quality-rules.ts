/**
 * Data-quality rules, declared beside the schemas: `schemas/<type>/quality.json` says what "good data" means for
 * that event type (fields it should carry, plausible ranges, drift, clock-skew tolerance, silence, alert
 * thresholds). Each file is checked against QUALITY_FILE_SCHEMA (ajv, defaults filled in, unknown fields refused)
 * and compiled into ordinary hub rules, published into the rules bucket like the rule files, so every hub runs
 * them in its partitions' operator sets and a change reaches them without a restart:
 *
 *   quality.<type>   kind data_quality: the per-minute counts of `data_quality` (operators/data-quality.ts), and its
 *                    alerts quality.<type>.drift and quality.<type>.silent (a key that stops sending for silence.afterMs)
 *
 * The required fields of the type's latest schema version count for completeness too, besides `expectedFields`
 * (an event missing a required field never got this far; listing them keeps the score honest if a schema relaxes).
 * `alerts` holds the thresholds the quality alert evaluator applies to the summed minutes (quality-alerts.ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { formatAjvErrors } from '../../../shared/config.js';
import { isEventTypeName, loadSchemaCatalog } from '../../../shared/schema-catalog.js';
import { errorMessage } from '../errors.js';
import { driftCheckSchema, rangeCheckSchema, validateRule, type Rule } from '../operators/rules.js';
import type { RuleFileProblem, RuleFromFile } from '../rules/index.js';

export const QUALITY_FILE = 'quality.json';

/** The rules compiled from quality files (and any data_quality rule): left out when quality.enabled is false. */
export function isQualityRule(rule: Rule): boolean {
  return rule.kind === 'data_quality' || rule.name.startsWith('quality.');
}

const keyBy = { type: ['string', 'array'], minLength: 1, items: { type: 'string', minLength: 1 }, minItems: 1, description: '`key` (device or user id), a dotted body path, or a list. @default key' } as const;

export const QUALITY_FILE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    $comment: { type: 'string' },
    expectedFields: { type: 'array', items: { type: 'string', minLength: 1 }, default: [], description: 'Optional fields (dotted body paths) an event is expected to carry; completeness counts them with the required ones.' },
    ranges: { type: 'array', default: [], items: rangeCheckSchema },
    drift: { type: 'array', default: [], items: driftCheckSchema },
    futureToleranceMs: { type: 'integer', minimum: 0, default: 5000, description: 'Event time this far past the agent\'s receive time counts as from the future (clock skew).' },
    allowedLatenessMs: { type: 'integer', minimum: 0, default: 600000, description: 'How long a minute can be corrected by late events.' },
    duplicateMemory: { type: 'integer', minimum: 0, maximum: 10000000, default: 20000, description: 'Recent event ids (of the type, per partition) a duplicate is looked for among; about 2 MB per 20k.' },
    severity: { enum: ['info', 'warning', 'critical'], default: 'warning' },
    silence: {
      type: 'object',
      additionalProperties: false,
      required: ['afterMs'],
      properties: { afterMs: { type: 'integer', minimum: 1000 }, keyBy },
    },
    alerts: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Thresholds on the minutes of a source (all partitions summed); each must hold for forMinutes in a row.',
      properties: {
        forMinutes: { type: 'integer', minimum: 1, maximum: 1440, default: 5 },
        validityBelow: { type: 'number', minimum: 0, maximum: 1, description: 'Share of a source\'s events that passed validation at the edge.' },
        completenessBelow: { type: 'number', minimum: 0, maximum: 1 },
        lagP95AboveMs: { type: 'number', minimum: 0, description: 'Ingest lag p95 (worst partition) above this.' },
        duplicateShareAbove: { type: 'number', minimum: 0, maximum: 1 },
        futureShareAbove: { type: 'number', minimum: 0, maximum: 1 },
        outOfRangeShareAbove: { type: 'number', minimum: 0, maximum: 1 },
      },
    },
  },
} as const;

export interface QualityAlertThresholds {
  forMinutes: number;
  validityBelow?: number;
  completenessBelow?: number;
  lagP95AboveMs?: number;
  duplicateShareAbove?: number;
  futureShareAbove?: number;
  outOfRangeShareAbove?: number;
}

export interface QualityFile {
  expectedFields: string[];
  ranges: Array<{ field: string; min?: number; max?: number; where?: Record<string, string | number | boolean> }>;
  drift: Array<{ field: string; where?: Record<string, string | number | boolean>; keyBy?: string | string[]; baselineEvents?: number; recentEvents?: number; maxStdDevs?: number; minEvents?: number }>;
  futureToleranceMs: number;
  allowedLatenessMs: number;
  duplicateMemory: number;
  severity: 'info' | 'warning' | 'critical';
  silence?: { afterMs: number; keyBy?: string | string[] };
  alerts: QualityAlertThresholds;
}

/** What the quality files of a schemas folder declare. */
export interface QualityRuleSet {
  /** The compiled rules, each with the file it came from (`<type>/quality.json`). */
  rules: RuleFromFile[];
  /** Alert thresholds per event type. */
  alerts: Map<string, QualityAlertThresholds>;
  problems: RuleFileProblem[];
  /** Content hash of every quality file read: a change of it is a change of the rules. */
  fingerprint: string;
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true });
const validateFile = ajv.compile(QUALITY_FILE_SCHEMA);

/** Checks one quality file's JSON; throws an Error naming each bad field (`quality.ranges[0].min must be number`). */
export function parseQualityFile(text: string, path: string): QualityFile {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not JSON: ${errorMessage(error)}`);
  }
  if (!validateFile(value)) throw new Error(`${path}: ${formatAjvErrors(validateFile.errors ?? [], 'quality').join('; ')}`);
  const file = value as unknown as QualityFile;
  const problems: string[] = [];
  file.ranges.forEach((range, i) => {
    if (range.min === undefined && range.max === undefined) problems.push(`quality.ranges[${i}] needs min, max or both`);
    if (range.min !== undefined && range.max !== undefined && range.min > range.max) problems.push(`quality.ranges[${i}].min must be <= max (${range.max}), got ${range.min}`);
  });
  if (problems.length > 0) throw new Error(`${path}: ${problems.join('; ')}`);
  return file;
}

/** The rules one type's quality file compiles to (validated as hub rules, defaults filled in). */
export function compileQualityRules(type: string, file: QualityFile, requiredFields: readonly string[]): Rule[] {
  const expectedFields = [...new Set([...requiredFields, ...file.expectedFields])];
  const rules: Rule[] = [
    validateRule({
      kind: 'data_quality',
      name: `quality.${type}`,
      description: `Data quality of ${type} per source and minute (schemas/${type}/${QUALITY_FILE}).`,
      eventType: type,
      severity: file.severity,
      expectedFields,
      ranges: file.ranges,
      drift: file.drift,
      futureToleranceMs: file.futureToleranceMs,
      allowedLatenessMs: file.allowedLatenessMs,
      duplicateMemory: file.duplicateMemory,
      ...(file.silence ? { silence: { afterMs: file.silence.afterMs, keyBy: file.silence.keyBy ?? 'key' } } : {}),
    }),
  ];
  return rules;
}

/** Reads every `<type>/quality.json` under the schemas folder. A bad file is a problem (named), never a throw. */
export function readQualityRules(schemasDir: string): QualityRuleSet {
  const set: QualityRuleSet = { rules: [], alerts: new Map(), problems: [], fingerprint: '' };
  const hash = createHash('sha256');
  if (!existsSync(schemasDir)) return { ...set, fingerprint: hash.digest('hex') };
  let required: Map<string, string[]> | undefined;
  for (const type of readdirSync(schemasDir).sort()) {
    const path = join(schemasDir, type, QUALITY_FILE);
    if (!isEventTypeName(type) || !existsSync(path) || !statSync(join(schemasDir, type)).isDirectory()) continue;
    const where = `${type}/${QUALITY_FILE}`;
    try {
      const text = readFileSync(path, 'utf8');
      hash.update(`${where}\n${text}\n`);
      const file = parseQualityFile(text, where);
      required ??= requiredFieldsByType(schemasDir);
      for (const rule of compileQualityRules(type, file, required.get(type) ?? [])) set.rules.push({ rule, file: where });
      set.alerts.set(type, file.alerts);
    } catch (error) {
      set.problems.push({ file: where, error: errorMessage(error) });
    }
  }
  // The required fields count for completeness: a schema version that changes them changes the rules too.
  if (required) hash.update(JSON.stringify([...required]));
  return { ...set, fingerprint: hash.digest('hex') };
}

/** Top-level required fields of each type's latest schema version. */
function requiredFieldsByType(schemasDir: string): Map<string, string[]> {
  const latest = new Map<string, string[]>();
  for (const version of loadSchemaCatalog(schemasDir)) {
    const required = (version.schema as { required?: unknown }).required;
    latest.set(version.type, Array.isArray(required) ? required.filter((f): f is string => typeof f === 'string') : []);
  }
  return latest;
}
