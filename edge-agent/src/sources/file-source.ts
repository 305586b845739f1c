/**
 * Files as a source: tail growing files (NDJSON, CSV, raw log lines), or replay a folder of files in name order.
 *
 * Each input reads records from its byte offset in bounded batches (at most `maxLinesPerSubmit` records, one
 * submission in flight), hands them to the ingest pipeline, and writes the new offset to the state file only after
 * the outbox commit. A restart continues at the committed offset: nothing is skipped; a batch read again after a
 * crash between commit and offset write is the same events (raw lines get the receive time recorded before the
 * submission), which QuestDB's dedup keys collapse.
 *
 * A file is recognised by inode plus a fingerprint of its first bytes. Tailing follows rotation: when the path
 * names another file, the old one is read to its end first (also when it was renamed while the agent was down: it
 * is found by inode in the same folder); a file shorter than the offset was truncated and is read from the start.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readdirSync, readSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { EdgeError, EdgeErrorCode } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import {
  csvRecordToItem,
  findRecordEnd,
  isBlank,
  parseCsvHeader,
  PAYLOAD_FORMATS,
  trimLineEnd,
  type CsvOptions,
  type PayloadFormat,
} from './payload-formats.js';
import { MonotonicMicros, wrapRaw } from './raw-envelope.js';
import type { Source, SourceDeps, SourceFactory } from './source.js';
import { SourceState, stateFilePath } from './source-state.js';
import { itemsFromJsonPayload, itemsFromNdjsonPayload, type JsonPayloadLimits } from './json-payload.js';
import { SourceStopped, Stopper, submitUntilStored } from './submit-retry.js';

export interface FileInputConfig {
  /** The file to tail, or the folder to replay. */
  path: string;
  mode: 'tail' | 'replay';
  format: PayloadFormat;
  /** Event type of records that name none (CSV rows, NDJSON lines without `type`); raw lines are `raw.blob`. */
  type: string;
  /** Replay: only files whose name ends with this. */
  extension: string;
  /** Tail: where to begin in a file seen for the first time. */
  startAt: 'beginning' | 'end';
  csvDelimiter: string;
  csvStringFields: string[];
  /** Raw: `source_id` of the envelopes; empty: the file's name. */
  sourceId: string;
  /** Raw: media type of the envelopes; empty: detected (text or binary). */
  contentType: string;
}

export interface FileSourceConfig {
  enabled: boolean;
  pollIntervalMs: number;
  maxLinesPerSubmit: number;
  maxLineBytes: number;
  maxJsonDepth: number;
  readChunkBytes: number;
  retryInitialMs: number;
  retryMaxMs: number;
  inputs: FileInputConfig[];
}

