/**
 * The declarative rule format: one JSON/YAML object per rule, discriminated by `kind`, checked against a JSON
 * Schema (ajv, defaults filled in, unknown fields refused) and then for what a schema cannot say (slide longer
 * than size, a `having` naming no aggregate). Errors name the field: `rules[2].durationMs must be >= 1`.
 * `createOperator` builds the operator a rule describes, through a plain map of kinds (explicit registration).
 *
 * Rule files (hub/rules/*.yaml) hold `{ rules: [...] }`. Durations are milliseconds, as everywhere in the hub.
 */
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { formatAjvErrors } from '../../../shared/config.js';
import { AbsenceOperator, type AbsenceRule } from './absence.js';
import { aggregateFunctions, AGGREGATE_FNS } from './aggregates.js';
import { COMPARE_OPS } from './compare.js';
import { CountInWindowOperator, type CountInWindowRule } from './count-in-window.js';
import { DataQualityOperator, type DataQualityRule } from './data-quality.js';
import { OperatorError, OperatorErrorCode } from './errors.js';
import type { StreamOperator } from './operator.js';
import { SequenceWithinOperator, type SequenceWithinRule } from './sequence-within.js';
import { ThresholdDurationOperator, type ThresholdDurationRule } from './threshold-duration.js';
import { WindowOperator, type WindowRule } from './window-operator.js';

export type Rule = WindowRule | ThresholdDurationRule | SequenceWithinRule | AbsenceRule | CountInWindowRule | DataQualityRule;
export type RuleKind = Rule['kind'];

const durationMs = (description: string, minimum = 1) => ({ type: 'integer', minimum, description });

const common = {
  name: {
    type: 'string',
    pattern: '^[A-Za-z0-9_.-]{1,64}$',
    description: 'Unique rule name; appears in every result and alert (letters, digits, `_`, `.`, `-`).',
  },
  description: { type: 'string', description: 'What the rule is for, for people. @default unset' },
} as const;

const eventType = { type: 'string', minLength: 1, description: 'Wire event type the rule reads, e.g. `device.telemetry`.' } as const;

const where = {
  type: 'object',
  additionalProperties: { type: ['string', 'number', 'boolean'] },
  description: 'Body fields (dotted paths) that must equal these values, e.g. `{ metric: temperature }`. @default unset',
} as const;

const keyBy = {
  type: ['string', 'array'],
  minLength: 1,
  items: { type: 'string', minLength: 1 },
  minItems: 1,
  default: 'key',
  description: '`key` (the wire key: device or user id), a dotted body path, or a list of them. @default key',
} as const;

const severity = {
  enum: ['info', 'warning', 'critical'],
  default: 'warning',
  description: 'Severity of the alerts. @default warning',
} as const;

const windowSchema = {
  type: 'object',
  discriminator: { propertyName: 'type' },
  description: 'Window type and size.',
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['type', 'sizeMs'],
      properties: { type: { const: 'tumbling' }, sizeMs: durationMs('Window length.') },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['type', 'sizeMs', 'slideMs'],
      properties: {
        type: { const: 'sliding' },
        sizeMs: durationMs('Window length.'),
        slideMs: durationMs('Time between window starts (at most sizeMs).'),
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['type', 'gapMs'],
      properties: { type: { const: 'session' }, gapMs: durationMs('Inactivity that ends a session.') },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['type', 'size'],
      properties: { type: { const: 'count' }, size: { type: 'integer', minimum: 1, description: 'Events per window.' } },
    },
  ],
} as const;

const filterStep = {
  type: 'object',
  additionalProperties: false,
  required: ['eventType'],
  properties: {
    eventType,
    where,
    times: { type: 'integer', minimum: 1, maximum: 1000, default: 1, description: 'Consecutive events this step needs. @default 1' },
  },
} as const;

