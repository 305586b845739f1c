/**
 * JSON payloads → ingest items, refusing what JSON.parse would accept silently or choke on:
 *
 * - bytes that are not UTF-8 (`Buffer.toString` would replace them with U+FFFD and store altered data);
 * - nesting deeper than `maxDepth`, checked on the bytes BEFORE parsing, so a nesting bomb (`[[[[…`) never
 *   allocates millions of arrays nor reaches code that recurses (ajv, JSON.stringify, msgpack);
 * - numbers that overflow a double (`1e400` parses to Infinity, which JSON cannot even represent again);
 * - strings with a lone surrogate escape (`"\ud800"`), which have no UTF-8 form;
 * - strings with a NUL character (`"\u0000"`), which QuestDB refuses in a symbol: one such row fails the hub's whole
 *   ILP request, and would stall it;
 * - single events larger than `maxEventBytes` (an event must fit one JetStream message: max_payload is 4 MB).
 *
 * NaN and Infinity literals are not JSON (RFC 8259 §6) and JSON.parse already refuses them (MALFORMED_JSON); the
 * reason then names the field that holds one, which the parser's message does not.
 * A payload-level refusal (bad UTF-8, too deep) refuses the whole payload; a value-level one (a bad number in
 * element 3 of an array) refuses only that element, so the valid events beside it still go in.
 */
import { isUtf8 } from 'node:buffer';
import { EdgeErrorCode } from '../errors.js';
import type { IngestItem } from '../ingest.js';

export interface JsonPayloadLimits {
  /** Deepest nesting of arrays and objects, counting a top-level array of events as one level. */
  maxDepth: number;
  /** Largest single event in bytes of JSON text. */
  maxEventBytes: number;
}

/** The dead letter of a nesting bomb keeps only this much of it (the rest is brackets); others keep their bytes. */
export const DEAD_LETTER_RAW_MAX_BYTES = 65536;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const COMMA = 0x2c;

function isJsonWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

export type JsonScan =
  | { ok: true; /** Byte ranges [start, end) of the elements when the payload is a top-level array. */ elements?: Array<[number, number]> }
  | { ok: false; /** Offset of the bracket that went one level too deep. */ offset: number };

/**
 * One pass over the bytes: nesting depth (stops at the first bracket beyond `maxDepth`) and, for a top-level
 * array, where each element starts and ends. Strings are skipped with a native search for the closing quote.
 * The result is only meaningful for valid JSON; callers parse afterwards and check the element count.
 */
export function scanJson(bytes: Buffer, maxDepth: number): JsonScan {
  const length = bytes.length;
  let depth = 0;
  let i = 0;
  while (i < length && isJsonWhitespace(bytes[i]!)) i++;
  const topArray = bytes[i] === OPEN_ARRAY;
  const elements: Array<[number, number]> | undefined = topArray ? [] : undefined;
  let elementStart = -1;
  let lastSignificant = -1;
  for (; i < length; i++) {
    const byte = bytes[i]!;
    if (isJsonWhitespace(byte)) continue;
    if (elements && depth === 1 && elementStart === -1 && byte !== COMMA && byte !== CLOSE_ARRAY) elementStart = i;
    switch (byte) {
      case QUOTE: {
        // Skip to the closing quote: one not preceded by an odd number of backslashes.
        let close = bytes.indexOf(QUOTE, i + 1);
        while (close !== -1) {
          let backslashes = 0;
          while (bytes[close - 1 - backslashes] === BACKSLASH) backslashes++;
          if (backslashes % 2 === 0) break;
          close = bytes.indexOf(QUOTE, close + 1);
        }
        if (close === -1) return { ok: true }; // unterminated string: JSON.parse reports it
        i = close;
        break;
      }
      case OPEN_ARRAY:
      case OPEN_OBJECT:
        depth++;
        if (depth > maxDepth) return { ok: false, offset: i };
        break;
      case CLOSE_ARRAY:
      case CLOSE_OBJECT:
        depth--;
        if (elements && depth === 0 && elementStart !== -1) {
          elements.push([elementStart, lastSignificant + 1]);
          elementStart = -1;
        }
        break;
      case COMMA:
        if (elements && depth === 1 && elementStart !== -1) {
          elements.push([elementStart, lastSignificant + 1]);
          elementStart = -1;
        }
        break;
    }
    lastSignificant = i;
  }
  return elements ? { ok: true, elements } : { ok: true };
}

