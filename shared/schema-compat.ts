/**
 * Compatibility of two versions of an event type's JSON Schema, decided structurally (Confluent's rules for JSON
 * Schema, applied keyword by keyword):
 *
 * - backward: the new version accepts every event valid under the old one (agents on the new version, and events
 *   without `schema_version`, which validate against the latest, keep old devices working);
 * - forward: the old version accepts every event valid under the new one (consumers still on the old version can
 *   read new events);
 * - full: both; none: no check, except for the changes that are always refused: the partition key, the QuestDB
 *   table and a QuestDB column's type (rows of one type would change partition or table, or not fit their column).
 *
 * Backward compatibility is inclusion of the old version's set of valid events in the new one's, which is
 * transitive, so checking consecutive versions covers the whole history. The check is conservative: a keyword it
 * does not analyse (allOf, not, if/then/else, patternProperties...) counts as a break both ways when it changed.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { SchemaVersion } from './schema-catalog.js';

export const COMPAT_MODES = ['backward', 'forward', 'full', 'none'] as const;
export type CompatMode = (typeof COMPAT_MODES)[number];
export const DEFAULT_COMPAT_MODE: CompatMode = 'backward';

/** One difference between two versions that some readers cannot cope with. */
export interface SchemaChange {
  /** Dotted field path (`context.location`, `tags[]`); empty for the event itself. */
  path: string;
  /** What changed, phrased from the old version to the new one: `field "unit" became required`. */
  message: string;
  /** Events valid under the old version may be refused by the new one. */
  backward: boolean;
  /** Events valid under the new version may be refused by the old one. */
  forward: boolean;
  /** Refused under every mode (partition key, QuestDB table or column type). */
  always?: boolean;
}

export interface CompatResult {
  compatible: boolean;
  mode: CompatMode;
  /** The changes that break `mode`, formatted: `device.telemetry v2: field "unit" became required (breaks backward)`. */
  breaks: string[];
  /** Every breaking change found, whatever the mode. */
  changes: SchemaChange[];
}

/** Whether `change` breaks compatibility under `mode`. */
export function breaksMode(change: SchemaChange, mode: CompatMode): boolean {
  if (change.always) return true;
  switch (mode) {
    case 'backward':
      return change.backward;
    case 'forward':
      return change.forward;
    case 'full':
      return change.backward || change.forward;
    case 'none':
      return false;
  }
}

export function formatChange(type: string, version: number, change: SchemaChange): string {
  const what = change.always
    ? 'always incompatible'
    : change.backward && change.forward
      ? 'breaks backward and forward'
      : change.backward
        ? 'breaks backward'
        : 'breaks forward';
  return `${type} v${version}: ${change.message} (${what})`;
}

/** Decides whether `next` may follow `previous` (the version before it) under `mode`. */
export function checkCompatibility(previous: SchemaVersion, next: SchemaVersion, mode: CompatMode): CompatResult {
  const changes = diffSchemas(previous.schema, next.schema);
  const breaks = changes.filter((c) => breaksMode(c, mode)).map((c) => formatChange(next.type, next.version, c));
  return { compatible: breaks.length === 0, mode, breaks, changes };
}

export interface CatalogPairResult {
  type: string;
  mode: CompatMode;
  from: number;
  to: number;
  result: CompatResult;
}

/** Checks every consecutive pair of versions of every type in `catalog` (sorted as loadSchemaCatalog sorts). */
export function checkCatalog(catalog: readonly SchemaVersion[], modes: ReadonlyMap<string, CompatMode>): CatalogPairResult[] {
  const results: CatalogPairResult[] = [];
  for (let i = 1; i < catalog.length; i++) {
    const previous = catalog[i - 1]!;
    const next = catalog[i]!;
    if (previous.type !== next.type) continue;
    const mode = modes.get(next.type) ?? DEFAULT_COMPAT_MODE;
    results.push({ type: next.type, mode, from: previous.version, to: next.version, result: checkCompatibility(previous, next, mode) });
  }
  return results;
}

/**
 * Reads each type's mode from `<dir>/<type>/compat.json` (`{ "mode": "full" }`); types without the file are
 * `backward`. Throws on an unreadable file or an unknown mode.
 */
