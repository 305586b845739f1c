/**
 * Payloads that are not structured events (log lines, text, binary) travel as `raw.blob` events
 * (schemas/raw.blob/v1.json): the bytes as they came, UTF-8 text kept as text and anything else base64.
 */
import { isUtf8 } from 'node:buffer';
import { EdgeErrorCode } from '../errors.js';
import type { IngestItem } from '../ingest.js';

export const RAW_TYPE = 'raw.blob';
/** Largest payload a raw envelope carries; the schema bounds `size` and `data` to it. */
export const RAW_MAX_BYTES = 262144;
const MAX_SOURCE_ID = 256;
const MAX_ORIGIN = 1024;
const MAX_CONTENT_TYPE = 128;

export interface RawEnvelope {
  type: typeof RAW_TYPE;
  source_id: string;
  /** RFC 3339 with microseconds, so envelopes of one source never share a timestamp. */
  timestamp: string;
  content_type: string;
  size: number;
  encoding: 'utf8' | 'base64';
  data: string;
  origin?: string;
}

export interface RawMeta {
  /** Partition key: the device id of a topic level, the topic, the file's name. */
  sourceId: string;
  /** Receive time, epoch microseconds. */
  timestampUs: number;
  /** Media type; empty: `text/plain; charset=utf-8` for text, `application/octet-stream` for anything else. */
  contentType?: string;
  origin?: string;
}

/**
 * Text is kept as text when it is valid UTF-8 without control characters other than tab, CR and LF (a NUL or an
 * escape sequence in a column value would surprise every reader).
 */
export function isPlainText(payload: Uint8Array): boolean {
  if (!isUtf8(payload)) return false;
  for (const byte of payload) {
    if ((byte < 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) || byte === 0x7f) return false;
  }
  return true;
}

/** Wraps `payload` in a raw envelope; a payload above RAW_MAX_BYTES is refused (dead-lettered with its first KiB). */
export function wrapRaw(payload: Buffer, meta: RawMeta): IngestItem {
  if (payload.byteLength > RAW_MAX_BYTES) {
    return {
      refused: { code: EdgeErrorCode.TOO_LARGE, reason: `raw payload of ${payload.byteLength} bytes exceeds ${RAW_MAX_BYTES}` },
      raw: payload.subarray(0, 1024),
    };
  }
  const text = isPlainText(payload);
  const envelope: RawEnvelope = {
    type: RAW_TYPE,
    source_id: (meta.sourceId || 'unknown').slice(0, MAX_SOURCE_ID),
    timestamp: isoMicros(meta.timestampUs),
    content_type: (meta.contentType || (text ? 'text/plain; charset=utf-8' : 'application/octet-stream')).slice(0, MAX_CONTENT_TYPE),
    size: payload.byteLength,
    encoding: text ? 'utf8' : 'base64',
    data: payload.toString(text ? 'utf8' : 'base64'),
  };
  if (meta.origin) envelope.origin = meta.origin.slice(0, MAX_ORIGIN);
  return { value: envelope, raw: payload };
}

/** Epoch microseconds → `2026-11-22T03:00:00.123456Z` (the validator keeps the sub-millisecond digits). */
export function isoMicros(us: number): string {
  const ms = Math.floor(us / 1000);
  const micros = String(Math.floor(us - ms * 1000)).padStart(3, '0');
  return new Date(ms).toISOString().replace(/Z$/, `${micros}Z`);
}

/**
 * Microsecond clock that never repeats a value: two identical payloads received in the same microsecond get
 * different timestamps, so their content-hash ids differ and QuestDB's dedup keeps both.
 */
export class MonotonicMicros {
  private last = 0;
  constructor(private readonly nowMs: () => number = Date.now) {}

  next(): number {
    return this.reserve(1);
  }

  /** The first of `count` consecutive microseconds nobody else gets. */
  reserve(count: number): number {
    const first = Math.max(this.last + 1, Math.floor(this.nowMs() * 1000));
    this.last = first + count - 1;
    return first;
  }
}
