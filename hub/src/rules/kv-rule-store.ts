/**
 * Rules live in a NATS KV bucket (`hub-rules`, replicas 3), one key per rule: `rule.<name>` holds the rule as JSON
 * (validated, defaults filled in, keys sorted). The hub publishes its rule files into it at start and every hub
 * watches it, so a rule put, changed or deleted in KV (rules-cli.ts, or `nats kv`) takes effect without a restart.
 *
 * Files vs KV: `publishRuleFiles` never overwrites a rule edited in KV with a file. It knows what the files put last
 * from a marker key per rule, `file.<name>` = `{ sha256, file }` of the value it wrote: a KV value with that hash is
 * the files' own (so a changed file replaces it); any other value was put in KV since (kept, unless `force`). A rule
 * deleted in KV stays deleted while its file is unchanged; a changed file brings it back.
 *
 * Refusals: a value that is not a valid rule (or whose name is not its key's) is logged with the field at fault and
 * ignored; the previous version of that rule stays active.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kvm, type KV, type KvWatchEntry, type KvWatchOptions } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator } from '@nats-io/transport-node';
import { ResumableKvWatch } from '../../../shared/kv-watch.js';
import type { Logger } from '../../../shared/logger.js';
import { errorMessage } from '../errors.js';
import { OperatorError, OperatorErrorCode } from '../operators/errors.js';
import { parseRuleFile, validateRule, type Rule } from '../operators/rules.js';

export const DEFAULT_RULES_BUCKET = 'hub-rules';
export const DEFAULT_RULES_REPLICAS = 3;
/** hub/rules, from the sources (hub/src/rules/) or from compiled JS (dist/hub/src/rules/). */
export const DEFAULT_RULES_DIR =
  [new URL('../../rules', import.meta.url), new URL('../../../../hub/rules', import.meta.url)].map((url) => fileURLToPath(url)).find((dir) => existsSync(dir)) ??
  fileURLToPath(new URL('../../rules', import.meta.url));

const RULE_PREFIX = 'rule.';
const MARKER_PREFIX = 'file.';
/** Rule files the publisher reads (YAML is a superset of JSON: one parser for both). */
const RULE_FILE = /\.(ya?ml|json)$/i;

export interface RuleBucketOptions {
  /** @default hub-rules */
  bucket?: string | undefined;
  /** Replicas when the bucket is created (an existing bucket keeps its own). @default 3 */
  replicas?: number | undefined;
}

/** The KV key of a rule; throws HUB_ERR_RULE_INVALID for a name that is no usable key (`a..b`, `.a`). */
export function ruleKey(name: string): string {
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(name)) {
    throw new OperatorError(
      OperatorErrorCode.RULE_INVALID,
      `rule name "${name}" cannot be a KV key: use letters, digits, "_", "-", and "." only between them`,
    );
  }
  return RULE_PREFIX + name;
}

/** The rule name of a `rule.<name>` key, or undefined for other keys. */
export function ruleNameOf(key: string): string | undefined {
  return key.startsWith(RULE_PREFIX) && key.length > RULE_PREFIX.length ? key.slice(RULE_PREFIX.length) : undefined;
}

/** JSON with object keys sorted, so equal rules have equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** The KV value of a rule: validated (defaults filled in), canonical JSON. */
export function encodeRule(rule: unknown): string {
  return canonicalJson(validateRule(rule));
}