export function loadCompatModes(dir: string): Map<string, CompatMode> {
  const modes = new Map<string, CompatMode>();
  for (const type of readdirSync(dir)) {
    const path = join(dir, type, 'compat.json');
    if (!statSync(join(dir, type)).isDirectory() || !existsSync(path)) continue;
    let mode: unknown;
    try {
      mode = (JSON.parse(readFileSync(path, 'utf8')) as { mode?: unknown }).mode;
    } catch (error) {
      throw new Error(`${path}: not valid JSON: ${(error as Error).message}`);
    }
    if (!COMPAT_MODES.includes(mode as CompatMode)) {
      throw new Error(`${path}: mode must be one of ${COMPAT_MODES.map((m) => `"${m}"`).join(', ')}, got ${JSON.stringify(mode)}`);
    }
    modes.set(type, mode as CompatMode);
  }
  return modes;
}

// ---------------------------------------------------------------------------------------------------------------
// The structural diff.

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Schema = boolean | { [key: string]: Json };

/** A subschema with the document its `$ref`s resolve against. */
interface Node {
  schema: Schema;
  root: Schema;
}

/** Keywords that do not constrain what is valid. `x-*` extensions are annotations too (checked separately at the top). */
const ANNOTATIONS = new Set([
  '$id', '$schema', '$anchor', '$comment', '$defs', 'definitions', 'title', 'description', 'default', 'examples',
  'deprecated', 'readOnly', 'writeOnly', 'contentSchema',
]);
const LOWER_BOUNDS = ['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties', 'minContains'] as const;
const UPPER_BOUNDS = ['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties', 'maxContains'] as const;
const EXACT = ['pattern', 'format', 'multipleOf', 'contentEncoding', 'contentMediaType'] as const;
const ALTERNATIVES = ['oneOf', 'anyOf'] as const;
const HANDLED = new Set<string>([
  'type', 'enum', 'const', 'properties', 'required', 'additionalProperties', 'items', 'uniqueItems', '$ref',
  ...LOWER_BOUNDS, ...UPPER_BOUNDS, ...EXACT, ...ALTERNATIVES,
]);
const MAX_DEPTH = 64;

/** Every breaking change from `previous` to `next` (whole documents, with their `x-partition-key` and `x-questdb`). */
export function diffSchemas(previous: object, next: object): SchemaChange[] {
  const out: SchemaChange[] = [];
  const o = previous as { [key: string]: Json };
  const n = next as { [key: string]: Json };
  if (o['x-partition-key'] !== n['x-partition-key']) {
    out.push({
      path: '',
      message: `x-partition-key changed from ${JSON.stringify(o['x-partition-key'])} to ${JSON.stringify(n['x-partition-key'])} (events would move to other partitions and keys)`,
      backward: true,
      forward: true,
      always: true,
    });
  }
  diffQuestDb(o['x-questdb'], n['x-questdb'], out);
  diff({ schema: o, root: o }, { schema: n, root: n }, '', out, 0);
  return merge(out);
}

function diffQuestDb(previous: Json | undefined, next: Json | undefined, out: SchemaChange[]): void {
  const o = (previous ?? {}) as { table?: string; columns?: Array<{ name: string; type: string }> };
  const n = (next ?? {}) as { table?: string; columns?: Array<{ name: string; type: string }> };
  if (o.table !== n.table) {
    out.push({
      path: '',
      message: `x-questdb table changed from ${JSON.stringify(o.table)} to ${JSON.stringify(n.table)} (rows of one type would be split over two tables)`,
      backward: true,
      forward: true,
      always: true,
    });
  }
  const before = new Map((o.columns ?? []).map((c) => [c.name, c.type]));
  for (const column of n.columns ?? []) {
    const type = before.get(column.name);
    if (type !== undefined && type !== column.type) {
      out.push({
        path: '',
        message: `x-questdb column "${column.name}" changed type from ${type} to ${column.type} (QuestDB cannot change a column's type)`,
        backward: true,
        forward: true,
        always: true,
      });
    }
  }
}

/** One message per change; the same change seen from both directions becomes one entry breaking both. */
function merge(changes: SchemaChange[]): SchemaChange[] {
  const byMessage = new Map<string, SchemaChange>();
  for (const change of changes) {
    const seen = byMessage.get(change.message);
    if (!seen) {
      byMessage.set(change.message, { ...change });
    } else {
      seen.backward ||= change.backward;
      seen.forward ||= change.forward;
      if (change.always) seen.always = true;
    }
  }
  return [...byMessage.values()];
}

function subject(path: string): string {
  return path === '' ? 'the event' : `field "${path}"`;
}

