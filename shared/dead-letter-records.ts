/**
 * The records of the DLQ stream that edge agents write (`dlq.<agentId>`, msgpack): version 2 carries a batch of dead
 * letters, version 1 (older agents) one. Written by edge-agent/src/buffer/jetstream-dead-letter-forwarder.ts, read
 * by the hub's dashboard and by tests. The hub's own dead letters (`dlq.hub.<reason>`) are another record, see
 * hub/src/sinks/dead-letter-sink.ts.
 */
import { Packr } from 'msgpackr';

/** One dead letter as the hub's DLQ stream holds it. Payloads over the forwarder's limit are cut (`truncated`); the agent keeps them whole. */
export interface DeadLetterEntry {
  /** Id of the dead letter in the agent's table (`edge-dlq show <id>`). */
  id: number;
  /** When the agent refused it, epoch ms. */
  at: number;
  source: string;
  code: string;
  reason: string;
  origin?: string;
  /** The type its source assumed for events without a `type` field (absent from older agents). */
  defaultType?: string;
  payload: Uint8Array;
  /** Bytes of the whole payload. */
  bytes: number;
  truncated?: true;
}

/** What one DLQ message from an agent carries (version 2; version 1 held a single dead letter). */
export interface DeadLetterBatch {
  v: 2;
  agent: string;
  letters: DeadLetterEntry[];
}

/** A dead letter with the agent that refused it: what readers of the DLQ stream get from `decodeDeadLetters`. */
export interface DeadLetterRecord extends DeadLetterEntry {
  agent: string;
}

const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeDeadLetterBatch(batch: DeadLetterBatch): Uint8Array {
  return packr.pack(batch);
}

/** The dead letters of one DLQ message from an agent: a batch (version 2), or one dead letter (version 1, older agents). */
export function decodeDeadLetters(data: Uint8Array): DeadLetterRecord[] {
  const message = packr.unpack(data) as (DeadLetterBatch | (DeadLetterRecord & { v: 1 })) | null;
  if (message === null || typeof message !== 'object') throw new Error('not a dead-letter message');
  if (message.v === 1) {
    const { v: _v, ...record } = message;
    return [record];
  }
  if (message.v === 2 && Array.isArray(message.letters)) return message.letters.map((letter) => ({ agent: message.agent, ...letter }));
  throw new Error(`not a dead-letter message of version 1 or 2 (v: ${String((message as { v?: unknown }).v)})`);
}

/** The message id of the batch of dead letters first..last of one agent. */
export function deadLetterMessageId(agentId: string, first: number, last: number): string {
  return `${agentId}:dlq:${first}-${last}`;
}


/**
 * What kind of check a refused event failed, for the data-quality counts per reason: from the agent's error code
 * and, for schema failures, from the reason the validator wrote (edge-agent/src/validation/event-validator.ts,
 * `describeAjvError`: "/value must be number", "/unit must NOT have more than 16 characters", ...).
 */
export type RefusalClass = 'type' | 'range' | 'enum' | 'format' | 'size' | 'missing' | 'unexpected_field' | 'unknown_type' | 'malformed' | 'future' | 'other';

export const REFUSAL_CLASSES: readonly RefusalClass[] = ['type', 'range', 'enum', 'format', 'size', 'missing', 'unexpected_field', 'unknown_type', 'malformed', 'future', 'other'];

export function classifyRefusal(code: string, reason: string): RefusalClass {
  switch (code) {
    case 'EDGE_ERR_SCHEMA_INVALID':
      break;
    case 'EDGE_ERR_MALFORMED_JSON':
    case 'EDGE_ERR_MALFORMED_CSV':
    case 'EDGE_ERR_NOT_AN_OBJECT':
    case 'EDGE_ERR_INVALID_UTF8':
    case 'EDGE_ERR_NUL_CHARACTER':
    case 'EDGE_ERR_BAD_CONTENT_ENCODING':
      return 'malformed';
    case 'EDGE_ERR_UNKNOWN_TYPE':
      return 'unknown_type';
    case 'EDGE_ERR_TOO_LARGE':
    case 'EDGE_ERR_TOO_DEEP':
      return 'size';
    case 'EDGE_ERR_NUMBER_OUT_OF_RANGE':
      return 'range';
    case 'EDGE_ERR_FUTURE_TIMESTAMP':
      return 'future';
    default:
      return 'other';
  }
  if (/ is required( \(|$)/.test(reason)) return 'missing';
  if (/ is not an allowed field( \(|$)/.test(reason)) return 'unexpected_field';
  if (/ must be one of |must be equal to one of|must be equal to constant| must be "/.test(reason)) return 'enum';
  if (/must (NOT )?have (more|fewer) than |must NOT be (longer|shorter) than /.test(reason)) return 'size';
  if (/ must be [<>]=? -?\d| must be multiple of /.test(reason)) return 'range';
  if (/must match (format|pattern)|date-time|is not a valid date|epoch milliseconds/.test(reason)) return 'format';
  if (/ must be (number|integer|string|boolean|object|array|null)/.test(reason)) return 'type';
  return 'other';
}

/** The event type a dead letter was meant to be: its payload's `type`, else the type its source assumed. */
export function refusedEventType(letter: Pick<DeadLetterEntry, 'payload' | 'defaultType' | 'truncated'>): string {
  if (!letter.truncated) {
    try {
      const value = JSON.parse(Buffer.from(letter.payload).toString('utf8')) as unknown;
      if (value !== null && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string') return (value as { type: string }).type.slice(0, 64);
    } catch {
      // Not JSON (that is often why it was refused).
    }
  }
  return letter.defaultType ?? 'unknown';
}
