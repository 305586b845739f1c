/**
 * The file source against real temporary files, with an in-memory fake of the ingest pipeline that records what
 * was committed. Offsets must advance only after a commit, survive a restart, and follow rotation and truncation.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { EdgeError, EdgeErrorCode, OutboxFullError } from '../../edge-agent/src/errors.js';
import type { IngestItem, IngestPipeline, IngestResult } from '../../edge-agent/src/ingest.js';
import { createFileSource, FileSource, type FileInputConfig, type FileSourceConfig } from '../../edge-agent/src/sources/file-source.js';

const log = pino({ level: 'silent' });

interface Submission {
  items: IngestItem[];
  origin: string | undefined;
  defaultType: string | undefined;
}

/** Commits everything, except that `refuseFull` submissions are refused first, and `lose` ones are committed but the source is told the agent shuts down (a crash right after the commit). */
class FakeIngest {
  readonly committed: Submission[] = [];
  refuseFull = 0;
  lose = 0;
  submits = 0;

  submit(items: IngestItem[], context: { origin?: string; defaultType?: string }): Promise<IngestResult> {
    this.submits++;
    if (this.refuseFull > 0) {
      this.refuseFull--;
      return Promise.reject(new OutboxFullError(100, 100));
    }
    this.committed.push({ items, origin: context.origin, defaultType: context.defaultType });
    if (this.lose > 0) {
      this.lose--;
      return Promise.reject(new EdgeError(EdgeErrorCode.SHUTTING_DOWN, 'agent is shutting down'));
    }
    return Promise.resolve({ accepted: items.length, rejected: [] });
  }

  values(): unknown[] {
    return this.committed.flatMap((s) => s.items.map((i) => ('value' in i ? i.value : { refused: i.refused.code })));
  }

  lines(): string[] {
    return this.values().map((v) => (v as { data?: string; n?: number }).data ?? String((v as { n?: number }).n ?? JSON.stringify(v)));
  }
}

const dirs: string[] = [];
const running: FileSource[] = [];
afterEach(async () => {
  for (const source of running.splice(0)) await source.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'file-source-'));
  dirs.push(d);
  return d;
}

function config(inputs: Array<Partial<FileInputConfig> & { path: string }>, extra: Partial<FileSourceConfig> = {}): FileSourceConfig {
  return {
    enabled: true,
    pollIntervalMs: 10,
    maxLinesPerSubmit: 1000,
    maxLineBytes: 1024,
    maxJsonDepth: 32,
    readChunkBytes: 4096,
    retryInitialMs: 10,
    retryMaxMs: 20,
    ...extra,
    inputs: inputs.map((i) => ({
      mode: 'tail',
      format: 'ndjson',
      type: '',
      extension: '',
      startAt: 'beginning',
      csvDelimiter: ',',
      csvStringFields: [],
      sourceId: '',
      contentType: '',
      ...i,
    })),
  };
}

async function start(dataDir: string, cfg: FileSourceConfig, ingest: FakeIngest, nowMs?: () => number): Promise<FileSource> {
  const deps = { ingest: ingest as unknown as IngestPipeline, log, dataDir, agentId: 'unit' };
  const source = nowMs ? new FileSource(cfg, deps, nowMs) : (createFileSource(cfg, deps) as FileSource);
  await source.start();
  running.push(source);
  return source;
}

async function stop(source: FileSource): Promise<void> {
  await source.stop();
  running.splice(running.indexOf(source), 1);
}

async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Lets a few polls pass, to show that nothing more arrives. */
const settle = () => new Promise((r) => setTimeout(r, 80));

const ev = (n: number) => JSON.stringify({ n }) + '\n';

function state(dataDir: string): Record<string, { offset: number; pending?: unknown }> {
  return (JSON.parse(readFileSync(join(dataDir, 'source-state-unit-file.json'), 'utf8')) as { entries: Record<string, { offset: number }> }).entries;
}