function child(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

function isObject(value: unknown): value is { [key: string]: Json } {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Follows `$ref`s into the node's own document (`#/$defs/x`); keywords beside a `$ref` are kept. */
function deref(node: Node): Node {
  let schema = node.schema;
  for (let hops = 0; isObject(schema) && typeof schema.$ref === 'string' && schema.$ref.startsWith('#') && hops < 16; hops++) {
    const target = resolvePointer(node.root, schema.$ref.slice(1));
    if (target === undefined) break;
    const { $ref: _ref, ...siblings } = schema;
    schema = target === true || target === false ? (Object.keys(siblings).length > 0 ? siblings : target) : { ...target, ...siblings };
  }
  return { schema, root: node.root };
}

function resolvePointer(root: Schema, pointer: string): Schema | undefined {
  let value: Json | undefined = root as Json;
  for (const raw of pointer.split('/').slice(1)) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObject(value)) return undefined;
    value = value[part];
  }
  return value === undefined || typeof value === 'boolean' || isObject(value) ? (value as Schema | undefined) : undefined;
}

/** True for `true`, `{}` and schemas with only annotations: any value is valid. */
function unconstrained(schema: Schema): boolean {
  if (schema === true) return true;
  if (schema === false) return false;
  return Object.keys(schema).every((k) => ANNOTATIONS.has(k) || k.startsWith('x-'));
}

function asObject(schema: Schema): { [key: string]: Json } {
  return schema === true ? {} : schema === false ? { not: {} } : schema;
}

function diff(oldNode: Node, newNode: Node, path: string, out: SchemaChange[], depth: number): void {
  if (depth > MAX_DEPTH) return;
  const o = deref(oldNode);
  const n = deref(newNode);
  if (o.schema === false && n.schema === false) return;
  if (unconstrained(o.schema) && unconstrained(n.schema)) return;
  if (n.schema === false) {
    out.push({ path, message: `${subject(path)} is no longer allowed`, backward: true, forward: false });
    return;
  }
  if (o.schema === false) {
    out.push({ path, message: `${subject(path)} was not allowed and now is`, backward: false, forward: true });
    return;
  }
  const os = asObject(o.schema);
  const ns = asObject(n.schema);
  diffTypes(os, ns, path, out);
  diffValues(os, ns, path, out);
  diffBounds(os, ns, path, out);
  diffObjects(o, n, path, out, depth);
  if ('items' in os || 'items' in ns) {
    diff({ schema: (os.items ?? true) as Schema, root: o.root }, { schema: (ns.items ?? true) as Schema, root: n.root }, `${path}[]`, out, depth + 1);
  }
  for (const keyword of ALTERNATIVES) diffAlternatives(keyword, o, n, path, out, depth);
  // Whatever else constrains the value is compared as a whole: changed means "cannot tell", a break both ways.
  for (const keyword of new Set([...Object.keys(os), ...Object.keys(ns)])) {
    if (HANDLED.has(keyword) || ANNOTATIONS.has(keyword) || keyword.startsWith('x-')) continue;
    if (!deepEqual(os[keyword], ns[keyword])) {
      out.push({ path, message: `${subject(path)}: "${keyword}" changed (not analysed, so assumed to break)`, backward: true, forward: true });
    }
  }
}

// --- type -----------------------------------------------------------------------------------------------------

const ALL_TYPES = ['array', 'boolean', 'integer', 'null', 'number', 'object', 'string'];

function typesOf(schema: { [key: string]: Json }): string[] | undefined {
  const type = schema.type;
  if (typeof type === 'string') return [type];
  if (Array.isArray(type)) return type.filter((t): t is string => typeof t === 'string');
  return undefined;
}

/** Every value of type set `a` is a value of type set `b` (integers are numbers; undefined = any type). */
function typesWithin(a: string[] | undefined, b: string[] | undefined): boolean {
  if (b === undefined) return true;
  const domain = a ?? ALL_TYPES;
  return domain.every((t) => b.includes(t) || (t === 'integer' && b.includes('number')));
}

function jsonType(value: Json): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function diffTypes(os: { [key: string]: Json }, ns: { [key: string]: Json }, path: string, out: SchemaChange[]): void {
  const to = typesOf(os);
  const tn = typesOf(ns);
  const oldValues = valuesOf(os);
  const newValues = valuesOf(ns);
  // With an enum or const, only the listed values matter, not every value of the declared type.
  const backward = oldValues ? !oldValues.every((v) => typesWithin([jsonType(v)], tn)) : !typesWithin(to, tn);
  const forward = newValues ? !newValues.every((v) => typesWithin([jsonType(v)], to)) : !typesWithin(tn, to);
  if (!backward && !forward) return;
  const name = (types: string[] | undefined) => (types === undefined ? 'any' : types.join(' or '));
  const verb = backward && forward ? 'changed' : backward ? 'narrowed' : 'widened';
  out.push({ path, message: `${subject(path)} type ${verb} from ${name(to)} to ${name(tn)}`, backward, forward });
}

