/**
 * Writes rows to QuestDB with the ILP client's Sender over HTTP, auto-flush off: rows are encoded into the Sender's
 * buffer as batches arrive (spreading the encoding cost, which is the client's bottleneck), and `flush()` sends them
 * in one HTTP request, one QuestDB transaction. Never awaited per row.
 *
 * The Sender hands its buffer to the transport before the request and does not give it back on failure, so the
 * sink keeps every unconfirmed row and re-encodes them all before the next attempt. Replays are harmless: every
 * table has DEDUP UPSERT KEYS(ts, event_id).
 */
import { Sender } from '@questdb/nodejs-client';
import type { Logger } from '../../../shared/logger.js';
import type { EventBatch } from '../../../shared/wire.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import { QuestDbRest } from './questdb-rest.js';
import { mapEvent, writeRow, type IlpRowWriter, type Row, type RowMappings } from './questdb-rows.js';
import type { FlushResult, Sink, SkippedEvent, WriteResult } from './sink.js';
import { installFastIlpEscaping } from './questdb-fast-escape.js';

export interface QuestDbSinkOptions {
  /** Base URL of QuestDB's HTTP server, e.g. `http://127.0.0.1:9000`. */
  httpUrl: string;
  username?: string | undefined;
  password?: string | undefined;
  requestTimeoutMs: number;
  /** How long the client retries a failed request itself (the worker's backoff comes on top). */
  retryTimeoutMs: number;
  mappings: RowMappings;
  /** Epoch microseconds, for `hub_ts`. */
  nowMicros: () => number;
  log: Logger;
}

/** The Sender's hard cap on its buffer; the worker's maxBufferedRows keeps it far from this. */
const MAX_BUFFER_BYTES = 1024 * 1024 * 1024;
const INITIAL_BUFFER_BYTES = 4 * 1024 * 1024;
const NOTHING: readonly never[] = Object.freeze([]);

/** The ILP client's configuration string; `;` inside a value is escaped by doubling it. */
export function senderConfig(options: Pick<QuestDbSinkOptions, 'httpUrl' | 'username' | 'password' | 'requestTimeoutMs' | 'retryTimeoutMs'>): string {
  const url = new URL(options.httpUrl);
  const secure = url.protocol === 'https:';
  const port = url.port || (secure ? '443' : '80');
  const value = (v: string | number): string => String(v).replace(/;/g, ';;');
  const parts = [
    `addr=${value(`${url.hostname}:${port}`)}`,
    'auto_flush=off',
    // node:http transport: with the default undici transport (client 4.2), a flush to a QuestDB that refuses
    // connections retried forever and never settled, whatever retry_timeout said (seen here with QuestDB stopped).
    // This one fails fast on a refused connection, retries 5xx and timeouts within retry_timeout, and the worker's
    // own backoff does the rest.
    'stdlib_http=on',
    `request_timeout=${options.requestTimeoutMs}`,
    `retry_timeout=${options.retryTimeoutMs}`,
    `init_buf_size=${INITIAL_BUFFER_BYTES}`,
    `max_buf_size=${MAX_BUFFER_BYTES}`,
  ];
  if (options.username !== undefined) parts.push(`username=${value(options.username)}`, `password=${value(options.password ?? '')}`);
  return `${secure ? 'https' : 'http'}::${parts.join(';')};`;
}

export async function createQuestDbSink(options: QuestDbSinkOptions): Promise<QuestDbSink> {
  const log = options.log;
  if (!installFastIlpEscaping()) log.warn('this @questdb/nodejs-client has no writeEscaped to speed up; rows are encoded at its own pace');
  const sender = await Sender.fromConfig(senderConfig(options), {
    // The client logs a debug line per row; only its warnings and errors are worth a log line.
    log: (level, message) => {
      if (level === 'warn' || level === 'error') log[level]({ questdbClient: true }, String(message));
    },
  });
  const rest = new QuestDbRest({
    httpUrl: options.httpUrl,
    username: options.username,
    password: options.password,
    timeoutMs: options.requestTimeoutMs,
  });
  return new QuestDbSink(sender, rest, options);
}

/** The part of the ILP client's Sender the sink uses; an interface so tests can drive the sink without a server. */
export type IlpSender = IlpRowWriter & { flush(): Promise<boolean>; reset(): unknown; close(): Promise<void> };

/** Anything that answers whether the store is reachable. */
export interface StoreProbe {
  ping(): Promise<void>;
}

export class QuestDbSink implements Sink {
  /** Rows written and not yet confirmed, oldest first. */
  private pending: Row[] = [];
  /** The Sender's buffer no longer matches `pending` (a flush failed, or a row failed half-written). */
  private stale = false;
  private flushing = false;

