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