test('tails an NDJSON file: complete lines only, each once, and continues at the committed offset after a restart', async () => {
  const d = tempDir();
  const file = join(d, 'events.ndjson');
  writeFileSync(file, ev(1) + ev(2) + '\n' + ev(3) + '{"n":4');
  const ingest = new FakeIngest();
  let source = await start(d, config([{ path: file, type: 'device.telemetry' }]), ingest);
  await until(() => ingest.values().length === 3, '3 lines');
  await settle();
  assert.deepEqual(ingest.lines(), ['1', '2', '3'], 'the line still being written is not read');
  assert.equal(ingest.committed[0]!.defaultType, 'device.telemetry');
  assert.equal(ingest.committed[0]!.origin, file);
  appendFileSync(file, '}\n' + ev(5));
  await until(() => ingest.values().length === 5, '5 lines');
  await stop(source);
  assert.equal(state(d)[`tail:${file}`]!.offset, readFileSync(file).length);

  appendFileSync(file, ev(6) + ev(7));
  source = await start(d, config([{ path: file }]), ingest);
  await until(() => ingest.values().length === 7, '7 lines');
  await settle();
  assert.deepEqual(ingest.lines(), ['1', '2', '3', '4', '5', '6', '7']);
});

test('reads in bounded batches: at most maxLinesPerSubmit records per commit', async () => {
  const d = tempDir();
  const file = join(d, 'many.ndjson');
  writeFileSync(file, Array.from({ length: 25 }, (_, i) => ev(i)).join(''));
  const ingest = new FakeIngest();
  await start(d, config([{ path: file }], { maxLinesPerSubmit: 10 }), ingest);
  await until(() => ingest.values().length === 25, '25 lines');
  assert.deepEqual(ingest.committed.map((s) => s.items.length), [10, 10, 5]);
});

test('does not advance the offset while the outbox is full, and commits every line once when there is room', async () => {
  const d = tempDir();
  const file = join(d, 'events.ndjson');
  writeFileSync(file, ev(1) + ev(2));
  const ingest = new FakeIngest();
  ingest.refuseFull = 3;
  await start(d, config([{ path: file }]), ingest);
  await until(() => ingest.values().length === 2, 'the retried commit');
  assert.equal(ingest.submits, 4, 'three refusals, then the commit');
  assert.deepEqual(ingest.lines(), ['1', '2']);
  await settle();
  assert.equal(ingest.values().length, 2);
});

test('stopped while the outbox is full: the offset stays, the lines come after the restart', async () => {
  const d = tempDir();
  const file = join(d, 'events.ndjson');
  writeFileSync(file, ev(1) + ev(2));
  const ingest = new FakeIngest();
  ingest.refuseFull = 1_000_000;
  let source = await start(d, config([{ path: file }], { retryInitialMs: 10, retryMaxMs: 10 }), ingest);
  await until(() => ingest.submits >= 2, 'a refused submission');
  await stop(source);
  assert.equal(state(d)[`tail:${file}`]!.offset, 0);
  ingest.refuseFull = 0;
  source = await start(d, config([{ path: file }]), ingest);
  await until(() => ingest.values().length === 2, '2 lines');
});

test('CSV: the header names the fields, quoted fields may hold newlines, and the header is found again after a restart', async () => {
  const d = tempDir();
  const file = join(d, 'meter.csv');
  writeFileSync(file, 'device_id,timestamp,metric,value,note\r\n42,1700000000000,temp,21.5,"a, ""quoted""\nnote"\r\n');
  const ingest = new FakeIngest();
  let source = await start(d, config([{ path: file, format: 'csv', type: 'device.telemetry', csvStringFields: ['device_id'] }]), ingest);
  await until(() => ingest.values().length === 1, 'one row');
  await stop(source);
  appendFileSync(file, 'd-2,1700000000001,temp,-3,\nbad,row\n');
  source = await start(d, config([{ path: file, format: 'csv', type: 'device.telemetry', csvStringFields: ['device_id'] }]), ingest);
  await until(() => ingest.values().length === 3, 'two more rows');
  assert.deepEqual(ingest.values(), [
    { device_id: '42', timestamp: 1700000000000, metric: 'temp', value: 21.5, note: 'a, "quoted"\nnote' },
    { device_id: 'd-2', timestamp: 1700000000001, metric: 'temp', value: -3 },
    { refused: 'EDGE_ERR_MALFORMED_CSV' },
  ]);
});