  constructor(
    private readonly sender: IlpSender,
    private readonly rest: StoreProbe,
    private readonly options: Pick<QuestDbSinkOptions, 'mappings' | 'nowMicros' | 'log'>,
  ) {}

  get bufferedRows(): number {
    return this.pending.length;
  }

  write(batch: EventBatch): WriteResult {
    const { mappings } = this.options;
    const hubTs = this.options.nowMicros();
    let rows = 0;
    let skipped: SkippedEvent[] | undefined;
    let skippedAt: number[] | undefined;
    let invalidColumns: string[] | undefined;
    const events = batch.events;
    for (let index = 0; index < events.length; index++) {
      const event = events[index]!;
      if (event === null || typeof event !== 'object') {
        (skipped ??= []).push({ type: 'invalid_event', id: '', reason: 'event is not an object' });
        (skippedAt ??= []).push(index);
        continue;
      }
      const mapping = mappings.get(event.type, event.sv);
      if (!mapping) {
        (skipped ??= []).push({ type: 'unknown_schema', eventType: String(event.type), version: Number(event.sv), id: String(event.id) });
        (skippedAt ??= []).push(index);
        continue;
      }
      const mapped = mapEvent(mapping, event, batch.agent);
      if (!mapped.ok) {
        (skipped ??= []).push({ type: 'invalid_event', id: String(event.id), reason: mapped.reason });
        (skippedAt ??= []).push(index);
        continue;
      }
      if (mapped.invalidColumns) (invalidColumns ??= []).push(...mapped.invalidColumns.map((c) => `${mapping.table}.${c}`));
      this.pending.push(mapped.row);
      rows++;
      if (!this.stale) this.encode(mapped.row, hubTs);
    }
    return { rows, skipped: skipped ?? NOTHING, skippedAt: skippedAt ?? NOTHING, invalidColumns: invalidColumns ?? NOTHING };
  }

  async flush(): Promise<FlushResult> {
    if (this.flushing) throw new Error('QuestDbSink.flush() called while a flush is in flight');
    this.flushing = true;
    try {
      const rejected = this.stale ? this.reencode() : 0;
      const rows = this.pending.length;
      if (rows === 0) return { rows: 0, rejected };
      try {
        await this.sender.flush();
      } catch (error) {
        this.stale = true;
        throw new HubError(HubErrorCode.FLUSH_FAILED, `writing ${rows} rows to QuestDB failed: ${errorMessage(error)}`, { cause: error });
      }
      // Rows written while the request was in flight stay, already encoded after the flushed ones.
      this.pending = this.pending.slice(rows);
      return { rows, rejected };
    } finally {
      this.flushing = false;
    }
  }

  discard(): number {
    if (this.flushing) throw new Error('QuestDbSink.discard() called while a flush is in flight');
    const dropped = this.pending.length;
    this.pending = [];
    this.sender.reset();
    this.stale = false;
    return dropped;
  }

  probe(): Promise<void> {
    return this.rest.ping();
  }

  async close(): Promise<void> {
    if (this.pending.length === 0) this.sender.reset();
    await this.sender.close();
  }

  private encode(row: Row, hubTs: number): void {
    try {
      const closed = writeRow(this.sender, row, hubTs);
      // With auto-flush off, Sender.at() only closes the row; its promise cannot carry a network error.
      if (closed instanceof Promise) closed.catch((error: unknown) => this.onEncodeError(row, error));
    } catch (error) {
      this.onEncodeError(row, error);
    }
  }

  private onEncodeError(row: Row, error: unknown): void {
    // A row may be half in the buffer: rebuild the buffer from `pending` before the next flush.
    this.stale = true;
    this.options.log.warn({ table: row.table, err: errorMessage(error) }, 'ILP client refused to encode a row; buffer will be rebuilt');
  }

  /** Rebuilds the Sender's buffer from `pending`, dropping rows the client refuses to encode. Returns how many. */
  private reencode(): number {
    let rejected = 0;
    for (;;) {
      this.sender.reset();
      const hubTs = this.options.nowMicros();
      let bad = -1;
      let badError: unknown;
      for (let i = 0; i < this.pending.length; i++) {
        try {
          const closed = writeRow(this.sender, this.pending[i]!, hubTs);
          // row.ts is a checked safe integer, so at() can only fail on the buffer cap, which the loop would hit first.
          if (closed instanceof Promise) closed.catch(() => undefined);
        } catch (error) {
          bad = i;
          badError = error;
          break;
        }
      }
      if (bad < 0) break;
      const [row] = this.pending.splice(bad, 1);
      rejected++;
      this.options.log.error({ table: row?.table, ts: row?.ts, err: errorMessage(badError) }, 'ILP client cannot encode row; dropped');
    }
    this.stale = false;
    return rejected;
  }
}
