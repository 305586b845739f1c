/**
 * The hub creates its QuestDB tables from the schema catalogue at start; ILP auto-create is never relied on.
 *
 * Every table: designated timestamp `ts`, WAL, and `DEDUP UPSERT KEYS(ts, event_id)`, so a replayed batch (JetStream
 * redelivery, a retried flush) overwrites its rows instead of adding a second copy. Hourly partitions: at 100k
 * events/s a day would be billions of rows, and an out-of-order commit (a backlog drained after an outage, late
 * data) rewrites only the hours it touches (measured +0-20% rows/s over daily partitions draining a backlog).
 * Tables created earlier keep their partitioning; QuestDB cannot change it in place. A later schema
 * version's new columns are added with `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` (syntax checked on QuestDB 9.3.4).
 */
import type { SchemaVersion } from '../../../shared/schema-catalog.js';
import type { Logger } from '../../../shared/logger.js';
import { HubError, HubErrorCode } from '../errors.js';
import { STANDARD_COLUMNS, sqlTypeOf } from './questdb-rows.js';
import type { QuestDbRest } from './questdb-rest.js';

export interface TableColumn {
  name: string;
  sqlType: string;
}

export interface TableSpec {
  table: string;
  /** Standard columns, then the union of the columns of every schema version that maps to this table. */
  columns: TableColumn[];
  /** `type/vN` of each schema version writing to the table. */
  writers: string[];
}

export const DEDUP_KEYS = ['ts', 'event_id'] as const;

/** One spec per table; throws HUB_ERR_SCHEMA_CONFLICT when two versions give one column two types. */
export function tableSpecs(catalog: readonly SchemaVersion[]): TableSpec[] {
  const specs = new Map<string, TableSpec & { origin: Map<string, string> }>();
  for (const entry of catalog) {
    const writer = `${entry.type}/v${entry.version}`;
    const mapping = entry.schema['x-questdb'];
    let spec = specs.get(mapping.table);
    if (!spec) {
      spec = {
        table: mapping.table,
        columns: STANDARD_COLUMNS.map((c) => ({ name: c.name, sqlType: c.sqlType })),
        writers: [],
        origin: new Map(STANDARD_COLUMNS.map((c) => [c.name, 'the standard columns'])),
      };
      specs.set(mapping.table, spec);
    }
    spec.writers.push(writer);
    for (const column of mapping.columns) {
      const sqlType = sqlTypeOf(column.type);
      const existing = spec.columns.find((c) => c.name === column.name);
      if (!existing) {
        spec.columns.push({ name: column.name, sqlType });
        spec.origin.set(column.name, writer);
      } else if (existing.sqlType !== sqlType) {
        throw new HubError(
          HubErrorCode.SCHEMA_CONFLICT,
          `table ${mapping.table}: column ${column.name} is ${sqlType} in ${writer} but ${existing.sqlType} in ${spec.origin.get(column.name)}`,
        );
      }
    }
  }
  return [...specs.values()].map(({ table, columns, writers }) => ({ table, columns, writers }));
}

/**
 * Table names QuestDB uses for itself. With `telemetry.enabled=true` (QuestDB's default) the server checks its
 * `telemetry` table at start and DROPs it when the columns or TTL differ (seen in 9.3.4's io.questdb.Telemetry), and
 * tables() and the web console hide these names.
 */
export const QUESTDB_RESERVED_TABLES: ReadonlySet<string> = new Set(['telemetry', 'telemetry_config', 'telemetry_wal', 'telemetry_mat_view']);

/** One warning per spec whose table name QuestDB reserves. */
export function reservedTableWarnings(specs: readonly TableSpec[]): string[] {
  return specs
    .filter((spec) => QUESTDB_RESERVED_TABLES.has(spec.table))
    .map(
      (spec) =>
        `table "${spec.table}" (${spec.writers.join(', ')}) is a name QuestDB uses for its own telemetry: unless the ` +
        'server runs with telemetry.enabled=false it drops that table at start. Rename it in the schema\'s x-questdb.table.',
    );
}

/** Names are lower-case identifiers (checked by the catalogue); quoting keeps words like `value` or `timestamp` safe. */
export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function createTableSql(spec: TableSpec): string {
  const columns = spec.columns.map((c) => `${quoteIdentifier(c.name)} ${c.sqlType}`).join(', ');
  return (
    `CREATE TABLE IF NOT EXISTS ${quoteIdentifier(spec.table)} (${columns}) ` +
    `TIMESTAMP(${quoteIdentifier('ts')}) PARTITION BY HOUR WAL ` +
    `DEDUP UPSERT KEYS(${DEDUP_KEYS.map(quoteIdentifier).join(', ')})`
  );
}

