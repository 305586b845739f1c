/**
 * Speeds up @questdb/nodejs-client (4.x), whose row buffer escapes every table name, symbol, column name and string
 * value one character at a time, with a `Buffer.write` call per character. On the hub that loop took more than half
 * of the CPU at a few thousand rows per second (profiled, `benchmarks/hub-throughput.ts`).
 *
 * The patch writes a string in one call when it contains nothing to escape (almost always: device ids, rule names,
 * event types) and leaves the rest to the client's own loop, so the bytes are the same (unit test
 * `questdb-fast-escape.test.ts` compares both). If a client version no longer has the method, nothing is patched and
 * the client works as before, only slower.
 */
import { SenderBufferV1 } from '@questdb/nodejs-client';

/** What the client escapes outside double quotes (names, symbols) and inside them (string values). */
const UNQUOTED_SPECIAL = /[ ,=\n\r\\]/;
const QUOTED_SPECIAL = /["\n\r\\]/;

type EscapingBuffer = {
  writeEscaped(this: EscapingBuffer, data: string, quoted?: boolean): void;
  write(this: EscapingBuffer, data: string): void;
};

let patched: boolean | undefined;

/** Installs the fast path once per process; returns whether the client had the method to patch. */
export function installFastIlpEscaping(): boolean {
  if (patched !== undefined) return patched;
  const base = Object.getPrototypeOf(SenderBufferV1.prototype) as Partial<EscapingBuffer> | null;
  const original = base?.writeEscaped;
  if (!base || typeof original !== 'function' || typeof base.write !== 'function') return (patched = false);
  base.writeEscaped = function writeEscaped(this: EscapingBuffer, data: string, quoted = false): void {
    if ((quoted ? QUOTED_SPECIAL : UNQUOTED_SPECIAL).test(data)) original.call(this, data, quoted);
    else this.write(data);
  };
  return (patched = true);
}
