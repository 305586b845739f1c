/**
 * Writes rows to QuestDB with ILP over HTTP (IlpHttpWriter): rows are encoded as batches arrive, spreading the
 * encoding cost, and `flush()` sends them in one HTTP request, one QuestDB transaction. Never awaited per row.
 *
 * The sink keeps no rows of its own: the writer keeps the encoded bytes of a failed request and sends them again,
 * first, with the next flush. Replays are harmless: every table has DEDUP UPSERT KEYS(ts, event_id).
 */
import type { Logger } from '../../../shared/logger.js';
import type { EventBatch } from '../../../shared/wire.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import { QuestDbRest } from './questdb-rest.js';
import { mapEvent, writeRow, type IlpRowWriter, type RowMappings } from './questdb-rows.js';
import type { FlushResult, Sink, SkippedEvent, WriteResult } from './sink.js';
import { IlpHttpWriter } from './ilp-http-writer.js';

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

const NOTHING: readonly never[] = Object.freeze([]);

export async function createQuestDbSink(options: QuestDbSinkOptions): Promise<QuestDbSink> {
  const sender = new IlpHttpWriter(options);
  const rest = new QuestDbRest({
    httpUrl: options.httpUrl,
    username: options.username,
    password: options.password,
    timeoutMs: options.requestTimeoutMs,
  });
  return new QuestDbSink(sender, rest, options);
}

/** The part of IlpHttpWriter the sinks use; an interface so tests can drive them without a server. */
export type IlpSender = IlpRowWriter & {
  /** Forgets the row being written (one that threw half-way); closed rows stay. */
  abortRow(): unknown;
  /** Sends the closed rows, first those of a failed earlier flush; on failure keeps them all for the next one. */
  flush(): Promise<boolean>;
  /** Drops every row, sent-and-failed ones included. */
  reset(): unknown;
  close(): Promise<void>;
};

/** Anything that answers whether the store is reachable. */
export interface StoreProbe {
  ping(): Promise<void>;
}

export class QuestDbSink implements Sink {
  /** Rows in the writer not yet confirmed: those of a failed or in-flight request and those written since. */
  private unconfirmed = 0;
  private flushing = false;

  constructor(
    private readonly sender: IlpSender,
    private readonly rest: StoreProbe,
    private readonly options: Pick<QuestDbSinkOptions, 'mappings' | 'nowMicros' | 'log'>,
  ) {}

  get bufferedRows(): number {
    return this.unconfirmed;
  }

  write(batch: EventBatch): WriteResult {
    const { mappings } = this.options;
    const hubTs = this.options.nowMicros();
    let rows = 0;
    let skipped: SkippedEvent[] | undefined;
    let skippedAt: number[] | undefined;
    let invalidColumns: string[] | undefined;
    const skip = (index: number, reason: SkippedEvent): void => {
      (skipped ??= []).push(reason);
      (skippedAt ??= []).push(index);
    };
    const events = batch.events;
    for (let index = 0; index < events.length; index++) {
      const event = events[index]!;
      if (event === null || typeof event !== 'object') {
        skip(index, { type: 'invalid_event', id: '', reason: 'event is not an object' });
        continue;
      }
      const mapping = mappings.get(event.type, event.sv);
      if (!mapping) {
        skip(index, { type: 'unknown_schema', eventType: String(event.type), version: Number(event.sv), id: String(event.id) });
        continue;
      }
      const mapped = mapEvent(mapping, event, batch.agent);
      if (!mapped.ok) {
        skip(index, { type: 'invalid_event', id: String(event.id), reason: mapped.reason });
        continue;
      }
      try {
        writeRow(this.sender, mapped.row, hubTs);
      } catch (error) {
        // Only a row the line protocol cannot carry gets here (e.g. a column name from a schema it refuses).
        this.sender.abortRow();
        skip(index, { type: 'invalid_event', id: String(event.id), reason: `cannot be written to ${mapping.table}: ${errorMessage(error)}` });
        continue;
      }
      if (mapped.invalidColumns) (invalidColumns ??= []).push(...mapped.invalidColumns.map((c) => `${mapping.table}.${c}`));
      rows++;
    }
    this.unconfirmed += rows;
    return { rows, skipped: skipped ?? NOTHING, skippedAt: skippedAt ?? NOTHING, invalidColumns: invalidColumns ?? NOTHING };
  }

  async flush(): Promise<FlushResult> {
    if (this.flushing) throw new Error('QuestDbSink.flush() called while a flush is in flight');
    this.flushing = true;
    try {
      const rows = this.unconfirmed;
      if (rows === 0) return { rows: 0 };
      try {
        await this.sender.flush();
      } catch (error) {
        throw new HubError(HubErrorCode.FLUSH_FAILED, `writing ${rows} rows to QuestDB failed: ${errorMessage(error)}`, { cause: error });
      }
      // Rows written while the request was in flight stay, for the next flush.
      this.unconfirmed -= rows;
      return { rows };
    } finally {
      this.flushing = false;
    }
  }

  discard(): number {
    if (this.flushing) throw new Error('QuestDbSink.discard() called while a flush is in flight');
    const dropped = this.unconfirmed;
    this.unconfirmed = 0;
    this.sender.reset();
    return dropped;
  }

  probe(): Promise<void> {
    return this.rest.ping();
  }

  async close(): Promise<void> {
    if (this.unconfirmed === 0) this.sender.reset();
    await this.sender.close();
  }
}