/** A KV value back to a rule; throws HUB_ERR_RULE_INVALID naming the field at fault, or a name that is not the key's. */
export function decodeRule(key: string, text: string): Rule {
  const name = ruleNameOf(key);
  if (name === undefined) throw new OperatorError(OperatorErrorCode.RULE_INVALID, `key ${key} is not a rule key (rule.<name>)`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new OperatorError(OperatorErrorCode.RULE_INVALID, `${key} is not JSON: ${errorMessage(error)}`);
  }
  const rule = validateRule(parsed);
  if (rule.name !== name) throw new OperatorError(OperatorErrorCode.RULE_INVALID, `${key}: rule.name must be "${name}" (the key's), got "${rule.name}"`);
  return rule;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Opens the bucket, creating it when missing. The handle returned reads through the stream leader (`open` binds
 * without direct get), so a value just written is what `get` returns: the compare-and-set in `publishRuleFiles`
 * and the CLI rely on it. A handle from `create` would read from any replica (allow_direct).
 */
export async function openRuleBucket(nc: NatsConnection, options: RuleBucketOptions = {}): Promise<KV> {
  const bucket = options.bucket ?? DEFAULT_RULES_BUCKET;
  await new Kvm(nc).create(bucket, {
    replicas: options.replicas ?? DEFAULT_RULES_REPLICAS,
    // A few versions back, for `nats kv history` after a bad edit.
    history: 5,
    description: 'Hub window and CEP rules (rule.<name>, JSON), watched by every hub; file.<name> marks what rule files published',
  });
  return new Kvm(nc).open(bucket);
}

export interface RuleFromFile {
  rule: Rule;
  /** The file's name within the folder. */
  file: string;
}

export interface RuleFileProblem {
  file: string;
  error: string;
}

/**
 * Reads and checks every rule file of a folder (sorted by name). A file that does not parse or validate is
 * reported and left out; so is every rule whose name more than one file uses.
 */
export function readRuleFiles(dir: string): { rules: RuleFromFile[]; problems: RuleFileProblem[] } {
  const problems: RuleFileProblem[] = [];
  const found: RuleFromFile[] = [];
  const files = readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isFile() && RULE_FILE.test(entry.name))
    .map((entry) => entry.name)
    .sort();
  for (const file of files) {
    try {
      for (const rule of parseRuleFile(readFileSync(join(dir, file), 'utf8'), file)) {
        ruleKey(rule.name);
        found.push({ rule, file });
      }
    } catch (error) {
      problems.push({ file, error: errorMessage(error) });
    }
  }
  const filesOf = new Map<string, string[]>();
  for (const { rule, file } of found) filesOf.set(rule.name, [...(filesOf.get(rule.name) ?? []), file]);
  const rules = found.filter(({ rule, file }) => {
    const where = filesOf.get(rule.name)!;
    if (where.length === 1) return true;
    problems.push({ file, error: `rule name "${rule.name}" is used in more than one file (${where.join(', ')}); none of them is published` });
    return false;
  });
  return { rules, problems };
}

export interface PublishOptions extends RuleBucketOptions {
  /** Overwrite rules edited (or deleted) in KV with the files' version. @default false */
  force?: boolean | undefined;
  log?: Logger | undefined;
}

export interface PublishReport {
  created: string[];
  updated: string[];
  unchanged: string[];
  /** Rules whose file differs from KV but were left as KV has them, and why. */
  kept: Array<{ name: string; reason: string }>;
  /** Files (or rules) that were not published. */
  refused: RuleFileProblem[];
}

/**
 * Puts every valid rule of the folder's files into the bucket if absent or different, idempotently (see the
 * header for what "different" may overwrite). Compare-and-set writes: two hubs starting at once do not clash.
 */
export async function publishRuleFiles(nc: NatsConnection, dir: string = DEFAULT_RULES_DIR, options: PublishOptions = {}): Promise<PublishReport> {
  const { rules, problems } = readRuleFiles(dir);
  return publishRules(nc, rules, problems, options);
}

/**
 * Publishes rules read from files (rule files, or the quality files beside the schemas) with the same policy: a rule
 * edited in KV since is kept, a changed file replaces its own earlier version. `problems` are reported as refused.
 */
export async function publishRules(nc: NatsConnection, rules: readonly RuleFromFile[], problems: RuleFileProblem[], options: PublishOptions = {}): Promise<PublishReport> {
  const report: PublishReport = { created: [], updated: [], unchanged: [], kept: [], refused: problems };
  const log = options.log;
  for (const problem of problems) log?.error({ file: problem.file, err: problem.error }, 'rule file refused');
  const kv = await openRuleBucket(nc, options);
  for (const { rule, file } of rules) {
    const outcome = await publishOne(kv, rule, file, options.force === true);
    if (outcome.type === 'kept') report.kept.push({ name: rule.name, reason: outcome.reason });
    else report[outcome.type].push(rule.name);
    if (outcome.type === 'kept') log?.warn({ rule: rule.name, file, reason: outcome.reason }, 'rule in KV kept; its file differs');
    else if (outcome.type !== 'unchanged') log?.info({ rule: rule.name, file }, `rule ${outcome.type} from its file`);
  }
  log?.info({ created: report.created.length, updated: report.updated.length, unchanged: report.unchanged.length, kept: report.kept.length, refused: problems.length }, 'rule files published');
  return report;
}

