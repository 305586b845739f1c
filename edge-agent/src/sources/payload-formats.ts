/**
 * How the bytes of an MQTT message or a file record become ingest items, per configured `format`:
 *
 * - `json`: one JSON event, or a JSON array of events
 * - `ndjson`: one JSON event per line
 *   (both through json-payload.ts, the HTTP and MQTT sources' checks: UTF-8, nesting depth, event size, numbers)
 * - `csv`: RFC 4180 records; the header row names the fields, unquoted numbers and true/false are parsed
 * - `raw`: anything (log lines, text, binary), wrapped in a `raw.blob` envelope and forwarded as it came
 */
import { isUtf8 } from 'node:buffer';
import { EdgeErrorCode } from '../errors.js';
import type { IngestItem } from '../ingest.js';
import { itemsFromJsonPayload, itemsFromNdjsonPayload, type JsonPayloadLimits } from './json-payload.js';
import { wrapRaw, type RawMeta } from './raw-envelope.js';

export const PAYLOAD_FORMATS = ['json', 'ndjson', 'csv', 'raw'] as const;
export type PayloadFormat = (typeof PAYLOAD_FORMATS)[number];

const QUOTE = 0x22;
const LF = 0x0a;
const CR = 0x0d;

/**
 * Index of the LF that ends the record starting at `start`, or -1 when `buf` holds no complete record.
 * With `quoted` (CSV), an LF inside a quoted field does not end the record ([RFC 4180] 2.6); a doubled quote
 * toggles twice, so counting quotes is enough.
 */
export function findRecordEnd(buf: Uint8Array, start: number, quoted: boolean, end = buf.length): number {
  if (!quoted) {
    const index = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).indexOf(LF, start);
    return index === -1 || index >= end ? -1 : index;
  }
  let inQuotes = false;
  for (let i = start; i < end; i++) {
    const byte = buf[i];
    if (byte === QUOTE) inQuotes = !inQuotes;
    else if (byte === LF && !inQuotes) return i;
  }
  return -1;
}

/** One record without its line end (a trailing CR of CRLF is dropped). */
export function trimLineEnd(record: Buffer): Buffer {
  return record.length > 0 && record[record.length - 1] === CR ? record.subarray(0, record.length - 1) : record;
}

export interface CsvField {
  text: string;
  quoted: boolean;
}

export type CsvParse = { ok: true; fields: CsvField[] } | { ok: false; reason: string };

/** Splits one CSV record into fields ([RFC 4180] 2.5-2.7: quoted fields, `""` for a quote inside one). */
export function parseCsvRecord(record: string, delimiter = ','): CsvParse {
  const fields: CsvField[] = [];
  let i = 0;
  for (;;) {
    if (record[i] === '"') {
      let text = '';
      i++;
      for (;;) {
        const next = record.indexOf('"', i);
        if (next === -1) return { ok: false, reason: `unterminated quoted field ${fields.length + 1}` };
        text += record.slice(i, next);
        if (record[next + 1] === '"') {
          text += '"';
          i = next + 2;
          continue;
        }
        i = next + 1;
        break;
      }
      if (i < record.length && !record.startsWith(delimiter, i)) {
        return { ok: false, reason: `field ${fields.length + 1}: text after the closing quote` };
      }
      fields.push({ text, quoted: true });
    } else {
      const next = record.indexOf(delimiter, i);
      const stop = next === -1 ? record.length : next;
      fields.push({ text: record.slice(i, stop), quoted: false });
      i = stop;
    }
    if (i >= record.length) return { ok: true, fields };
    i += delimiter.length; // at a delimiter
    if (i === record.length) {
      fields.push({ text: '', quoted: false });
      return { ok: true, fields };
    }
  }
}

const JSON_NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;

/**
 * A field's value: quoted fields and `stringFields` stay text; an unquoted JSON number becomes a number, `true`
 * and `false` booleans; an empty unquoted field is absent (so optional schema fields may be left empty).
 * `007` is not a JSON number and stays text.
 */