/**
 * Offset of the first byte of the first ill-formed UTF-8 sequence (Unicode 15, table 3-7: no overlong forms,
 * no surrogates, nothing above U+10FFFF), or -1 when `bytes` is valid UTF-8. Only used to explain a refusal.
 */
export function firstInvalidUtf8Offset(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i]!;
    if (b0 < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let low = 0x80;
    let high = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf) need = 1;
    else if (b0 >= 0xe0 && b0 <= 0xef) {
      need = 2;
      if (b0 === 0xe0) low = 0xa0; // overlong
      if (b0 === 0xed) high = 0x9f; // UTF-16 surrogates
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      need = 3;
      if (b0 === 0xf0) low = 0x90; // overlong
      if (b0 === 0xf4) high = 0x8f; // above U+10FFFF
    } else return i;
    for (let k = 1; k <= need; k++) {
      const b = bytes[i + k];
      if (b === undefined || b < (k === 1 ? low : 0x80) || b > (k === 1 ? high : 0xbf)) return i;
    }
    i += need + 1;
  }
  return -1;
}

export interface UnsafeValue {
  code: EdgeErrorCode;
  reason: string;
  /** JSON pointer of the offending value. */
  field: string;
}

const isWellFormed = (text: string): boolean => (text as unknown as { isWellFormed(): boolean }).isWellFormed();

interface Frame {
  value: object;
  parent: Frame | undefined;
  key: string;
}

function pointer(frame: Frame | undefined, key: string): string {
  const parts = [key];
  for (let f = frame; f && f.parent; f = f.parent) parts.push(f.key);
  return '/' + parts.reverse().map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
}

function checkLeaf(value: unknown): Omit<UnsafeValue, 'field'> | undefined {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return { code: EdgeErrorCode.NUMBER_OUT_OF_RANGE, reason: 'is a number too large for a 64-bit float (it overflows to Infinity)' };
  } else if (typeof value === 'string') {
    if (!isWellFormed(value)) return { code: EdgeErrorCode.INVALID_UTF8, reason: 'contains a lone surrogate escape (\\ud800-\\udfff), which has no UTF-8 form' };
    if (value.includes('\u0000')) return { code: EdgeErrorCode.NUL_CHARACTER, reason: 'contains a NUL character (\\u0000), which QuestDB cannot store in a symbol column' };
  }
  return undefined;
}

const NON_FINITE_LITERALS = ['NaN', 'Infinity', '-Infinity'] as const;
const NON_FINITE_TEXT = /NaN|Infinity/;

/**
 * The first NaN, Infinity or -Infinity literal standing as a value outside strings, with its JSON pointer. Only
 * run on text JSON.parse refused, to say which field it was; a small tokenizer that tracks object keys and array
 * indexes and gives up (undefined) on anything it cannot follow. Depth is bounded by the scan before parsing.
 */
export function findNonFiniteLiteral(text: string): { literal: string; field: string } | undefined {
  if (!NON_FINITE_TEXT.test(text)) return undefined; // one native scan for the usual malformed text
  const path: Array<{ array: boolean; key: string; index: number }> = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === QUOTE) {
      let close = i + 1;
      while (close < text.length && text.charCodeAt(close) !== QUOTE) close += text.charCodeAt(close) === BACKSLASH ? 2 : 1;
      if (close >= text.length) return undefined;
      const top = path.at(-1);
      if (top && !top.array && expectKey) {
        try {
          top.key = JSON.parse(text.slice(i, close + 1)) as string;
        } catch {
          top.key = text.slice(i + 1, close);
        }
        expectKey = false;
      }
      i = close;
      continue;
    }
    const top = path.at(-1);
    switch (ch) {
      case OPEN_ARRAY:
      case OPEN_OBJECT:
        path.push({ array: ch === OPEN_ARRAY, key: '', index: 0 });
        expectKey = ch === OPEN_OBJECT;
        continue;
      case CLOSE_ARRAY:
      case CLOSE_OBJECT:
        path.pop();
        continue;
      case COMMA:
        if (top?.array) top.index++;
        else if (top) expectKey = true;
        continue;
    }
    const literal = NON_FINITE_LITERALS.find((l) => text.startsWith(l, i));
    if (literal) {
      const field = '/' + path.map((p) => (p.array ? String(p.index) : p.key.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/');
      return { literal, field: path.length === 0 ? '/' : field };
    }
  }
  return undefined;
}

