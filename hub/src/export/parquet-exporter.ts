/**
 * The data lake: QuestDB tables exported as Parquet files, one per table and UTC day, for historical analysis in
 * DuckDB, Spark, Polars or pandas, into a folder or an S3-compatible store (lake-targets.ts):
 *
 *   <target>/<table>/day=<YYYY-MM-DD>/<table>-<YYYY-MM-DD>.parquet        the day's rows (QuestDB's /exp?fmt=parquet)
 *   <target>/<table>/day=<YYYY-MM-DD>/<table>-<YYYY-MM-DD>.parquet.json   its manifest: rows, bytes, sha256, when
 *
 * Hive-style `day=` folders, so engines prune by day. A day is exported once it is complete: its end plus `settleMs`
 * (late events and replays that still revise it) has passed.
 *
 * Idempotent and resumable: each object is written whole or not at all, the manifest last, so a day with a manifest
 * is done and skipped, and a run that stopped anywhere redoes only the day it was in (its Parquet file, if written
 * already, is simply written again). `force` exports again days already done (after a
 * backfill, say). Table names come from QuestDB's catalogue and the options, never from data, and are checked
 * against a plain-name pattern before they reach SQL or a path.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../../../shared/logger.js';
import type { QuestDbRest } from '../sinks/questdb-rest.js';
import type { LakeTarget } from './lake-targets.js';

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,126}$/;
const DAY_MS = 86_400_000;

export interface ParquetExportOptions {
  target: LakeTarget;
  /** Tables to export; empty: every table partitioned by day (materialized views included). */
  tables: string[];
  /** First day exported (YYYY-MM-DD); default: each table's first day. */
  from?: string | undefined;
  /** A day is exported once its end is this far in the past. @default 1 hour */
  settleMs: number;
  /** Export again days that have a manifest. */
  force: boolean;
  now: () => number;
}

export interface DayExport {
  table: string;
  day: string;
  rows: number;
  bytes: number;
  /** Where the Parquet file is (path or s3:// URL). */
  location: string;
}

export interface ExportReport {
  exported: DayExport[];
  /** Days already exported (manifest present). */
  skipped: number;
  /** Days without rows. */
  empty: number;
}

export interface QuestDbExportSource {
  rest: Pick<QuestDbRest, 'exec'>;
  /** Streams a query's result as Parquet (QuestDB's /exp?fmt=parquet). */
  parquet(sql: string): Promise<Uint8Array>;
}

export function questDbExportSource(rest: QuestDbRest, options: { httpUrl: string; username?: string | undefined; password?: string | undefined; timeoutMs: number }): QuestDbExportSource {
  const base = options.httpUrl.replace(/\/+$/, '');
  const headers: Record<string, string> =
    options.username !== undefined ? { authorization: `Basic ${Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')}` } : {};
  return {
    rest,
    async parquet(sql) {
      const response = await fetch(`${base}/exp?fmt=parquet&query=${encodeURIComponent(sql)}`, { headers, signal: AbortSignal.timeout(options.timeoutMs) });
      const body = new Uint8Array(await response.arrayBuffer());
      if (!response.ok) throw new Error(`QuestDB /exp answered ${response.status}: ${Buffer.from(body.subarray(0, 300)).toString()}`);
      if (Buffer.from(body.subarray(0, 4)).toString() !== 'PAR1') throw new Error(`QuestDB /exp did not answer a Parquet file for: ${sql}`);
      return body;
    },
  };
}

export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The key of a day's Parquet file in the lake (its manifest: the same plus `.json`). */
export function dayKey(table: string, day: string): string {
  return `${table}/day=${day}/${table}-${day}.parquet`;
}

export async function exportDays(source: QuestDbExportSource, options: ParquetExportOptions, log: Logger): Promise<ExportReport> {
  const report: ExportReport = { exported: [], skipped: 0, empty: 0 };
  const lastDayEnd = Math.floor((options.now() - options.settleMs) / DAY_MS) * DAY_MS; // exclusive
  for (const { table, timestamp } of await exportableTables(source.rest, options.tables)) {
    const bounds = (await source.rest.exec(`SELECT min(${quote(timestamp)}) first, max(${quote(timestamp)}) last FROM ${quote(table)}`)).dataset?.[0] as [string | null, string | null] | undefined;
    if (!bounds?.[0]) continue;
    let day = Math.max(Date.parse(`${dayOf(Date.parse(bounds[0]))}T00:00:00Z`), options.from ? Date.parse(`${options.from}T00:00:00Z`) : 0);
    for (; day < lastDayEnd; day += DAY_MS) {
      const name = dayOf(day);
      const key = dayKey(table, name);
      if (!options.force && (await options.target.exists(`${key}.json`))) {
        report.skipped++;
        continue;
      }
      const where = `WHERE ${quote(timestamp)} IN '${name}'`;
      const rows = Number(((await source.rest.exec(`SELECT count() FROM ${quote(table)} ${where}`)).dataset?.[0] as [number])[0]);
      if (rows === 0) {
        report.empty++;
        continue;
      }
      const parquet = await source.parquet(`SELECT * FROM ${quote(table)} ${where}`);
      await options.target.put(key, parquet, 'application/vnd.apache.parquet');
      const manifest = { table, day: name, rows, bytes: parquet.byteLength, sha256: createHash('sha256').update(parquet).digest('hex'), exportedAt: new Date(options.now()).toISOString() };
      await options.target.put(`${key}.json`, Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`), 'application/json');
      report.exported.push({ table, day: name, rows, bytes: parquet.byteLength, location: options.target.locate(key) });
      log.info({ table, day: name, rows, bytes: parquet.byteLength }, 'day exported to Parquet');
    }
  }
  return report;
}

/** The tables to export with their designated timestamp: those named, or every one partitioned by day. */
async function exportableTables(rest: Pick<QuestDbRest, 'exec'>, wanted: string[]): Promise<Array<{ table: string; timestamp: string }>> {
  for (const name of wanted) if (!TABLE_NAME.test(name)) throw new Error(`not a table name: ${JSON.stringify(name)}`);
  const result = await rest.exec('SELECT table_name, designatedTimestamp, partitionBy FROM tables()');
  const known = ((result.dataset ?? []) as Array<[string, string | null, string]>).filter(([name, ts]) => ts && TABLE_NAME.test(name) && TABLE_NAME.test(ts));
  if (wanted.length > 0) {
    const missing = wanted.filter((name) => !known.some(([table]) => table === name));
    if (missing.length > 0) throw new Error(`no such table with a designated timestamp: ${missing.join(', ')}`);
    return wanted.map((name) => ({ table: name, timestamp: known.find(([table]) => table === name)![1]! }));
  }
  return known.filter(([, , partitionBy]) => partitionBy === 'DAY').map(([table, timestamp]) => ({ table, timestamp: timestamp! })).sort((a, b) => a.table.localeCompare(b.table));
}

function quote(name: string): string {
  return `"${name}"`;
}