export function csvValue(field: CsvField, asString: boolean): unknown {
  if (field.quoted || asString) return field.text;
  const text = field.text.trim();
  if (text === '') return undefined;
  if (JSON_NUMBER.test(text)) {
    const number = Number(text);
    if (Number.isFinite(number)) return number;
  }
  if (text === 'true') return true;
  if (text === 'false') return false;
  return field.text;
}

export interface CsvOptions {
  delimiter: string;
  /** Fields kept as text even when they look like numbers (ids such as `42`). */
  stringFields: readonly string[];
}

/** The header row: field names, trimmed, non-empty and unique. */
export function parseCsvHeader(record: string, options: CsvOptions): { ok: true; names: string[] } | { ok: false; reason: string } {
  const parsed = parseCsvRecord(record.replace(/^\uFEFF/, ''), options.delimiter);
  if (!parsed.ok) return { ok: false, reason: `header row: ${parsed.reason}` };
  const names = parsed.fields.map((f) => f.text.trim());
  const empty = names.findIndex((n) => n === '');
  if (empty !== -1) return { ok: false, reason: `header row: column ${empty + 1} has no name` };
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate !== undefined) return { ok: false, reason: `header row: column "${duplicate.slice(0, 64)}" appears twice` };
  return { ok: true, names };
}

/** One CSV data record → one item: an object keyed by the header's names, or a refusal naming what is wrong. */
export function csvRecordToItem(header: readonly string[], record: Buffer, options: CsvOptions): IngestItem {
  if (!isUtf8(record)) return { refused: { code: EdgeErrorCode.INVALID_UTF8, reason: 'CSV record is not valid UTF-8' }, raw: record };
  const parsed = parseCsvRecord(record.toString('utf8'), options.delimiter);
  if (!parsed.ok) return { refused: { code: EdgeErrorCode.MALFORMED_CSV, reason: parsed.reason }, raw: record };
  if (parsed.fields.length !== header.length) {
    return {
      refused: { code: EdgeErrorCode.MALFORMED_CSV, reason: `record has ${parsed.fields.length} fields, the header ${header.length}` },
      raw: record,
    };
  }
  const entries: Array<[string, unknown]> = [];
  parsed.fields.forEach((field, i) => {
    const name = header[i]!;
    const value = csvValue(field, options.stringFields.includes(name));
    if (value !== undefined) entries.push([name, value]);
  });
  // fromEntries defines own properties: a column named __proto__ is a plain (and schema-refused) field.
  return { value: Object.fromEntries(entries), raw: record };
}

/** Whether a record holds nothing but whitespace (skipped in every format). */
export function isBlank(record: Buffer): boolean {
  for (const byte of record) if (byte !== 0x20 && byte !== 0x09 && byte !== CR && byte !== LF) return false;
  return true;
}

/**
 * A whole payload (an MQTT message) → items. `raw` needs `rawMeta` (the receive time and the source id);
 * `csv` payloads start with their header row.
 */
export function itemsFromPayload(format: PayloadFormat, payload: Buffer, rawMeta: RawMeta, csv: CsvOptions, limits: JsonPayloadLimits): IngestItem[] {
  switch (format) {
    case 'json':
      return itemsFromJsonPayload(payload, limits);
    case 'raw':
      return [wrapRaw(payload, rawMeta)];
    case 'ndjson':
      return itemsFromNdjsonPayload(payload, limits);
    case 'csv': {
      const [first, ...rest] = splitRecords(payload, true);
      if (!first) return [];
      const header = parseCsvHeader(first.toString('utf8'), csv);
      if (!header.ok) return [{ refused: { code: EdgeErrorCode.MALFORMED_CSV, reason: header.reason }, raw: payload.subarray(0, 1024) }];
      return rest.map((record) => csvRecordToItem(header.names, record, csv));
    }
  }
}

/** Non-blank records of a complete payload (the last one needs no line end). */
export function splitRecords(payload: Buffer, quoted: boolean): Buffer[] {
  const records: Buffer[] = [];
  let start = 0;
  while (start < payload.length) {
    let end = findRecordEnd(payload, start, quoted);
    if (end === -1) end = payload.length;
    const record = trimLineEnd(payload.subarray(start, end));
    if (!isBlank(record)) records.push(record);
    start = end + 1;
  }
  return records;
}
