/**
 * The data lake export against the real QuestDB: a table with rows on three past days and today is exported as one
 * Parquet file per complete day (read back with hyparquet: every row and value as in QuestDB), a second run does
 * nothing, a run interrupted after a day's Parquet file but before its manifest redoes only that day, `force`
 * re-exports a day revised by a late row, and today (not settled) is never exported. The CLI does the same, and an
 * S3-compatible store (gofakes3, built like nats-server) takes the same files through the AWS SDK.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { pino } from 'pino';
import { REPO_ROOT } from '../../scripts/lib/runtime.js';
import { FolderTarget, S3Target } from '../../hub/src/export/lake-targets.js';
import { dayKey, dayOf, exportDays, questDbExportSource } from '../../hub/src/export/parquet-exporter.js';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { freePort } from '../../scripts/lib/processes.js';
import { ensureS3TestServer } from '../../scripts/lib/runtime.js';
import { QuestDbRest } from '../../hub/src/sinks/questdb-rest.js';
import { testStack } from '../support/env.js';
import { query, waitFor } from '../support/questdb.js';

const run = promisify(execFile);
const stack = testStack();
const runId = Date.now().toString(36);
const table = `export_${runId}`;
const target = mkdtempSync(join(tmpdir(), 'lake-'));
const log = pino({ level: 'silent' });
const DAY = 86_400_000;
const today = Date.parse(`${dayOf(Date.now())}T00:00:00Z`);
const days = [5, 4, 3].map((back) => today - back * DAY);
const rest = new QuestDbRest({ httpUrl: stack.questdbHttp, timeoutMs: 30_000 });
const source = questDbExportSource(rest, { httpUrl: stack.questdbHttp, timeoutMs: 30_000 });
// Settled at the end of the day (settleMs 0), so the counts below hold at any hour; today is never complete.
const options = { target: new FolderTarget(target), tables: [table], settleMs: 0, force: false, now: Date.now };
const dayFile = (_root: string, t: string, day: string) => join(target, dayKey(t, day));

type Row = {
  ts: string;
  device: string;
  value: number;
  note: string | null;
};

async function insert(rows: Array<[number, string, number, string | null]>): Promise<void> {
  const values = rows.map(([ts, device, value, note]) => `('${new Date(ts).toISOString()}', '${device}', ${value}, ${note === null ? 'null' : `'${note}'`})`);
  await rest.exec(`INSERT INTO ${table} (ts, device, value, note) VALUES ${values.join(', ')}`);
}

async function readParquet(file: string | Buffer): Promise<Row[]> {
  const buffer = typeof file === 'string' ? readFileSync(file) : file;
  const rows = (await parquetReadObjects({ file: new Uint8Array(buffer).buffer, compressors })) as Array<{ ts: Date; device: string; value: number; note: string | null }>;
  return rows.map((r) => ({ ts: r.ts.toISOString(), device: r.device, value: r.value, note: r.note }));
}

async function fromQuestDb(day: number): Promise<Row[]> {
  const rows = await query<Row>(stack.questdbHttp, `select ts, device, value, note from ${table} where ts in '${dayOf(day)}' order by ts`);
  return rows.map((r) => ({ ...r, ts: new Date(r.ts).toISOString() }));
}

const count = async () => Number((await query<{ n: number }>(stack.questdbHttp, `select count() n from ${table}`))[0]?.n ?? 0);

before(async () => {
  await rest.exec(`CREATE TABLE ${table} (ts TIMESTAMP, device SYMBOL, value DOUBLE, note VARCHAR) TIMESTAMP(ts) PARTITION BY DAY WAL`);
  const rows: Array<[number, string, number, string | null]> = [];
  days.forEach((day, d) => {
    for (let i = 0; i < 50 + d * 10; i++) rows.push([day + i * 60_000, `dev-${i % 3}`, i + d / 10, i % 7 === 0 ? null : `note, "${i}"\n=`]);
  });
  rows.push([Date.now() - 1000, 'dev-0', 1, 'today']);
  await insert(rows);
  await waitFor(count, (n) => n === rows.length, 30_000);
});

after(async () => {
  await rest.exec(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
  rmSync(target, { recursive: true, force: true });
});

describe('Parquet export of QuestDB tables, one file per day', () => {
  test('each complete day becomes a Parquet file holding exactly its rows; today waits', async () => {
    const report = await exportDays(source, options, log);
    assert.deepEqual(report.exported.map((e) => [e.day, e.rows]), days.map((day, d) => [dayOf(day), 50 + d * 10]));
    for (const day of days) {
      const file = dayFile(target, table, dayOf(day));
      assert.deepEqual(await readParquet(file), await fromQuestDb(day), `${dayOf(day)}: the file holds the day's rows`);
      const manifest = JSON.parse(readFileSync(`${file}.json`, 'utf8')) as { rows: number; sha256: string };
      assert.equal(manifest.sha256, createHash('sha256').update(readFileSync(file)).digest('hex'));
    }
    assert.equal(existsSync(join(target, table, `day=${dayOf(today)}`)), false, 'today is not settled');
  });

  test('a second run does nothing; an interrupted day is redone alone', async () => {
    // The two days between the last one with rows and today are empty: looked at each run, nothing written.
    assert.deepEqual({ ...(await exportDays(source, options, log)), exported: [] }, { exported: [], skipped: 3, empty: 2 });
    const middle = dayFile(target, table, dayOf(days[1]!));
    rmSync(`${middle}.json`); // stopped after the Parquet file, before its manifest
    writeFileSync(`${middle}.tmp-99999`, 'half a file'); // and another run died while writing
    const again = await exportDays(source, options, log);
    assert.deepEqual(again.exported.map((e) => e.day), [dayOf(days[1]!)]);
    assert.equal(again.skipped, 2);
    assert.deepEqual(await readParquet(middle), await fromQuestDb(days[1]!));
    assert.deepEqual(readdirSync(dirname(middle)).filter((f) => !f.includes('.tmp-')).sort(), [`${table}-${dayOf(days[1]!)}.parquet`, `${table}-${dayOf(days[1]!)}.parquet.json`]);
  });

  test('a late row revises a day: kept as exported until `force`, then exported again', async () => {
    const before = await count();
    await insert([[days[0]! + 30_000, 'dev-late', 99, 'late']]);
    await waitFor(count, (n) => n === before + 1, 30_000);
    assert.equal((await exportDays(source, options, log)).exported.length, 0);
    const forced = await exportDays(source, { ...options, force: true }, log);
    assert.deepEqual(forced.exported.map((e) => [e.day, e.rows]), days.map((day, d) => [dayOf(day), 50 + d * 10 + (d === 0 ? 1 : 0)]));
    assert.ok((await readParquet(dayFile(target, table, dayOf(days[0]!)))).some((r) => r.device === 'dev-late'));
  });

  test('the command line does the same and says what it did', async () => {
    const lake = mkdtempSync(join(tmpdir(), 'lake-cli-'));
    try {
      const env = { ...process.env, HUB_QUESTDB__HTTPURL: stack.questdbHttp, LOG_LEVEL: 'warn' };
      const args = ['--import', 'tsx', join(REPO_ROOT, 'hub/src/export/export-cli.ts'), '--to', lake, '--tables', table];
      const first = await run(process.execPath, args, { cwd: REPO_ROOT, env });
      assert.match(first.stdout, /3 day\(s\) exported, 0 already done/);
      const second = await run(process.execPath, args, { cwd: REPO_ROOT, env });
      assert.match(second.stdout, /0 day\(s\) exported, 3 already done/);
      const bad = await run(process.execPath, [...args.slice(0, 5), '--tables', 'no such table'], { cwd: REPO_ROOT, env }).catch((e: { code: number; stderr: string }) => e);
      assert.equal((bad as { code: number }).code, 1);
      assert.match((bad as { stderr: string }).stderr, /not a table name/);
    } finally {
      rmSync(lake, { recursive: true, force: true });
    }
  });
});

describe('Parquet export into an S3-compatible store', () => {
  let s3server: ChildProcess;
  let endpoint: string;
  const credentials = { AWS_ACCESS_KEY_ID: 'lake-test', AWS_SECRET_ACCESS_KEY: 'lake-test-secret', AWS_REGION: 'us-east-1' };

  before(async () => {
    const binary = await ensureS3TestServer();
    const port = await freePort();
    endpoint = `http://127.0.0.1:${port}`;
    s3server = spawn(binary, ['-backend', 'memory', '-autobucket', '-host', `127.0.0.1:${port}`], { stdio: 'ignore' });
    await waitFor(() => fetch(`${endpoint}/`).then(() => true, () => false), (up) => up, 15_000, 100);
    Object.assign(process.env, credentials);
  });

  after(() => {
    s3server?.kill();
  });

  test('each day lands as an object with its manifest; a second run writes nothing; the CLI takes s3:// URLs', async () => {
    const lake = new S3Target({ bucket: 'lake', prefix: `runs/${runId}`, endpoint, region: 'us-east-1', forcePathStyle: true });
    const report = await exportDays(source, { ...options, target: lake, force: false }, log);
    assert.deepEqual(report.exported.map((e) => e.location), days.map((day) => `s3://lake/runs/${runId}/${dayKey(table, dayOf(day))}`));
    const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true });
    try {
      const object = await client.send(new GetObjectCommand({ Bucket: 'lake', Key: `runs/${runId}/${dayKey(table, dayOf(days[2]!))}` }));
      assert.deepEqual(await readParquet(Buffer.from(await object.Body!.transformToByteArray())), await fromQuestDb(days[2]!));
      assert.deepEqual({ ...(await exportDays(source, { ...options, target: lake, force: false }, log)), exported: [] }, { exported: [], skipped: 3, empty: 2 });

      const env = { ...process.env, ...credentials, AWS_ENDPOINT_URL: endpoint, HUB_QUESTDB__HTTPURL: stack.questdbHttp, LOG_LEVEL: 'warn' };
      const cli = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'hub/src/export/export-cli.ts'), '--to', `s3://lake/cli-${runId}`, '--tables', table], { cwd: REPO_ROOT, env });
      assert.match(cli.stdout, /3 day\(s\) exported/);
      const listed = await client.send(new ListObjectsV2Command({ Bucket: 'lake', Prefix: `cli-${runId}/` }));
      assert.equal(listed.Contents?.length, 6, 'three Parquet files and three manifests');
    } finally {
      lake.close();
      client.destroy();
    }
  });
});