export const fileSourceConfigSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'Files: tail growing NDJSON, CSV or log files, or replay a folder of files; offsets survive restarts.',
  properties: {
    enabled: { type: 'boolean', default: false, description: 'Read the configured inputs.' },
    pollIntervalMs: {
      type: 'integer',
      minimum: 10,
      default: 250,
      description: 'How often an input at the end of its file looks for new data, rotation or truncation.',
    },
    maxLinesPerSubmit: {
      type: 'integer',
      minimum: 1,
      maximum: 100000,
      default: 1000,
      description: 'Most records handed to the outbox in one commit (one commit in flight per input).',
    },
    maxLineBytes: {
      type: 'integer',
      minimum: 64,
      maximum: 67108864,
      default: 1048576,
      description: 'Largest record (line, CSV record; for `json` files the whole file); a longer one is dead-lettered with EDGE_ERR_TOO_LARGE.',
    },
    maxJsonDepth: {
      type: 'integer',
      minimum: 2,
      maximum: 1000,
      default: 32,
      description: 'Deepest nesting of arrays/objects in an NDJSON line or json file; deeper ones are dead-lettered with EDGE_ERR_TOO_DEEP.',
    },
    readChunkBytes: {
      type: 'integer',
      minimum: 4096,
      default: 65536,
      description: 'Bytes read from a file at once (more when a record is longer, up to maxLineBytes).',
    },
    retryInitialMs: { type: 'integer', minimum: 10, default: 100, description: 'First wait before retrying a commit the outbox refused (full).' },
    retryMaxMs: { type: 'integer', minimum: 10, default: 5000, description: 'Longest wait between commit retries (exponential backoff).' },
    inputs: {
      type: 'array',
      default: [],
      description: 'Files to tail and folders to replay.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['path'],
        properties: {
          path: { type: 'string', minLength: 1, description: 'The file to tail, or the folder to replay.' },
          mode: {
            enum: ['tail', 'replay'],
            default: 'tail',
            description: '`tail`: follow one growing file through rotation and truncation; `replay`: read every file of the folder in name order (files that appear later too).',
          },
          format: {
            enum: [...PAYLOAD_FORMATS],
            default: 'ndjson',
            description: '`ndjson` (one event per line), `csv` (header row names the fields), `raw` (each line wrapped as a raw.blob event), `json` (replay only: each file one event or an array).',
          },
          type: { type: 'string', default: '', description: 'Event type of records without a `type` field; empty: records must name it.' },
          extension: { type: 'string', default: '', description: 'Replay: only files whose name ends with this, e.g. `.ndjson`; empty: every file.' },
          startAt: {
            enum: ['beginning', 'end'],
            default: 'beginning',
            description: 'Tail: where to begin in a file the agent has no offset for (a file replacing it after rotation is always read from the beginning).',
          },
          csvDelimiter: { type: 'string', minLength: 1, maxLength: 1, default: ',', description: 'CSV: field delimiter.' },
          csvStringFields: {
            type: 'array',
            items: { type: 'string' },
            default: [],
            description: 'CSV: fields kept as text although they look like numbers (e.g. ids like `42`).',
          },
          sourceId: { type: 'string', maxLength: 256, default: '', description: 'Raw: source_id of the envelopes; empty: the file name.' },
          contentType: { type: 'string', maxLength: 128, default: '', description: 'Raw: content_type of the envelopes; empty: detected (text or binary).' },
        },
      },
    },
  },
} as const;

/** What the state file keeps per file. */
export interface FileEntry {
  ino: number;
  /** Byte offset after the last committed record. */
  offset: number;
  /** sha256 prefix of the first `fpLength` bytes: a new file that got the old one's inode is not mistaken for it. */
  fp: string;
  fpLength: number;
  /** `json` files: events committed so far. */
  items?: number;
  /** Raw: the batch submitted but not known committed, with the receive time its envelopes got. */
  pending?: { end: number; tsUs: number };
}

const FINGERPRINT_BYTES = 256;

export const createFileSource: SourceFactory<FileSourceConfig> = (config, deps) => new FileSource(config, deps);

export class FileSource implements Source {
  readonly name = 'file';
  private readonly stopper = new Stopper();
  private readonly loops: Promise<void>[] = [];
  private state: SourceState<FileEntry> | undefined;
  private readonly clock: MonotonicMicros;
  /** The HTTP and MQTT sources' JSON checks; an event must also fit one hub message (1 MiB). */
  private readonly limits: JsonPayloadLimits;

  constructor(
    private readonly config: FileSourceConfig,
    private readonly deps: SourceDeps,
    nowMs: () => number = Date.now,
  ) {
    this.clock = new MonotonicMicros(nowMs);
    this.limits = { maxDepth: config.maxJsonDepth, maxEventBytes: Math.min(config.maxLineBytes, 1048576) };
    config.inputs.forEach((input, i) => {
      if (input.format === 'json' && input.mode !== 'replay') {
        throw new EdgeError(EdgeErrorCode.SOURCE_CONFIG, `config.sources.file.inputs[${i}].format "json" needs mode "replay" (a tailed file is read line by line: use ndjson)`);
      }
    });
  }

  async start(): Promise<void> {
    this.state = new SourceState<FileEntry>(stateFilePath(this.deps, 'file'));
    for (const input of this.config.inputs) {
      const runner = input.mode === 'tail' ? new TailInput(this, input) : new ReplayInput(this, input);
      this.loops.push(this.run(runner, input));
    }
    this.deps.log.info({ inputs: this.config.inputs.map((i) => `${i.mode} ${i.path} (${i.format})`), state: this.state.path }, 'file source started');
  }

  async stop(): Promise<void> {
    this.stopper.stop();
    await Promise.all(this.loops.splice(0));
  }

