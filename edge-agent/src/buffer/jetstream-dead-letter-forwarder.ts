/**
 * Forwards dead letters to the hub's DLQ stream, one message per dead letter on `dlq.<agentId>` (msgpack), with the
 * message id `<agent>:dlq:<id>`: a retry after a lost PubAck, even after a restart, repeats the id and JetStream
 * drops the copy. A dead letter is marked forwarded only after its PubAck; it stays in the local table for
 * inspection and redrive until the table's bound removes it (forwarded ones first).
 *
 * The same loop notices when another process (the edge-dlq CLI) committed to the outbox file, re-reads the
 * counters and wakes the publisher, so redriven events leave without waiting for the next ingest commit.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { Packr } from 'msgpackr';
import type { Logger } from '../../../shared/logger.js';
import { deadLetterSubject } from '../../../shared/wire.js';
import type { DeadLetterStore, StoredDeadLetter } from './outbox.js';

/** What one DLQ message carries. Payloads over the forwarder's limit are cut (`truncated`); the agent keeps them whole. */
export interface DeadLetterRecord {
  v: 1;
  agent: string;
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

const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeDeadLetter(record: DeadLetterRecord): Uint8Array {
  return packr.pack(record);
}

export function decodeDeadLetter(data: Uint8Array): DeadLetterRecord {
  const record = packr.unpack(data) as DeadLetterRecord;
  if (record === null || typeof record !== 'object' || record.v !== 1) throw new Error('not a dead-letter record of version 1');
  return record;
}

export function deadLetterMessageId(agentId: string, id: number): string {
  return `${agentId}:dlq:${id}`;
}

export function toDeadLetterRecord(agentId: string, letter: StoredDeadLetter, maxPayloadBytes: number): DeadLetterRecord {
  const truncated = letter.payload.byteLength > maxPayloadBytes;
  return {
    v: 1,
    agent: agentId,
    id: letter.id,
    at: letter.at,
    source: letter.source,
    code: letter.code,
    reason: letter.reason,
    ...(letter.origin !== undefined ? { origin: letter.origin } : {}),
    payload: truncated ? letter.payload.subarray(0, maxPayloadBytes) : letter.payload,
    bytes: letter.payload.byteLength,
    ...(truncated ? { truncated: true as const } : {}),
  };
}

export interface DeadLetterForwarderOptions {
  agentId: string;
  /** Send dead letters to the hub; when false, the loop only watches for external changes. */
  forward: boolean;
  /** Dead letters published per round (concurrently). */
  batchSize: number;
  /** Pause between rounds when there was nothing (more) to send. */
  intervalMs: number;
  /** Largest payload sent; longer ones are cut and marked `truncated`. */
  maxPayloadBytes: number;
  publishTimeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
}

export interface DeadLetterForwarderStats {
  /** Dead letters acknowledged by the DLQ stream since start. */
  forwarded: number;
  /** Of those, how many JetStream reported as duplicates (already stored before a restart). */
  duplicates: number;
  /** Failed publish attempts (retried with the same message ids). */
  errors: number;
}

export class DeadLetterForwarder {
  readonly stats: DeadLetterForwarderStats = { forwarded: 0, duplicates: 0, errors: 0 };
  private stopping = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private js: Pick<JetStreamClient, 'publish'> | undefined;

  constructor(
    private readonly store: DeadLetterStore,
    private readonly options: DeadLetterForwarderOptions,
    private readonly log: Logger,
    /** Called when another process changed the outbox file (e.g. a redrive added events). */
    private readonly onExternalChange: () => void = () => undefined,
  ) {}

  /** Starts the loop; dead letters are forwarded once `connect` gave it the hub (the agent may start offline). */
  start(): void {
    this.loop = this.run().catch((error: unknown) => this.log.error({ err: error }, 'dead-letter forwarder stopped'));
  }

  connect(js: Pick<JetStreamClient, 'publish'>): void {
    this.js = js;
    this.wake?.();
  }

  /** Stops after the round in flight (waiting at most timeoutMs; what is not acknowledged stays unforwarded). */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await Promise.race([this.loop, new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref())]);
  }

  /**
   * One round: publishes up to batchSize unforwarded dead letters and marks those with a PubAck. Returns how many
   * were marked; throws the first publish error after marking the others.
   */
  async forwardOnce(): Promise<number> {
    const js = this.js;
    if (!js) return 0;
    const letters = this.store.unforwarded(this.options.batchSize);
    if (letters.length === 0) return 0;
    const subject = deadLetterSubject(this.options.agentId);
    const results = await Promise.allSettled(
      letters.map(async (letter) => {
        const ack = await js.publish(subject, encodeDeadLetter(toDeadLetterRecord(this.options.agentId, letter, this.options.maxPayloadBytes)), {
          msgID: deadLetterMessageId(this.options.agentId, letter.id),
          timeout: this.options.publishTimeoutMs,
        });
        if (ack.duplicate) this.stats.duplicates++;
        return letter.id;
      }),
    );
    const acked = results.filter((r): r is PromiseFulfilledResult<number> => r.status === 'fulfilled').map((r) => r.value);
    this.store.markForwarded(acked);
    this.stats.forwarded += acked.length;
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    return acked.length;
  }

  private async run(): Promise<void> {
    let delay = this.options.retryInitialMs;
    while (!this.stopping) {
      if (this.store.syncExternalChanges()) this.onExternalChange();
      if (!this.options.forward || !this.js) {
        await this.sleep(this.options.intervalMs);
        continue;
      }
      let sent: number;
      try {
        sent = await this.forwardOnce();
        delay = this.options.retryInitialMs;
      } catch (error) {
        this.stats.errors++;
        this.log.warn({ err: (error as Error).message, retryInMs: delay }, 'dead-letter forwarding failed; will retry with the same message ids');
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.options.retryMaxMs);
        continue;
      }
      if (sent < this.options.batchSize) await this.sleep(this.options.intervalMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      timer.unref();
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}