/** A range check of a data_quality rule (also the items of `ranges` in schemas/<type>/quality.json). */
export const rangeCheckSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['field'],
  properties: { field: { type: 'string', minLength: 1 }, min: { type: 'number' }, max: { type: 'number' }, where },
} as const;

/** A drift check of a data_quality rule (also the items of `drift` in schemas/<type>/quality.json). */
export const driftCheckSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['field'],
  properties: {
    field: { type: 'string', minLength: 1 },
    where,
    keyBy,
    baselineEvents: { type: 'integer', minimum: 2, maximum: 1000000, default: 500, description: 'Events the long-run mean remembers. @default 500' },
    recentEvents: { type: 'integer', minimum: 1, maximum: 100000, default: 10, description: 'Events the recent mean remembers. @default 10' },
    maxStdDevs: { type: 'number', exclusiveMinimum: 0, default: 4, description: '@default 4' },
    minEvents: { type: 'integer', minimum: 2, default: 50, description: 'No verdict before a key has this many events. @default 50' },
  },
} as const;

/** JSON Schema of one rule. */
export const ruleSchema = {
  type: 'object',
  discriminator: { propertyName: 'kind' },
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'name', 'eventType', 'window', 'aggregates'],
      properties: {
        kind: { const: 'window' },
        ...common,
        eventType,
        where,
        keyBy,
        window: windowSchema,
        aggregates: {
          type: 'array',
          minItems: 1,
          description: 'Values computed per key and window.',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'fn'],
            properties: {
              name: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]{0,63}$', description: 'Name of the value in the result.' },
              fn: { enum: AGGREGATE_FNS, description: 'Aggregate function.' },
              field: { type: 'string', minLength: 1, description: 'Field aggregated; `count` without one counts events. @default unset' },
            },
          },
        },
        allowedLatenessMs: { ...durationMs('How long after a window ends a late event still revises it. @default 0', 0), default: 0 },
        having: {
          type: 'object',
          additionalProperties: false,
          required: ['aggregate', 'op', 'value'],
          description: 'Emit a window only when this holds (e.g. completions >= 3). @default unset',
          properties: { aggregate: { type: 'string' }, op: { enum: COMPARE_OPS }, value: { type: 'number' } },
        },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'name', 'eventType', 'field', 'op', 'value', 'durationMs'],
      properties: {
        kind: { const: 'threshold_duration' },
        ...common,
        eventType,
        where,
        keyBy,
        severity,
        field: { type: 'string', minLength: 1, description: 'Numeric field compared.' },
        op: { enum: COMPARE_OPS, description: 'Comparison with `value`.' },
        value: { type: 'number', description: 'Threshold.' },
        durationMs: durationMs('How long the condition must hold.'),
        maxGapMs: durationMs('Readings further apart than this end the episode. @default unset'),
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'name', 'steps', 'withinMs'],
      properties: {
        kind: { const: 'sequence_within' },
        ...common,
        keyBy,
        severity,
        steps: { type: 'array', minItems: 1, maxItems: 30, items: filterStep, description: 'Steps in order.' },
        withinMs: durationMs('Longest time from the first to the last event of a match.'),
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'name', 'eventType', 'silenceMs'],
      properties: {
        kind: { const: 'absence' },
        ...common,
        eventType,
        where,
        keyBy,
        severity,
        silenceMs: durationMs('Event time without an event of the key that counts as silence.'),
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'name', 'eventType', 'windowMs', 'threshold'],
      properties: {
        kind: { const: 'count_in_window' },
        ...common,
        eventType,
        where,
        keyBy,
        severity,
        windowMs: durationMs('Length of the sliding window.'),
        threshold: { type: 'integer', minimum: 0, maximum: 100000, description: 'Alert when a key has more events than this in the window.' },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'name', 'eventType'],
      description: 'Data quality per source and minute (usually compiled from schemas/<type>/quality.json).',
      properties: {
        kind: { const: 'data_quality' },
        ...common,
        eventType,
        severity,
        expectedFields: { type: 'array', items: { type: 'string', minLength: 1 }, default: [], description: 'Dotted body paths an event should carry (completeness). @default []' },
        ranges: { type: 'array', default: [], description: 'Plausible ranges of numeric fields; values outside are counted. @default []', items: rangeCheckSchema },
        drift: { type: 'array', default: [], description: 'Fields whose recent mean per key must stay within maxStdDevs of its long-run mean. @default []', items: driftCheckSchema },
        futureToleranceMs: { ...durationMs('Events stamped later than this after the agent received them count as from the future (clock skew). @default 5000', 0), default: 5000 },
        allowedLatenessMs: { ...durationMs('How long after its end a minute can still be corrected by a late event. @default 600000', 0), default: 600_000 },
        silence: {
          type: 'object',
          additionalProperties: false,
          required: ['afterMs'],
          description: 'Alert <name>.silent when a key sends nothing for afterMs of event time. @default unset',
          properties: { afterMs: durationMs('Event time without an event of the key that counts as silence.'), keyBy },
        },
        duplicateMemory: { type: 'integer', minimum: 0, maximum: 10000000, default: 20000, description: 'Most recent event ids (of the type, per partition) a duplicate is looked for among; about 2 MB per 20k. @default 20000' },
      },
    },
  ],
} as const;