export function addColumnSql(table: string, column: TableColumn): string {
  return `ALTER TABLE ${quoteIdentifier(table)} ADD COLUMN IF NOT EXISTS ${quoteIdentifier(column.name)} ${column.sqlType}`;
}

export function enableDedupSql(table: string): string {
  return `ALTER TABLE ${quoteIdentifier(table)} DEDUP ENABLE UPSERT KEYS(${DEDUP_KEYS.map(quoteIdentifier).join(', ')})`;
}

/** A column as `SHOW COLUMNS` reports it. */
export interface ExistingColumn {
  name: string;
  type: string;
  designated: boolean;
  upsertKey: boolean;
}

/** Types an existing column may have for a wanted type (ILP writes a string into STRING and VARCHAR alike). */
const COMPATIBLE: Record<string, readonly string[]> = { VARCHAR: ['VARCHAR', 'STRING'] };

export interface TablePlan {
  /** Columns to add with ALTER TABLE ADD COLUMN IF NOT EXISTS. */
  add: TableColumn[];
  /** Whether dedup on (ts, event_id) must be enabled. */
  enableDedup: boolean;
  /** Mismatches the hub cannot fix: a column of another type, another designated timestamp. */
  problems: string[];
}

/** What to change on an existing table so it matches the spec. Pure. */
export function planTable(spec: TableSpec, existing: readonly ExistingColumn[]): TablePlan {
  const byName = new Map(existing.map((c) => [c.name, c]));
  const plan: TablePlan = { add: [], enableDedup: false, problems: [] };
  for (const column of spec.columns) {
    const current = byName.get(column.name);
    if (!current) {
      plan.add.push(column);
    } else if (!(COMPATIBLE[column.sqlType] ?? [column.sqlType]).includes(current.type)) {
      plan.problems.push(`column ${column.name} is ${current.type}, the schemas need ${column.sqlType}`);
    }
  }
  const designated = existing.find((c) => c.designated);
  if (designated?.name !== 'ts') {
    plan.problems.push(`designated timestamp is ${designated ? designated.name : 'not set'}, must be ts`);
  }
  const keys = existing.filter((c) => c.upsertKey).map((c) => c.name);
  plan.enableDedup = !DEDUP_KEYS.every((k) => keys.includes(k)) || keys.length !== DEDUP_KEYS.length;
  return plan;
}

export interface TableSetup {
  table: string;
  addedColumns: string[];
  dedupEnabled: boolean;
}

/** Creates each table if missing, adds missing columns, enables dedup; throws HUB_ERR_TABLE_SETUP on a mismatch. */
export async function ensureTables(rest: QuestDbRest, specs: readonly TableSpec[], log: Logger): Promise<TableSetup[]> {
  const done: TableSetup[] = [];
  for (const spec of specs) {
    await rest.exec(createTableSql(spec));
    const plan = planTable(spec, await showColumns(rest, spec.table));
    if (plan.problems.length > 0) {
      throw new HubError(
        HubErrorCode.TABLE_SETUP,
        `table ${spec.table} exists but does not fit schemas ${spec.writers.join(', ')}: ${plan.problems.join('; ')}`,
      );
    }
    for (const column of plan.add) await rest.exec(addColumnSql(spec.table, column));
    if (plan.enableDedup) await rest.exec(enableDedupSql(spec.table));
    const setup = { table: spec.table, addedColumns: plan.add.map((c) => c.name), dedupEnabled: plan.enableDedup };
    log.info({ ...setup, writers: spec.writers }, 'questdb table ready');
    done.push(setup);
  }
  return done;
}

export async function showColumns(rest: Pick<QuestDbRest, 'exec'>, table: string): Promise<ExistingColumn[]> {
  const result = await rest.exec(`SHOW COLUMNS FROM ${quoteIdentifier(table)}`);
  const names = (result.columns ?? []).map((c) => c.name);
  const at = (name: string): number => {
    const index = names.indexOf(name);
    if (index < 0) throw new HubError(HubErrorCode.TABLE_SETUP, `SHOW COLUMNS FROM ${table} has no "${name}" column`);
    return index;
  };
  const [iName, iType, iDesignated, iUpsert] = [at('column'), at('type'), at('designated'), at('upsertKey')];
  return (result.dataset ?? []).map((row) => ({
    name: String(row[iName]),
    type: String(row[iType]),
    designated: row[iDesignated] === true,
    upsertKey: row[iUpsert] === true,
  }));
}
