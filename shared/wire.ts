/**
 * The wire contract between edge agents and the hub: what one JetStream message carries, on which subject,
 * under which message id. Both sides import only this file, so the edge never depends on hub code.
 */
import { Packr, unpackMultiple } from 'msgpackr';

/** One accepted, validated event as it travels from the edge outbox to the hub. */
export interface WireEvent {
  /** Event id: the device's own `event_id`, or a content hash when it sent none (see deriveEventId). */
  id: string;
  /** Event type, e.g. `device.telemetry`. Picks the schema and the QuestDB table. */
  type: string;
  /** Schema version the event was validated against. */
  sv: number;
  /** Partition key (device id or user id), from the schema's `x-partition-key`. */
  key: string;
  /** Event time, epoch microseconds. */
  ts: number;
  /** Time the edge agent accepted the event, epoch microseconds. */
  its: number;
  /** Source kind that received it (`mqtt`, `http`, `file`). */
  src: string;
  /** The event as received and validated. */
  body: Record<string, unknown>;
}

/** One JetStream message: a batch of events of one partition, cut from a contiguous outbox range. */
export interface EventBatch {
  /** Wire format version. */
  v: 1;
  /** Id of the edge agent that published it. */
  agent: string;
  /** Partition of every event in the batch. */
  partition: number;
  /** First and last outbox sequence of the range this batch was cut from (the whole range, all partitions). */
  first: number;
  last: number;
  events: WireEvent[];
}

// One shared Packr: records=false keeps the encoding self-describing, so a hub of another build can read it.
const packr = new Packr({ useRecords: false, moreTypes: false });

/**
 * A batch on the wire is a msgpack sequence: the header map, then one map per event. The edge stores each event
 * already encoded, so it builds a batch by concatenation, without decoding and re-encoding any event.
 */
export type BatchHeader = Omit<EventBatch, 'events'>;

export function encodeBatchFromEncoded(header: BatchHeader, encodedEvents: Uint8Array[]): Uint8Array {
  return Buffer.concat([packr.pack(header), ...encodedEvents]);
}

export function encodeBatch(batch: EventBatch): Uint8Array {
  const { events, ...header } = batch;
  return encodeBatchFromEncoded(header, events.map((event) => packr.pack(event)));
}

export function decodeBatch(data: Uint8Array): EventBatch {
  const values = unpackMultiple(data as Buffer) as unknown[];
  const header = values[0] as BatchHeader | undefined;
  if (header === null || typeof header !== 'object' || header.v !== 1) {
    throw new Error('not an event batch of wire version 1');
  }
  return { ...header, events: values.slice(1) as WireEvent[] };
}

export function encodeEvent(event: WireEvent): Uint8Array {
  return packr.pack(event);
}

export function decodeEvent(data: Uint8Array): WireEvent {
  return packr.unpack(data) as WireEvent;
}

/** Subjects. `events.<agent>.<partition>`: an edge may be permitted to publish only under its own agent id. */
export const EVENTS_STREAM = 'EVENTS';
export const EVENTS_SUBJECTS = 'events.>';
export const DLQ_STREAM = 'DLQ';
export const DLQ_SUBJECTS = 'dlq.>';
/** Alerts of the hub's CEP rules, JSON, on `alerts.<rule>` (Nats-Msg-Id `<rule>:<key>:<ts>`, so replays dedupe). */
export const ALERTS_STREAM = 'ALERTS';
export const ALERTS_SUBJECTS = 'alerts.>';

export function eventSubject(agentId: string, partition: number): string {
  return `events.${agentId}.${partition}`;
}

export function deadLetterSubject(agentId: string): string {
  return `dlq.${agentId}`;
}

/**
 * Deterministic JetStream message id (`Nats-Msg-Id`) for the part of outbox range [first, last] that falls in
 * `partition`. A retry, even after an agent restart, re-cuts the same range the same way and so sends the same id.
 */
export function batchMessageId(agentId: string, first: number, last: number, partition: number): string {
  return `${agentId}:${first}-${last}:${partition}`;
}

/** FNV-1a, 32 bit: stable across processes and platforms, cheap per event. */
export function partitionOf(key: string, partitions: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % partitions;
}

/** Agent ids appear in subjects and QuestDB symbols, so they are restricted to a safe alphabet. */
/** Core NATS (not stored): each agent's status every few seconds, for the hub's dashboard and silence alerts. */
export const AGENT_STATUS_SUBJECTS = 'status.>';

export function agentStatusSubject(agentId: string): string {
  return `status.${agentId}`;
}

/** What an agent reports on `status.<agentId>` (JSON). Counters are totals since the agent started. */
export interface AgentStatus {
  agent: string;
  /** Epoch ms when the agent sent it. */
  at: number;
  /** Epoch ms when the agent process started (counters restart with it). */
  startedAt: number;
  accepted: number;
  refused: number;
  /** Events acknowledged by JetStream (published). */
  published: number;
  outbox: { rows: number; bytes: number; maxBytes: number; oldestAgeMs: number | null };
  deadLetters: { rows: number; unforwarded: number };
  hubConnected: boolean;
  /** The agent process: CPU seconds (user + system) since start, resident memory. */
  process: { cpuSeconds: number; rssBytes: number };
}

export const AGENT_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';