  private async run(runner: TailInput | ReplayInput, input: FileInputConfig): Promise<void> {
    let lastError = '';
    try {
      while (!this.stopper.isStopped) {
        let progressed = false;
        try {
          progressed = await runner.step();
          lastError = '';
        } catch (error) {
          if (error instanceof SourceStopped) break;
          const message = (error as Error).message;
          if (message !== lastError) this.deps.log.error({ err: message, path: input.path }, 'file input failed; retrying');
          lastError = message;
        }
        if (!progressed) await this.stopper.sleep(this.config.pollIntervalMs);
      }
    } finally {
      runner.close();
    }
  }

  /** @internal Reads one batch from `file` and commits it; false when there was nothing to read. */
  async commitNextBatch(key: string, file: OpenFile, input: FileInputConfig, final: boolean): Promise<boolean> {
    const state = this.state!;
    const entry = state.get(key);
    const pending = input.format === 'raw' && entry?.pending && entry.offset === file.offset && entry.ino === file.ino ? entry.pending : undefined;
    const batch = file.readBatch(this.config, pending ? pending.end : undefined, final || pending !== undefined);
    if (batch.end === file.offset) return false;
    const dataRecords = batch.records.filter((r) => r.kind !== 'header');
    let tsUs = 0;
    if (input.format === 'raw' && dataRecords.length > 0) {
      tsUs = pending ? pending.tsUs : this.clock.reserve(dataRecords.length);
      if (!pending) {
        state.set(key, { ...file.entry(), pending: { end: batch.end, tsUs } });
        state.save();
      }
    }
    const items = dataRecords.flatMap((record, i) => this.toItems(record, file, input, tsUs + i));
    if (items.length > 0) {
      const result = await submitUntilStored(
        this.deps,
        items,
        { source: 'file', origin: file.path, ...(input.type ? { defaultType: input.type } : {}) },
        this.config,
        this.stopper,
      );
      if (result.rejected.length > 0) {
        this.deps.log.warn({ path: file.path, rejected: result.rejected.length, first: result.rejected.slice(0, 3) }, 'file records dead-lettered');
      }
    }
    file.offset = batch.end;
    state.set(key, file.entry());
    state.save();
    return true;
  }

  /** @internal `json` files: the whole file is one event or an array, committed in slices. */
  async commitJsonFile(key: string, file: OpenFile, input: FileInputConfig): Promise<boolean> {
    const state = this.state!;
    const size = file.size();
    if (size > this.config.maxLineBytes) {
      const head = file.read(0, 1024);
      const items: IngestItem[] = [
        { refused: { code: EdgeErrorCode.TOO_LARGE, reason: `json file of ${size} bytes exceeds maxLineBytes ${this.config.maxLineBytes}` }, raw: head },
      ];
      await submitUntilStored(this.deps, items, { source: 'file', origin: file.path }, this.config, this.stopper);
      file.offset = size;
      state.set(key, file.entry());
      state.save();
      return true;
    }
    const all = itemsFromJsonPayload(file.read(0, size), this.limits);
    let done = file.items ?? 0;
    while (done < all.length) {
      const slice = all.slice(done, done + this.config.maxLinesPerSubmit);
      await submitUntilStored(
        this.deps,
        slice,
        { source: 'file', origin: file.path, ...(input.type ? { defaultType: input.type } : {}) },
        this.config,
        this.stopper,
      );
      done += slice.length;
      file.items = done;
      state.set(key, file.entry());
      state.save();
    }
    file.offset = size;
    file.items = done;
    state.set(key, file.entry());
    state.save();
    return true;
  }

  private toItems(record: FileRecord, file: OpenFile, input: FileInputConfig, tsUs: number): IngestItem[] {
    if (record.kind === 'oversized') {
      const reason = `record of ${record.size} bytes exceeds maxLineBytes ${this.config.maxLineBytes}`;
      return [{ refused: { code: EdgeErrorCode.TOO_LARGE, reason }, raw: record.bytes }];
    }
    switch (input.format) {
      case 'raw':
        return [
          wrapRaw(record.bytes, {
            sourceId: input.sourceId || basename(file.path),
            timestampUs: tsUs,
            contentType: input.contentType,
            origin: file.path,
          }),
        ];
      case 'csv':
        if (!file.header) return [{ refused: { code: EdgeErrorCode.MALFORMED_CSV, reason: file.headerError ?? 'no header row' }, raw: record.bytes }];
        return [csvRecordToItem(file.header, record.bytes, csvOptions(input))];
      default:
        return itemsFromNdjsonPayload(record.bytes, this.limits);
    }
  }

