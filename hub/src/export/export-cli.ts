/**
 * `npm run export -- --to <folder> [options]`: QuestDB tables to Parquet files, one per table and UTC day (see
 * parquet-exporter.ts). Run it from cron or a systemd timer, or let it repeat with --every.
 *
 *   --to DIR|s3://B/P     the data lake: a folder, or an S3-compatible bucket and prefix (required); for S3, the
 *                         AWS SDK's usual settings: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, and
 *                         AWS_ENDPOINT_URL for MinIO and other S3-compatible stores
 *   --tables a,b          only these tables (default: every table partitioned by day)
 *   --from YYYY-MM-DD     first day (default: each table's first)
 *   --settle-minutes N    a day is exported once its end is N minutes past (default 60)
 *   --force               export again days already exported
 *   --every MINUTES       repeat every MINUTES until stopped (SIGINT/SIGTERM)
 *
 * QuestDB: HUB_QUESTDB__HTTPURL (default http://127.0.0.1:9000), HUB_QUESTDB__USERNAME, HUB_QUESTDB__PASSWORD,
 * as for the hub. Prints one line per exported day and a summary; exits 1 on an error (what was done stays done).
 */
import { parseArgs } from 'node:util';
import { createLogger } from '../../../shared/logger.js';
import { errorMessage } from '../errors.js';
import { QuestDbRest } from '../sinks/questdb-rest.js';
import { lakeTarget, S3Target } from './lake-targets.js';
import { exportDays, questDbExportSource } from './parquet-exporter.js';

const { values } = parseArgs({
  options: {
    to: { type: 'string' },
    tables: { type: 'string', default: '' },
    from: { type: 'string' },
    'settle-minutes': { type: 'string', default: '60' },
    force: { type: 'boolean', default: false },
    every: { type: 'string' },
  },
});
if (!values.to) {
  process.stderr.write('usage: npm run export -- --to <folder> [--tables a,b] [--from YYYY-MM-DD] [--settle-minutes 60] [--force] [--every MINUTES]\n');
  process.exit(2);
}
if (values.from !== undefined && !/^\d{4}-\d{2}-\d{2}$/.test(values.from)) {
  process.stderr.write(`--from must be YYYY-MM-DD, got ${values.from}\n`);
  process.exit(2);
}
const settleMinutes = Number(values['settle-minutes']);
const everyMinutes = values.every === undefined ? undefined : Number(values.every);
if (!(settleMinutes >= 0) || (everyMinutes !== undefined && !(everyMinutes > 0))) {
  process.stderr.write('--settle-minutes must be >= 0 and --every > 0\n');
  process.exit(2);
}

const log = createLogger('hub-export');
const questdb = {
  httpUrl: process.env.HUB_QUESTDB__HTTPURL ?? 'http://127.0.0.1:9000',
  username: process.env.HUB_QUESTDB__USERNAME,
  password: process.env.HUB_QUESTDB__PASSWORD,
  timeoutMs: 300_000,
};
const source = questDbExportSource(new QuestDbRest(questdb), questdb);
const options = {
  target: lakeTarget(values.to),
  tables: values.tables.split(',').map((t) => t.trim()).filter(Boolean),
  from: values.from,
  settleMs: settleMinutes * 60_000,
  force: values.force,
  now: Date.now,
};

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => (stopping = true));

async function once(): Promise<boolean> {
  try {
    const report = await exportDays(source, options, log);
    for (const day of report.exported) process.stdout.write(`${day.table} ${day.day}: ${day.rows} rows, ${day.bytes} bytes -> ${day.location}\n`);
    process.stdout.write(`${report.exported.length} day(s) exported, ${report.skipped} already done, ${report.empty} empty, into ${values.to}\n`);
    return true;
  } catch (error) {
    process.stderr.write(`export failed: ${errorMessage(error)}\n`);
    return false;
  }
}

let ok = await once();
while (everyMinutes !== undefined && !stopping) {
  const until = Date.now() + everyMinutes * 60_000;
  while (!stopping && Date.now() < until) await new Promise((r) => setTimeout(r, 500));
  if (!stopping) ok = await once();
}
if (options.target instanceof S3Target) options.target.close();
process.exitCode = ok ? 0 : 1;