test('follows rotation: the old file is read to its end (also what was written after the rename), then the new one', async () => {
  const d = tempDir();
  const file = join(d, 'app.log');
  writeFileSync(file, 'one\ntwo\n');
  const ingest = new FakeIngest();
  await start(d, config([{ path: file, format: 'raw', sourceId: 'gw-1' }]), ingest);
  await until(() => ingest.values().length === 2, 'two lines');
  // logrotate: rename, the writer still has the old file open for a moment, then a new file appears.
  const writer = openSync(file, 'a');
  renameSync(file, `${file}.1`);
  writeSync(writer, 'three\nfour without newline');
  closeSync(writer);
  writeFileSync(file, 'five\n');
  await until(() => ingest.values().length === 5, 'five lines');
  await settle();
  assert.deepEqual(ingest.lines(), ['one', 'two', 'three', 'four without newline', 'five']);
  const first = ingest.values()[0] as Record<string, unknown>;
  assert.equal(first.type, 'raw.blob');
  assert.equal(first.source_id, 'gw-1');
  assert.equal(first.origin, file);
  assert.equal(first.encoding, 'utf8');
});

test('a file rotated while the agent was down: the rest of the old file (found by inode) first, then the new one', async () => {
  const d = tempDir();
  const file = join(d, 'app.log');
  writeFileSync(file, 'one\n');
  const ingest = new FakeIngest();
  let source = await start(d, config([{ path: file, format: 'raw' }]), ingest);
  await until(() => ingest.values().length === 1, 'one line');
  await stop(source);
  appendFileSync(file, 'two\n');
  renameSync(file, `${file}.1`);
  writeFileSync(file, 'three\n');
  source = await start(d, config([{ path: file, format: 'raw' }]), ingest);
  await until(() => ingest.values().length === 3, 'three lines');
  await settle();
  assert.deepEqual(ingest.lines(), ['one', 'two', 'three']);
});

test('a truncated file (copytruncate) is read again from the start', async () => {
  const d = tempDir();
  const file = join(d, 'app.ndjson');
  writeFileSync(file, ev(1) + ev(2) + ev(3));
  const ingest = new FakeIngest();
  await start(d, config([{ path: file }]), ingest);
  await until(() => ingest.values().length === 3, 'three lines');
  truncateSync(file, 0);
  await settle();
  appendFileSync(file, ev(4));
  await until(() => ingest.values().length === 4, 'the line after truncation');
  await settle();
  assert.deepEqual(ingest.lines(), ['1', '2', '3', '4']);
});

test('startAt end skips what a new file already holds; a file not there yet is waited for', async () => {
  const d = tempDir();
  const old = join(d, 'old.ndjson');
  const later = join(d, 'later.ndjson');
  writeFileSync(old, ev(1));
  const ingest = new FakeIngest();
  await start(d, config([{ path: old, startAt: 'end' }, { path: later }]), ingest);
  await settle();
  appendFileSync(old, ev(2));
  writeFileSync(later, ev(3));
  await until(() => ingest.values().length === 2, 'two lines');
  assert.deepEqual(ingest.lines().sort(), ['2', '3']);
});

test('a line longer than maxLineBytes is dead-lettered as too large, the lines around it go through', async () => {
  const d = tempDir();
  const file = join(d, 'big.ndjson');
  writeFileSync(file, ev(1) + JSON.stringify({ n: 2, pad: 'x'.repeat(3000) }) + '\n' + ev(3));
  const ingest = new FakeIngest();
  await start(d, config([{ path: file }], { maxLineBytes: 256, readChunkBytes: 4096 }), ingest);
  await until(() => ingest.values().length === 3, 'three records');
  assert.deepEqual(ingest.values(), [{ n: 1 }, { refused: 'EDGE_ERR_TOO_LARGE' }, { n: 3 }]);
});

test('records longer than one read are read whole (a bigger read when needed), across many small reads', async () => {
  const d = tempDir();
  const file = join(d, 'small-reads.ndjson');
  const lines = Array.from({ length: 30 }, (_, i) => JSON.stringify({ n: i, pad: 'y'.repeat(i * 5) }) + '\n');
  writeFileSync(file, lines.join('') + JSON.stringify({ n: 99, pad: 'z'.repeat(400) }) + '\n' + ev(100));
  const ingest = new FakeIngest();
  await start(d, config([{ path: file }], { readChunkBytes: 16, maxLineBytes: 256, maxLinesPerSubmit: 7 }), ingest);
  await until(() => ingest.values().length === 32, '32 records');
  assert.deepEqual(ingest.lines(), [...Array.from({ length: 30 }, (_, i) => String(i)), JSON.stringify({ refused: 'EDGE_ERR_TOO_LARGE' }), '100']);
});