type PublishOutcome = { type: 'created' | 'updated' | 'unchanged' } | { type: 'kept'; reason: string };

async function publishOne(kv: KV, rule: Rule, file: string, force: boolean): Promise<PublishOutcome> {
  const key = ruleKey(rule.name);
  const text = canonicalJson(rule);
  const hash = sha256(text);
  const marker = JSON.stringify({ sha256: hash, file });
  // Compare-and-set: on a conflict (another hub or a user wrote meanwhile) look again, a few times.
  for (let attempt = 0; ; attempt++) {
    const [entry, markerEntry] = await Promise.all([kv.get(key), kv.get(MARKER_PREFIX + rule.name)]);
    const published = markerEntry?.operation === 'PUT' ? markerHash(markerEntry.string()) : undefined;
    try {
      if (entry?.operation === 'PUT') {
        const current = entry.string();
        if (current === text || sameRule(key, current, text)) {
          if (published !== sha256(current)) await kv.put(MARKER_PREFIX + rule.name, JSON.stringify({ sha256: sha256(current), file }));
          return { type: 'unchanged' };
        }
        if (!force && published !== sha256(current)) {
          return { type: 'kept', reason: `rule.${rule.name} was changed in KV since the files last published it (${file} differs; force to overwrite)` };
        }
        await kv.update(key, text, entry.revision);
        await kv.put(MARKER_PREFIX + rule.name, marker);
        return { type: 'updated' };
      }
      if (entry && !force && published === hash) {
        return { type: 'kept', reason: `rule.${rule.name} was deleted in KV and ${file} has not changed since (force to restore it)` };
      }
      // Absent, or deleted and the file changed since: create (succeeds over a delete marker, fails if a value appeared).
      await kv.create(key, text);
      await kv.put(MARKER_PREFIX + rule.name, marker);
      return { type: 'created' };
    } catch (error) {
      if (attempt >= 3 || !/wrong last sequence|key exists/i.test(errorMessage(error))) throw error;
    }
  }
}

function markerHash(text: string): string | undefined {
  try {
    const hash = (JSON.parse(text) as { sha256?: unknown }).sha256;
    return typeof hash === 'string' ? hash : undefined;
  } catch {
    return undefined;
  }
}

function sameRule(key: string, stored: string, text: string): boolean {
  try {
    return canonicalJson(decodeRule(key, stored)) === text;
  } catch {
    return false;
  }
}

export interface KvRuleStoreOptions extends RuleBucketOptions {
  /** Wait before watching again after the watch failed. @default 1000 */
  retryMs?: number | undefined;
  log: Logger;
}

/**
 * The current valid rules of the bucket, kept up to date by a watch. `onChange` gets the full set (sorted by name)
 * after each change that alters it: a new or changed valid rule, a deleted one. Refused values change nothing.
 */