// --- enum / const ---------------------------------------------------------------------------------------------

function valuesOf(schema: { [key: string]: Json }): Json[] | undefined {
  if ('const' in schema) return [schema.const!];
  if (Array.isArray(schema.enum)) return schema.enum;
  return undefined;
}

function list(values: Json[]): string {
  return values.map((v) => JSON.stringify(v)).join(', ');
}

function diffValues(os: { [key: string]: Json }, ns: { [key: string]: Json }, path: string, out: SchemaChange[]): void {
  const vo = valuesOf(os);
  const vn = valuesOf(ns);
  if (vo && vn) {
    const removed = vo.filter((v) => !vn.some((w) => deepEqual(v, w)));
    const added = vn.filter((v) => !vo.some((w) => deepEqual(v, w)));
    if (removed.length > 0) out.push({ path, message: `${subject(path)} no longer allows ${list(removed)}`, backward: true, forward: false });
    if (added.length > 0) out.push({ path, message: `${subject(path)} now also allows ${list(added)}`, backward: false, forward: true });
  } else if (vn) {
    out.push({ path, message: `${subject(path)} is now restricted to ${list(vn)}`, backward: true, forward: false });
  } else if (vo) {
    out.push({ path, message: `${subject(path)} is no longer restricted to ${list(vo)}`, backward: false, forward: true });
  }
}

// --- bounds and exact-match keywords --------------------------------------------------------------------------

function diffBounds(os: { [key: string]: Json }, ns: { [key: string]: Json }, path: string, out: SchemaChange[]): void {
  const bound = (keyword: string, lower: boolean) => {
    const a = typeof os[keyword] === 'number' ? (os[keyword] as number) : undefined;
    const b = typeof ns[keyword] === 'number' ? (ns[keyword] as number) : undefined;
    if (a === b) return;
    // A lower bound that rises, or an upper bound that falls, refuses values the old version took.
    const narrowed = b !== undefined && (a === undefined || (lower ? b > a : b < a));
    const text =
      a === undefined ? `${subject(path)} got ${keyword} ${b}` : b === undefined ? `${subject(path)} lost ${keyword} ${a}` : `${subject(path)} ${keyword} ${b > a ? 'raised' : 'lowered'} from ${a} to ${b}`;
    out.push({ path, message: text, backward: narrowed, forward: !narrowed });
  };
  for (const keyword of LOWER_BOUNDS) bound(keyword, true);
  for (const keyword of UPPER_BOUNDS) bound(keyword, false);
  for (const keyword of EXACT) {
    const a = os[keyword];
    const b = ns[keyword];
    if (deepEqual(a, b)) continue;
    if (a === undefined) out.push({ path, message: `${subject(path)} got ${keyword} ${JSON.stringify(b)}`, backward: true, forward: false });
    else if (b === undefined) out.push({ path, message: `${subject(path)} lost ${keyword} ${JSON.stringify(a)}`, backward: false, forward: true });
    else out.push({ path, message: `${subject(path)} ${keyword} changed from ${JSON.stringify(a)} to ${JSON.stringify(b)}`, backward: true, forward: true });
  }
  const uo = os.uniqueItems === true;
  const un = ns.uniqueItems === true;
  if (uo !== un) {
    out.push({ path, message: `${subject(path)} ${un ? 'now requires' : 'no longer requires'} unique items`, backward: un, forward: uo });
  }
}

// --- objects --------------------------------------------------------------------------------------------------