/** The refusal of a JSON text JSON.parse threw on: the parser's message, or which field holds a NaN or Infinity. */
function malformed(what: string, text: string, error: unknown, raw: Buffer): IngestItem {
  const nonFinite = findNonFiniteLiteral(text);
  if (nonFinite) {
    const reason = `${what} is not valid JSON: ${nonFinite.field} is ${nonFinite.literal}, which JSON does not have (RFC 8259 §6: numbers are finite); send null or leave the field out`;
    return { refused: { code: EdgeErrorCode.MALFORMED_JSON, reason, field: nonFinite.field }, raw };
  }
  return refused(EdgeErrorCode.MALFORMED_JSON, `${what} is not valid JSON: ${(error as Error).message}`, raw);
}

/**
 * The first number that overflowed or string (or key) with a lone surrogate in a parsed value, or undefined when
 * all is well. Iterative (depth is bounded by the scan already; no recursion anyway) and allocation-free on the
 * way: it runs for every event, so the JSON pointer of a bad value is only built once one is found.
 */
export function findUnsafeValue(root: unknown): UnsafeValue | undefined {
  if (root === null || typeof root !== 'object') {
    const bad = checkLeaf(root);
    return bad && { ...bad, field: '/', reason: `the value ${bad.reason}` };
  }
  const pending: object[] = [root];
  while (pending.length > 0) {
    const value = pending.pop()!;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const element: unknown = value[i];
        if (element !== null && typeof element === 'object') pending.push(element);
        else if (checkLeaf(element)) return describeUnsafe(root);
      }
      continue;
    }
    for (const key in value) {
      if (!Object.prototype.hasOwnProperty.call(value, key)) continue;
      const child: unknown = (value as Record<string, unknown>)[key];
      if (!isWellFormed(key)) return describeUnsafe(root);
      if (child !== null && typeof child === 'object') pending.push(child);
      else if (checkLeaf(child)) return describeUnsafe(root);
    }
  }
  return undefined;
}

/** The slow walk, with JSON pointers, run only once a bad value is known to exist. */
function describeUnsafe(root: object): UnsafeValue | undefined {
  const stack: Frame[] = [{ value: root, parent: undefined, key: '' }];
  while (stack.length > 0) {
    const frame = stack.pop()!;
    const entries: Iterable<[string, unknown]> = Array.isArray(frame.value)
      ? frame.value.map((v, i) => [String(i), v] as [string, unknown])
      : Object.entries(frame.value);
    for (const [key, value] of entries) {
      if (!Array.isArray(frame.value) && !isWellFormed(key)) {
        const field = pointer(frame, key);
        return { code: EdgeErrorCode.INVALID_UTF8, field, reason: `a field name at ${field} contains a lone surrogate escape, which has no UTF-8 form` };
      }
      if (value !== null && typeof value === 'object') {
        stack.push({ value, parent: frame, key });
        continue;
      }
      const bad = checkLeaf(value);
      if (bad) {
        const field = pointer(frame, key);
        return { ...bad, field, reason: `${field} ${bad.reason}` };
      }
    }
  }
  return undefined;
}

function refused(code: EdgeErrorCode, reason: string, raw: Buffer): IngestItem {
  return { refused: { code, reason }, raw };
}