test('raw lines read again after a crash between commit and offset write are the same events (same timestamps)', async () => {
  const d = tempDir();
  const file = join(d, 'app.log');
  writeFileSync(file, 'same\nsame\nother\n');
  const ingest = new FakeIngest();
  ingest.lose = 1;
  let now = 1_700_000_000_000;
  let source = await start(d, config([{ path: file, format: 'raw' }]), ingest, () => now);
  await until(() => ingest.committed.length === 1, 'the lost commit');
  await stop(source);
  assert.ok(state(d)[`tail:${file}`]!.pending, 'the batch is recorded as pending with its receive time');
  now += 60_000;
  source = await start(d, config([{ path: file, format: 'raw' }]), ingest, () => now);
  await until(() => ingest.committed.length === 2, 'the batch read again');
  assert.deepEqual(ingest.committed[1]!.items.map((i) => 'value' in i && i.value), ingest.committed[0]!.items.map((i) => 'value' in i && i.value));
  const stamps = ingest.committed[0]!.items.map((i) => 'value' in i && (i.value as { timestamp: string }).timestamp);
  assert.equal(new Set(stamps).size, 3, 'two identical lines still get different timestamps');
  appendFileSync(file, 'next\n');
  await until(() => ingest.committed.length === 3, 'a new batch');
  assert.equal(state(d)[`tail:${file}`]!.pending, undefined);
  assert.ok(!stamps.includes((ingest.values()[6] as { timestamp: string }).timestamp), 'a new batch gets new timestamps');
});

test('replays a folder in name order (only the configured extension), picks up files added later, and never twice', async () => {
  const d = tempDir();
  const spool = join(d, 'spool');
  mkdirSync(spool);
  writeFileSync(join(spool, 'b.ndjson'), ev(3) + ev(4));
  writeFileSync(join(spool, 'a.ndjson'), ev(1) + ev(2));
  writeFileSync(join(spool, 'c.txt'), 'not me\n');
  writeFileSync(join(spool, 'd.ndjson'), ev(5) + ev(6)); // last line without newline is taken once the file is complete
  appendFileSync(join(spool, 'd.ndjson'), '{"n":7}');
  const ingest = new FakeIngest();
  const cfg = config([{ path: spool, mode: 'replay', extension: '.ndjson' }]);
  let source = await start(d, cfg, ingest);
  await until(() => ingest.values().length === 7, 'seven events');
  assert.deepEqual(ingest.lines(), ['1', '2', '3', '4', '5', '6', '7']);
  writeFileSync(join(spool, 'e.ndjson'), ev(8));
  await until(() => ingest.values().length === 8, 'the file added later');
  await stop(source);
  source = await start(d, cfg, ingest);
  writeFileSync(join(spool, 'f.ndjson'), ev(9));
  await until(() => ingest.values().length === 9, 'the file added after the restart');
  await settle();
  assert.deepEqual(ingest.lines(), ['1', '2', '3', '4', '5', '6', '7', '8', '9']);
});

test('replays json files (one event or an array each) in bounded slices', async () => {
  const d = tempDir();
  const spool = join(d, 'json');
  mkdirSync(spool);
  writeFileSync(join(spool, '1.json'), JSON.stringify([1, 2, 3, 4, 5].map((n) => ({ n }))));
  writeFileSync(join(spool, '2.json'), JSON.stringify({ n: 6 }));
  const ingest = new FakeIngest();
  await start(d, config([{ path: spool, mode: 'replay', format: 'json' }], { maxLinesPerSubmit: 2 }), ingest);
  await until(() => ingest.values().length === 6, 'six events');
  assert.deepEqual(ingest.committed.map((s) => s.items.length), [2, 2, 1, 1]);
  assert.deepEqual(ingest.lines(), ['1', '2', '3', '4', '5', '6']);
});

test('format json on a tailed file is a config error naming the field', () => {
  assert.throws(
    () => createFileSource(config([{ path: '/x', format: 'json' }]), { ingest: new FakeIngest() as unknown as IngestPipeline, log, dataDir: '/tmp' }),
    /config\.sources\.file\.inputs\[0\]\.format "json" needs mode "replay"/,
  );
});