/** JSON Schema of a rule file. */
export const ruleFileSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['rules'],
  properties: { rules: { type: 'array', items: ruleSchema, description: 'The rules of the file.' } },
} as const;

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true, discriminator: true });
const validateRuleSchema = ajv.compile(ruleSchema);
const validateFileSchema = ajv.compile(ruleFileSchema);

/** Checks one rule and returns a copy with defaults filled in; throws OperatorError naming every bad field. */
export function validateRule(input: unknown, path = 'rule'): Rule {
  const rule = structuredClone(input);
  const what = `invalid rule${ruleName(input)}`;
  if (!validateRuleSchema(rule)) throw invalid(what, describeErrors(validateRuleSchema.errors ?? [], path));
  const problems = semanticProblems(rule as Rule, path);
  if (problems.length > 0) throw invalid(what, problems);
  return rule as Rule;
}

/** Parses a rule file (YAML or JSON text) and checks every rule in it, and that names are unique. */
export function parseRuleFile(text: string, source: string): Rule[] {
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (error) {
    throw new OperatorError(OperatorErrorCode.RULE_INVALID, `rule file ${source} is not valid YAML: ${(error as Error).message}`);
  }
  const what = `invalid rule file ${source}`;
  if (!validateFileSchema(parsed)) throw invalid(what, describeErrors(validateFileSchema.errors ?? [], 'file'));
  const rules = (parsed as { rules: Rule[] }).rules;
  const problems = rules.flatMap((rule, i) => semanticProblems(rule, `file.rules[${i}]`));
  if (problems.length > 0) throw invalid(what, problems);
  checkUniqueNames(rules, source);
  return rules;
}

/** Refuses two rules with one name: results and alerts, and snapshots, are told apart by it. */
export function checkUniqueNames(rules: Rule[], source = 'rules'): void {
  const seen = new Set<string>();
  const duplicates = new Set<string>();
  for (const { name } of rules) (seen.has(name) ? duplicates : seen).add(name);
  if (duplicates.size > 0) {
    throw invalid(`invalid rules in ${source}`, [...duplicates].map((name) => `rule name "${name}" is used more than once`));
  }
}

/** Explicit registration: one line per kind. */
const operatorFactories: { [K in RuleKind]: (rule: Extract<Rule, { kind: K }>) => StreamOperator } = {
  window: (rule) => new WindowOperator(rule),
  threshold_duration: (rule) => new ThresholdDurationOperator(rule),
  sequence_within: (rule) => new SequenceWithinOperator(rule),
  absence: (rule) => new AbsenceOperator(rule),
  count_in_window: (rule) => new CountInWindowOperator(rule),
  data_quality: (rule) => new DataQualityOperator(rule),
};