  /** @internal */
  get settings(): FileSourceConfig {
    return this.config;
  }

  /** @internal */
  get stateStore(): SourceState<FileEntry> {
    return this.state!;
  }

  /** @internal */
  get log(): SourceDeps['log'] {
    return this.deps.log;
  }

  /** @internal */
  get stopped(): boolean {
    return this.stopper.isStopped;
  }
}

function csvOptions(input: FileInputConfig): CsvOptions {
  return { delimiter: input.csvDelimiter, stringFields: input.csvStringFields };
}

export type FileRecord =
  | { kind: 'record'; bytes: Buffer }
  | { kind: 'header'; bytes: Buffer }
  | { kind: 'oversized'; bytes: Buffer; size: number };

/** An open file and the offset after its last committed record. */
export class OpenFile {
  header: string[] | undefined;
  headerError: string | undefined;
  items: number | undefined;
  private fp = '';
  private fpLength = 0;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly ino: number,
    public offset: number,
    private readonly format: PayloadFormat,
    private readonly csv: CsvOptions,
    private readonly maxLineBytes: number,
  ) {}

  /** Opens `path`; the offset is the saved one when the saved entry is this file (inode and fingerprint), else `fresh`. */
  static open(path: string, saved: FileEntry | undefined, fresh: (stats: Stats) => number, input: FileInputConfig, maxLineBytes: number): OpenFile {
    const fd = openSync(path, 'r');
    try {
      const stats = fstatSync(fd);
      if (!stats.isFile()) throw new EdgeError(EdgeErrorCode.SOURCE_CONFIG, `${path} is not a regular file`);
      const file = new OpenFile(path, fd, stats.ino, 0, input.format, csvOptions(input), maxLineBytes);
      if (saved && file.isEntry(saved)) {
        file.offset = saved.offset;
        file.items = saved.items;
        if (stats.size < saved.offset) file.offset = 0; // truncated in place (copytruncate)
      } else {
        file.offset = Math.min(fresh(stats), stats.size);
      }
      file.refreshFingerprint();
      if (input.format === 'csv' && file.offset > 0) file.readHeader();
      return file;
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /** Whether `entry` describes this file: same inode, and the bytes it fingerprinted are still the same. */
  isEntry(entry: FileEntry): boolean {
    if (entry.ino !== this.ino) return false;
    if (entry.fpLength > this.size()) return false;
    return fingerprint(this.read(0, entry.fpLength)) === entry.fp;
  }

  entry(): FileEntry {
    this.refreshFingerprint();
    return { ino: this.ino, offset: this.offset, fp: this.fp, fpLength: this.fpLength, ...(this.items !== undefined ? { items: this.items } : {}) };
  }

  size(): number {
    return fstatSync(this.fd).size;
  }

  read(position: number, length: number): Buffer {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = readSync(this.fd, buf, got, length - got, position + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }

  /**
   * Up to `maxLinesPerSubmit` records from the offset. A record ends at LF (CSV: outside quotes); the last one
   * without a line end is taken only when `final` (the file is complete). `limit` caps the bytes (a pending batch
   * is read again exactly).
   */
  readBatch(config: Pick<FileSourceConfig, 'maxLinesPerSubmit' | 'readChunkBytes'>, limit: number | undefined, final: boolean): { records: FileRecord[]; end: number } {
    const quoted = this.format === 'csv';
    const size = limit ?? this.size();
    const records: FileRecord[] = [];
    let pos = this.offset;
    while (records.length < config.maxLinesPerSubmit && pos < size) {
      // Small reads for the usual short records; a read big enough for the longest record only when needed.
      let want = Math.min(config.readChunkBytes, size - pos);
      let buf = this.read(pos, want);
      let start = 0;
      for (;;) {
        while (records.length < config.maxLinesPerSubmit) {
          const end = findRecordEnd(buf, start, quoted);
          if (end === -1) break;
          this.push(records, buf.subarray(start, end), end - start);
          start = end + 1;
        }
        const longest = Math.min(this.maxLineBytes + 1, size - pos);
        if (start > 0 || buf.length >= longest || buf.length < want) break; // found records, read enough, or at EOF
        want = longest;
        buf = this.read(pos, want);
      }
      if (buf.length === 0) break;
      if (start === 0 && records.length < config.maxLinesPerSubmit) {
        // No record end in this read.
        if (buf.length > this.maxLineBytes) {
          const end = this.findEnd(pos + buf.length, size, quoted, buf);
          if (end === -1 && !final) break; // the long record is still being written
          const stop = end === -1 ? size : end;
          records.push({ kind: 'oversized', bytes: Buffer.from(buf.subarray(0, 1024)), size: stop - pos });
          start = stop - pos + (end === -1 ? 0 : 1);
        } else if (final && pos + buf.length === size) {
          this.push(records, buf, buf.length);
          start = buf.length;
        } else {
          break;
        }
      }
      pos += start;
      if (start === 0) break;
    }
    return { records, end: pos };
  }

  private push(records: FileRecord[], bytes: Buffer, size: number): void {
    if (size > this.maxLineBytes) {
      records.push({ kind: 'oversized', bytes: Buffer.from(bytes.subarray(0, 1024)), size });
      return;
    }
    const record = trimLineEnd(bytes);
    if (isBlank(record)) return;
    // Copies: the read buffer is reused by nothing, but a small copy keeps a 1 MiB chunk from being retained.
    const copy = Buffer.from(record);
    if (this.format === 'csv' && !this.header && !this.headerError) {
      this.setHeader(copy.toString('utf8'));
      records.push({ kind: 'header', bytes: copy });
      return;
    }
    records.push({ kind: 'record', bytes: copy });
  }

  /** Where the record that continues past `from` ends; `head` is the part already read (for CSV quote state). */
  private findEnd(from: number, size: number, quoted: boolean, head: Buffer): number {
    let inQuotes = false;
    if (quoted) for (const byte of head) if (byte === 0x22) inQuotes = !inQuotes;
    for (let pos = from; pos < size; ) {
      const buf = this.read(pos, Math.min(1048576, size - pos));
      if (buf.length === 0) break;
      for (let i = 0; i < buf.length; i++) {
        const byte = buf[i];
        if (quoted && byte === 0x22) inQuotes = !inQuotes;
        else if (byte === 0x0a && !inQuotes) return pos + i;
      }
      pos += buf.length;
    }
    return -1;
  }

  private readHeader(): void {
    const buf = this.read(0, Math.min(this.maxLineBytes + 1, this.offset));
    let start = 0;
    for (;;) {
      let end = findRecordEnd(buf, start, true);
      if (end === -1) end = buf.length;
      const record = trimLineEnd(buf.subarray(start, end));
      if (!isBlank(record)) return this.setHeader(record.toString('utf8'));
      if (end >= buf.length) break;
      start = end + 1;
    }
    this.headerError = 'no header row before the saved offset';
  }

  private setHeader(text: string): void {
    const parsed = parseCsvHeader(text, this.csv);
    if (parsed.ok) this.header = parsed.names;
    else this.headerError = parsed.reason;
  }

  private refreshFingerprint(): void {
    if (this.fpLength >= FINGERPRINT_BYTES && this.fp) return;
    const head = this.read(0, FINGERPRINT_BYTES);
    this.fp = fingerprint(head);
    this.fpLength = head.length;
  }
}

export function fingerprint(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 32);
}

/** One growing file at a fixed path, followed through rotation (rename + new file) and truncation. */
class TailInput {
  private file: OpenFile | undefined;
  private readonly path: string;
  private readonly key: string;

  constructor(
    private readonly source: FileSource,
    private readonly input: FileInputConfig,
  ) {
    this.path = resolve(input.path);
    this.key = `tail:${this.path}`;
  }

  async step(): Promise<boolean> {
    const state = this.source.stateStore;
    if (!this.file) {
      let stats: Stats;
      try {
        stats = statSync(this.path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false; // not there yet
        throw error;
      }
      const saved = state.get(this.key);
      if (saved && saved.ino !== stats.ino) {
        // Rotated while the agent was down: finish the old file, found by inode beside the new one.
        const old = findByInode(dirname(this.path), saved.ino, this.path);
        if (old) {
          const previous = OpenFile.open(old, saved, () => saved.offset, this.input, this.source.settings.maxLineBytes);
          try {
            if (previous.isEntry(saved)) {
              this.source.log.info({ path: this.path, rotated: old, offset: saved.offset }, 'reading the rest of a file rotated while the agent was down');
              await this.drain(previous);
            }
          } finally {
            previous.close();
          }
        } else {
          this.source.log.warn({ path: this.path, ino: saved.ino, offset: saved.offset }, 'the file read before was rotated away and is gone; continuing with the new file');
        }
      }
      const current = state.get(this.key);
      this.file = OpenFile.open(this.path, current, () => (current || this.input.startAt === 'beginning' ? 0 : stats.size), this.input, this.source.settings.maxLineBytes);
      if (!current || !this.file.isEntry(current)) {
        state.set(this.key, this.file.entry());
        state.save();
      }
    }
    const file = this.file;
    if (await this.source.commitNextBatch(this.key, file, this.input, false)) return true;
    // At the end of the file: has the path moved on to another file, or was this one truncated?
    let stats: Stats | undefined;
    try {
      stats = statSync(this.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (!stats || stats.ino !== file.ino) {
      if (!stats) return false; // renamed away and no new file yet: keep the old one open, it may still grow
      await this.drain(file);
      file.close();
      this.file = undefined;
      this.source.log.info({ path: this.path }, 'file rotated; following the new file');
      return true;
    }
    if (file.size() < file.offset) {
      this.source.log.info({ path: this.path, offset: file.offset, size: file.size() }, 'file truncated; reading from the start');
      file.offset = 0;
      file.header = undefined;
      file.headerError = undefined;
      this.source.stateStore.set(this.key, file.entry());
      this.source.stateStore.save();
      return true;
    }
    return false;
  }

  /** Reads a rotated file to its end (its last line needs no line end: nothing writes to it any more). */
  private async drain(file: OpenFile): Promise<void> {
    while (!this.source.stopped && (await this.source.commitNextBatch(this.key, file, this.input, true))) {
      // next batch
    }
  }

  close(): void {
    this.file?.close();
    this.file = undefined;
  }
}

/** Every file of a folder, in name order; files that appear later are read too, a file that grows is read on. */
class ReplayInput {
  private readonly dir: string;
  /** Size of each file at the previous poll: a last line without line end is taken once the size stopped changing. */
  private readonly lastSize = new Map<string, number>();

  constructor(
    private readonly source: FileSource,
    private readonly input: FileInputConfig,
  ) {
    this.dir = resolve(input.path);
  }

  async step(): Promise<boolean> {
    const state = this.source.stateStore;
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
    names = names.filter((n) => n.endsWith(this.input.extension) && !n.startsWith('.')).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const prefix = `replay:${this.dir}/`;
    const present = new Set(names.map((n) => prefix + n));
    let pruned = false;
    for (const key of state.keys()) {
      if (key.startsWith(prefix) && !present.has(key)) pruned = state.delete(key) || pruned;
    }
    if (pruned) state.save();
    let progressed = false;
    for (const name of names) {
      if (this.source.stopped) break;
      const path = join(this.dir, name);
      const key = prefix + name;
      let stats: Stats;
      try {
        stats = statSync(path);
      } catch {
        continue; // removed meanwhile
      }
      if (!stats.isFile()) continue;
      const saved = state.get(key);
      if (saved && saved.ino === stats.ino && saved.offset === stats.size) continue; // read completely
      const stable = this.lastSize.get(key) === stats.size;
      this.lastSize.set(key, stats.size);
      const file = OpenFile.open(path, saved, () => 0, this.input, this.source.settings.maxLineBytes);
      try {
        if (this.input.format === 'json') {
          if (stable && file.offset !== stats.size) progressed = (await this.source.commitJsonFile(key, file, this.input)) || progressed;
          continue;
        }
        while (!this.source.stopped && (await this.source.commitNextBatch(key, file, this.input, stable))) progressed = true;
        if (!state.get(key)) {
          state.set(key, file.entry());
          state.save();
        }
      } finally {
        file.close();
      }
    }
    return progressed;
  }

  close(): void {}
}

/** A file in `dir` (other than `except`) with inode `ino`, or undefined. */
function findByInode(dir: string, ino: number, except: string): string | undefined {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  for (const name of names) {
    const path = join(dir, name);
    if (path === except) continue;
    try {
      if (statSync(path).ino === ino) return path;
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