/** Checks the bytes of one JSON text; returns a refusal, or the decoded text and the scan. */
function decode(bytes: Buffer, limits: JsonPayloadLimits, what: string, knownUtf8 = false): { item: IngestItem } | { text: string; scan: JsonScan & { ok: true } } {
  if (!knownUtf8 && !isUtf8(bytes)) {
    const offset = firstInvalidUtf8Offset(bytes);
    const at = offset >= 0 ? ` (byte 0x${bytes[offset]!.toString(16).padStart(2, '0')} at offset ${offset})` : '';
    return { item: refused(EdgeErrorCode.INVALID_UTF8, `${what} is not valid UTF-8${at}`, bytes) };
  }
  const scan = scanJson(bytes, limits.maxDepth);
  if (!scan.ok) {
    const reason = `${what} nests arrays/objects deeper than ${limits.maxDepth} levels (at offset ${scan.offset})`;
    return { item: refused(EdgeErrorCode.TOO_DEEP, reason, bytes.subarray(0, DEAD_LETTER_RAW_MAX_BYTES)) };
  }
  return { text: bytes.toString('utf8'), scan };
}

function valueItem(value: unknown, raw: Buffer, size: number, limits: JsonPayloadLimits, what: string): IngestItem {
  if (size > limits.maxEventBytes) {
    return refused(EdgeErrorCode.TOO_LARGE, `${what} of ${size} bytes exceeds maxEventBytes ${limits.maxEventBytes}`, raw);
  }
  const bad = findUnsafeValue(value);
  if (bad) return { refused: { code: bad.code, reason: bad.reason, field: bad.field }, raw };
  return { value, raw };
}

/** A JSON payload: one event, or an array of events (one item per element, each with its own bytes as raw). */
export function itemsFromJsonPayload(payload: Buffer, limits: JsonPayloadLimits): IngestItem[] {
  if (payload.every(isJsonWhitespace)) {
    return [refused(EdgeErrorCode.MALFORMED_JSON, 'payload is empty: send a JSON event or an array of events', payload)];
  }
  const decoded = decode(payload, limits, 'payload');
  if ('item' in decoded) return [decoded.item];
  let value: unknown;
  try {
    value = JSON.parse(decoded.text);
  } catch (error) {
    return [malformed('payload', decoded.text, error, payload)];
  }
  if (!Array.isArray(value)) return [valueItem(value, payload, payload.length, limits, 'event')];
  const spans = decoded.scan.elements;
  const exact = spans !== undefined && spans.length === value.length;
  return value.map((element, index) => {
    if (exact) {
      const [start, end] = spans[index]!;
      const raw = payload.subarray(start, end);
      return valueItem(element, raw, raw.length, limits, 'event');
    }
    // Not reached for JSON.parse-able input; kept so a scanner bug can never let an event skip the checks.
    const raw = Buffer.from(JSON.stringify(element) ?? 'null');
    return valueItem(element, raw, raw.length, limits, 'event');
  });
}

/** NDJSON: one item per non-blank line; a bad line is refused on its own. */
export function itemsFromNdjsonPayload(body: Buffer, limits: JsonPayloadLimits): IngestItem[] {
  const items: IngestItem[] = [];
  // A newline byte is never part of a multi-byte UTF-8 sequence, so a valid body means valid lines: one native
  // check instead of one per line. Only when it fails are lines checked one by one, to refuse just the bad ones.
  const bodyIsUtf8 = isUtf8(body);
  let start = 0;
  while (start < body.length) {
    let end = body.indexOf(0x0a, start);
    if (end === -1) end = body.length;
    const line = body.subarray(start, end);
    start = end + 1;
    let first = 0;
    let last = line.length;
    while (first < last && isJsonWhitespace(line[first]!)) first++;
    while (last > first && isJsonWhitespace(line[last - 1]!)) last--;
    if (first === last) continue;
    const trimmed = line.subarray(first, last);
    if (trimmed.length > limits.maxEventBytes) {
      items.push(refused(EdgeErrorCode.TOO_LARGE, `line of ${trimmed.length} bytes exceeds maxEventBytes ${limits.maxEventBytes}`, trimmed));
      continue;
    }
    const decoded = decode(trimmed, limits, 'line', bodyIsUtf8);
    if ('item' in decoded) {
      items.push(decoded.item);
      continue;
    }
    try {
      items.push(valueItem(JSON.parse(decoded.text), trimmed, trimmed.length, limits, 'line'));
    } catch (error) {
      items.push(malformed('line', decoded.text, error, trimmed));
    }
  }
  return items;
}