/**
 * Builds the operator a rule describes. Takes a `Rule` or any parsed object: it is validated first (defaults
 * filled in), so a hand-written rule missing a default works and a bad one fails with the field named.
 */
export function createOperator(input: unknown): StreamOperator {
  const rule = validateRule(input);
  const create = operatorFactories[rule.kind] as (rule: Rule) => StreamOperator;
  return create(rule);
}

/**
 * Names an aggregate cannot have: each aggregate is a column of the window result rows (window_results in QuestDB),
 * beside these columns every row has. Compared in lower case, as QuestDB column names are.
 */
export const RESERVED_AGGREGATE_NAMES: readonly string[] = ['ts', 'rule', 'key', 'window_end', 'revision', 'final', 'superseded', 'text_values', 'written_at'];

function semanticProblems(rule: Rule, path: string): string[] {
  const problems: string[] = [];
  if (rule.kind === 'data_quality') {
    rule.ranges.forEach((range, i) => {
      if (range.min === undefined && range.max === undefined) problems.push(`${path}.ranges[${i}] needs min, max or both`);
      if (range.min !== undefined && range.max !== undefined && range.min > range.max) problems.push(`${path}.ranges[${i}].min must be <= max (${range.max}), got ${range.min}`);
    });
  }
  if (rule.kind === 'window') {
    const names = new Set<string>();
    rule.aggregates.forEach((aggregate, i) => {
      if (aggregateFunctions[aggregate.fn].needsField && aggregate.field === undefined) {
        problems.push(`${path}.aggregates[${i}].field is required for fn "${aggregate.fn}"`);
      }
      if (names.has(aggregate.name)) problems.push(`${path}.aggregates[${i}].name "${aggregate.name}" is used twice`);
      if (RESERVED_AGGREGATE_NAMES.includes(aggregate.name.toLowerCase())) {
        problems.push(`${path}.aggregates[${i}].name "${aggregate.name}" is reserved for a column of every window result (${RESERVED_AGGREGATE_NAMES.join(', ')})`);
      }
      names.add(aggregate.name);
    });
    if (rule.window.type === 'sliding' && rule.window.slideMs > rule.window.sizeMs) {
      problems.push(`${path}.window.slideMs must be <= sizeMs (${rule.window.sizeMs}), got ${rule.window.slideMs}`);
    }
    if (rule.having && !names.has(rule.having.aggregate)) {
      problems.push(`${path}.having.aggregate must name one of the aggregates (${[...names].join(', ')}), got "${rule.having.aggregate}"`);
    }
  }
  return problems;
}

/** ajv errors as sentences naming the field; a bad `kind` or window `type` lists the allowed values. */
function describeErrors(errors: ErrorObject[], root: string): string[] {
  const lines = errors.map((raw) => {
    // Array positions as `[0]`, like the semantic checks: `rule.aggregates[0].fn`.
    const error = { ...raw, instancePath: raw.instancePath.replace(/\/(\d+)(?=\/|$)/g, '[$1]') };
    if (error.keyword !== 'discriminator') return formatAjvErrors([error], root)[0]!;
    const { tag } = error.params as { tag: string };
    const path = root + error.instancePath.replace(/\//g, '.');
    const allowed = tag === 'kind' ? ruleSchema.oneOf.map((branch) => branch.properties.kind.const) : windowSchema.oneOf.map((branch) => branch.properties.type.const);
    return `${path}.${tag} must be one of ${allowed.map((value) => JSON.stringify(value)).join(', ')}`;
  });
  return [...new Set(lines)];
}

function ruleName(input: unknown): string {
  const name = (input as { name?: unknown } | null)?.name;
  return typeof name === 'string' ? ` "${name}"` : '';
}

function invalid(what: string, problems: string[]): OperatorError {
  return new OperatorError(OperatorErrorCode.RULE_INVALID, `${what}:\n${problems.map((line) => `  - ${line}`).join('\n')}`);
}
