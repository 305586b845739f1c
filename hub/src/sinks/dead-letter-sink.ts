/**
 * Where the hub puts the events it cannot write to QuestDB: the DLQ stream, one msgpack record per event on
 * `dlq.hub.<reason>`. Agents' own dead letters use `dlq.<agentId>` (one token after `dlq.`), so a consumer
 * filtering `dlq.hub.>` sees only the hub's, whatever the agents are called.
 *
 * A message is acked only after every event of it is in QuestDB or in the DLQ: `publish()` resolves once the stream
 * confirmed (PubAck) every record. A redelivered message publishes its dead letters again under the same
 * `Nats-Msg-Id` (derived from the event's identity), so within the stream's duplicate window JetStream keeps one.
 */
import { createHash } from 'node:crypto';
import { Packr } from 'msgpackr';
import { HubErrorCode } from '../errors.js';

/** Why the hub dead-lettered an event (the `reason` label of `hub_events_dead_lettered_total`). */
export type DeadLetterReason = 'unknown_schema' | 'schema_incompatible' | 'invalid_event' | 'late_event';

export const DEAD_LETTER_CODES: Readonly<Record<DeadLetterReason, HubErrorCode>> = {
  unknown_schema: HubErrorCode.UNKNOWN_SCHEMA,
  schema_incompatible: HubErrorCode.SCHEMA_INCOMPATIBLE,
  invalid_event: HubErrorCode.INVALID_EVENT,
  late_event: HubErrorCode.LATE_EVENT,
};

/** One event the hub could not write, with where it came from. */
export interface DeadLetter {
  reason: DeadLetterReason;
  /** One sentence: `no schema app.click v3 in the registry bucket "schemas"`. */
  detail: string;
  /** Agent and partition of the batch, and the EVENTS stream sequence of its message. */
  agent: string;
  partition: number;
  seq: number;
  /** Position of the event in its batch. */
  index: number;
  /** The event as it came in the batch (normally a WireEvent; whatever it was when it is invalid). */
  event: unknown;
  /** For late events: the rules it was too late for (sorted). */
  rules?: string[];
}

/** What one hub DLQ message carries (msgpack). */
export interface HubDeadLetterRecord {
  v: 1;
  /** Tells hub records from the agents' records (which have `agent`, `id`, `payload`) in the same stream. */
  origin: 'hub';
  /** Name of the hub process that dead-lettered it (its NATS connection name). */
  hub: string;
  /** Epoch ms. */
  at: number;
  code: HubErrorCode;
  reason: DeadLetterReason;
  detail: string;
  agent: string;
  partition: number;
  seq: number;
  index: number;
  /** The event's id, type and schema version when it has them (for filtering without decoding `event`). */
  eventId?: string;
  eventType?: string;
  version?: number;
  /** For late events: the rules it was too late for. */
  rules?: string[];
  event: unknown;
}

export interface DeadLetterSink {
  /** Resolves once the DLQ stream confirmed every letter; rejects if any was not confirmed (retry them all). */
  publish(letters: readonly DeadLetter[]): Promise<void>;
}

export const HUB_DEAD_LETTER_PREFIX = 'dlq.hub';

export function hubDeadLetterSubject(reason: DeadLetterReason): string {
  return `${HUB_DEAD_LETTER_PREFIX}.${reason}`;
}

const SAFE_ID = /^[\x21-\x7e]{1,200}$/;

/**
 * `Nats-Msg-Id` of a dead-lettered event: from its id and event time, the identity QuestDB dedups rows on, so the
 * same event dead-lettered again (a redelivery, another hub process) is stored once. The prefix `hub.dlq:` contains a
 * dot, which agent ids cannot, so it never meets an agent's `<agent>:dlq:<n>`. An event without a usable id gets the
 * position of its message in the stream instead, which a redelivery repeats too.
 */
export function deadLetterMessageId(letter: Pick<DeadLetter, 'event' | 'seq' | 'index' | 'rules'>): string {
  const event = letter.event as { id?: unknown; ts?: unknown } | null;
  const id = event !== null && typeof event === 'object' && typeof event.id === 'string' && event.id !== '' ? event.id : undefined;
  const scope = letter.rules === undefined ? '' : `late:${letter.rules.join('+')}:`;
  if (id === undefined) return `hub.dlq:${scope}seq:${letter.seq}:${letter.index}`;
  const identity = `${scope}${id}@${String(event!.ts)}`;
  return SAFE_ID.test(identity) ? `hub.dlq:${identity}` : `hub.dlq:sha256:${createHash('sha256').update(identity).digest('hex')}`;
}

export function toDeadLetterRecord(letter: DeadLetter, hub: string, at: number): HubDeadLetterRecord {
  const event = letter.event as { id?: unknown; type?: unknown; sv?: unknown } | null;
  const fields = event !== null && typeof event === 'object' ? event : {};
  return {
    v: 1,
    origin: 'hub',
    hub,
    at,
    code: DEAD_LETTER_CODES[letter.reason],
    reason: letter.reason,
    detail: letter.detail,
    agent: letter.agent,
    partition: letter.partition,
    seq: letter.seq,
    index: letter.index,
    ...(typeof fields.id === 'string' ? { eventId: fields.id } : {}),
    ...(typeof fields.type === 'string' ? { eventType: fields.type } : {}),
    ...(typeof fields.sv === 'number' ? { version: fields.sv } : {}),
    ...(letter.rules ? { rules: letter.rules } : {}),
    event: letter.event,
  };
}

// Like the wire format: records=false keeps the encoding self-describing for any reader.
const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeHubDeadLetter(record: HubDeadLetterRecord): Uint8Array {
  return packr.pack(record);
}

export function decodeHubDeadLetter(data: Uint8Array): HubDeadLetterRecord {
  const record = packr.unpack(data) as HubDeadLetterRecord;
  if (record === null || typeof record !== 'object' || record.v !== 1 || record.origin !== 'hub') {
    throw new Error('not a hub dead-letter record of version 1');
  }
  return record;
}