function diffObjects(o: Node, n: Node, path: string, out: SchemaChange[], depth: number): void {
  const os = asObject(o.schema);
  const ns = asObject(n.schema);
  const keywords = ['properties', 'required', 'additionalProperties'];
  if (!keywords.some((k) => k in os || k in ns)) return;
  const propsO = (isObject(os.properties) ? os.properties : {}) as { [key: string]: Schema };
  const propsN = (isObject(ns.properties) ? ns.properties : {}) as { [key: string]: Schema };
  // Absent additionalProperties means any extra field with any value (an open object).
  const extraO = (os.additionalProperties ?? true) as Schema;
  const extraN = (ns.additionalProperties ?? true) as Schema;
  const reqO = new Set(Array.isArray(os.required) ? (os.required as string[]) : []);
  const reqN = new Set(Array.isArray(ns.required) ? (ns.required as string[]) : []);

  for (const key of new Set([...Object.keys(propsO), ...Object.keys(propsN)])) {
    // schema_version is `const: N` in version N by convention: it differs in every version, on purpose.
    if (path === '' && key === 'schema_version') continue;
    const at = child(path, key);
    const inO = key in propsO;
    const inN = key in propsN;
    if (inO && inN) {
      diff({ schema: propsO[key]!, root: o.root }, { schema: propsN[key]!, root: n.root }, at, out, depth + 1);
    } else if (inN) {
      if (extraO === false) {
        out.push({ path: at, message: `field "${at}" was added (the old version refuses unknown fields)`, backward: false, forward: true });
      } else if (unconstrained(deref({ schema: extraO, root: o.root }).schema)) {
        if (!unconstrained(deref({ schema: propsN[key]!, root: n.root }).schema)) {
          out.push({
            path: at,
            message: `field "${at}" was added with constraints, but the old version allowed any value there (open object)`,
            backward: true,
            forward: false,
          });
        }
      } else {
        diff({ schema: extraO, root: o.root }, { schema: propsN[key]!, root: n.root }, at, out, depth + 1);
      }
    } else {
      if (extraN === false) {
        out.push({ path: at, message: `field "${at}" was removed (the new version refuses unknown fields)`, backward: true, forward: false });
      } else if (unconstrained(deref({ schema: extraN, root: n.root }).schema)) {
        if (!unconstrained(deref({ schema: propsO[key]!, root: o.root }).schema)) {
          out.push({
            path: at,
            message: `field "${at}" was removed, so new events may carry any value there, which the old version constrains`,
            backward: false,
            forward: true,
          });
        }
      } else {
        diff({ schema: propsO[key]!, root: o.root }, { schema: extraN, root: n.root }, at, out, depth + 1);
      }
    }
  }

  for (const key of reqN) {
    if (reqO.has(key)) continue;
    const text = key in propsO ? `field "${child(path, key)}" became required` : `field "${child(path, key)}" was added as required`;
    out.push({ path: child(path, key), message: text, backward: true, forward: false });
  }
  for (const key of reqO) {
    if (reqN.has(key)) continue;
    const text = key in propsN ? `field "${child(path, key)}" is no longer required` : `required field "${child(path, key)}" was removed`;
    out.push({ path: child(path, key), message: text, backward: false, forward: true });
  }

  const what = path === '' ? 'the event' : `object "${path}"`;
  if (extraN === false && extraO !== false) {
    out.push({ path, message: `${what} no longer accepts unknown fields`, backward: true, forward: false });
  } else if (extraO === false && extraN !== false) {
    out.push({ path, message: `${what} now accepts unknown fields`, backward: false, forward: true });
  } else if (extraO !== false && extraN !== false) {
    diff({ schema: extraO, root: o.root }, { schema: extraN, root: n.root }, `${child(path, '*')}`, out, depth + 1);
  }
}

// --- oneOf / anyOf --------------------------------------------------------------------------------------------

function diffAlternatives(keyword: 'oneOf' | 'anyOf', o: Node, n: Node, path: string, out: SchemaChange[], depth: number): void {
  const os = asObject(o.schema);
  const ns = asObject(n.schema);
  if (!(keyword in os) && !(keyword in ns)) return;
  // A schema without the keyword is one alternative: itself.
  const branches = (schema: { [key: string]: Json }, whole: Schema): Schema[] =>
    Array.isArray(schema[keyword]) ? (schema[keyword] as Schema[]) : [whole];
  const bo = branches(os, o.schema);
  const bn = branches(ns, n.schema);
  if (bo.length === bn.length) {
    // Same shape: compare alternative by alternative, so the message names the actual change.
    for (let i = 0; i < bo.length; i++) {
      diff({ schema: bo[i]!, root: o.root }, { schema: bn[i]!, root: n.root }, path, out, depth + 1);
    }
    return;
  }
  const changes = (a: Schema, b: Schema): SchemaChange[] => {
    const found: SchemaChange[] = [];
    diff({ schema: a, root: o.root }, { schema: b, root: n.root }, path, found, depth + 1);
    return found;
  };
  bo.forEach((old, i) => {
    if (!bn.some((candidate) => changes(old, candidate).every((c) => !c.backward))) {
      out.push({ path, message: `${subject(path)} no longer accepts ${keyword} alternative ${i + 1} ${short(old)}`, backward: true, forward: false });
    }
  });
  bn.forEach((candidate, i) => {
    if (!bo.some((old) => changes(old, candidate).every((c) => !c.forward))) {
      out.push({ path, message: `${subject(path)} gained ${keyword} alternative ${i + 1} ${short(candidate)}`, backward: false, forward: true });
    }
  });
}

function short(schema: Schema): string {
  const text = JSON.stringify(schema);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    return a.length === other.length && a.every((v, i) => deepEqual(v, other[i]));
  }
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  return ka.length === kb.length && ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