export class KvRuleStore {
  private readonly rules = new Map<string, Rule>();
  /** Last value handled per key (applied or refused), so a watch replaying the bucket changes and logs nothing. */
  private readonly seen = new Map<string, string>();
  private kv: Promise<KV> | undefined;
  private watch: ResumableKvWatch | undefined;
  private onChange: ((rules: Rule[]) => void) | undefined;
  readonly bucket: string;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: KvRuleStoreOptions,
  ) {
    this.bucket = options.bucket ?? DEFAULT_RULES_BUCKET;
  }

  /** True while the watch is established. */
  get watching(): boolean {
    return this.watch?.watching ?? false;
  }

  /**
   * Loads every rule (creating the bucket if missing), calls `onChange` once with them, then watches the bucket.
   * Rejects if the bucket cannot be read at all.
   */
  async start(onChange: (rules: Rule[]) => void): Promise<void> {
    if (this.watch) throw new Error('KvRuleStore.start() called twice');
    const kv = await this.open();
    const keys: string[] = [];
    for await (const key of await kv.keys(`${RULE_PREFIX}>`)) keys.push(key);
    for (const key of keys.sort()) {
      const entry = await kv.get(key);
      if (entry?.operation === 'PUT') this.apply(key, entry.string());
    }
    this.onChange = onChange;
    this.emit();
    this.watch = new ResumableKvWatch(() => this.openWatchable(), (key, value) => this.onPut(key, value), {
      name: `rules bucket "${this.bucket}"`,
      retryMs: this.options.retryMs ?? 1000,
      log: this.options.log,
    });
    this.watch.start();
  }

  /** The valid rules, sorted by name. */
  current(): Rule[] {
    return [...this.rules.keys()].sort().map((name) => this.rules.get(name)!);
  }

  async stop(): Promise<void> {
    this.onChange = undefined;
    await this.watch?.stop();
  }

  private open(): Promise<KV> {
    this.kv ??= openRuleBucket(this.nc, this.options).catch((error: unknown) => {
      this.kv = undefined;
      throw error;
    });
    return this.kv;
  }

  /**
   * The bucket as ResumableKvWatch sees it, except that its watch covers only `rule.>` and also reports deletes
   * (ResumableKvWatch watches with ignoreDeletes and hands over PUTs only): a DEL or PURGE entry is applied here,
   * in the bucket's order, as the watch loop takes it from the iterator.
   */
  private async openWatchable(): Promise<KV> {
    const kv = await this.open();
    const watch = async (opts?: KvWatchOptions): Promise<QueuedIterator<KvWatchEntry>> =>
      withDeletes(await kv.watch({ ...opts, key: `${RULE_PREFIX}>`, ignoreDeletes: false }), (key) => this.onDelete(key));
    return new Proxy(kv, {
      get(target, property) {
        if (property === 'watch') return watch;
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  private onPut(key: string, value: string): void {
    if (this.apply(key, value)) this.emit();
  }

  private onDelete(key: string): void {
    const name = ruleNameOf(key);
    this.seen.delete(key);
    if (name === undefined || !this.rules.delete(name)) return;
    this.options.log.info({ rule: name, bucket: this.bucket }, 'rule deleted from KV; removed');
    this.emit();
  }

  /** Applies one value; returns whether the set of valid rules changed. */
  private apply(key: string, value: string): boolean {
    const name = ruleNameOf(key);
    if (name === undefined || this.seen.get(key) === value) return false;
    this.seen.set(key, value);
    let rule: Rule;
    try {
      rule = decodeRule(key, value);
    } catch (error) {
      const active = this.rules.has(name);
      this.options.log.error(
        { rule: name, key, bucket: this.bucket, err: errorMessage(error), code: OperatorErrorCode.RULE_INVALID },
        active ? 'invalid rule in KV refused; its previous version stays active' : 'invalid rule in KV refused; the rule is not active',
      );
      return false;
    }
    const previous = this.rules.get(name);
    if (previous && canonicalJson(previous) === canonicalJson(rule)) return false;
    this.rules.set(name, rule);
    this.options.log.info({ rule: name, kind: rule.kind, bucket: this.bucket }, previous ? 'rule changed in KV' : 'rule added from KV');
    return true;
  }

  private emit(): void {
    if (!this.onChange) return;
    try {
      this.onChange(this.current());
    } catch (error) {
      this.options.log.error({ err: errorMessage(error), bucket: this.bucket }, 'rule change handler failed');
    }
  }
}

/** The same iterator, calling `onDelete` for each DEL or PURGE entry before handing it on. */
function withDeletes(inner: QueuedIterator<KvWatchEntry>, onDelete: (key: string) => void): QueuedIterator<KvWatchEntry> {
  async function* entries(): AsyncGenerator<KvWatchEntry> {
    for await (const entry of inner) {
      if (entry.operation !== 'PUT') onDelete(entry.key);
      yield entry;
    }
  }
  return new Proxy(inner, {
    get(target, property) {
      if (property === Symbol.asyncIterator) return entries;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
