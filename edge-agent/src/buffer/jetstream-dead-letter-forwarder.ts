/**
 * Forwards dead letters to the hub's DLQ stream in batches: one msgpack message on `dlq.<agentId>` carries up to
 * `batchSize` dead letters (and at most `maxBatchBytes`), with the message id `<agent>:dlq:<first>-<last>`. One
 * JetStream publish per dead letter cost the agent and the three NATS nodes as much as the valid events beside
 * them; a batch costs one.
 *
 * The batch is claimed in the outbox file before it is sent (`dead_letter_claim`), and a retry sends exactly the
 * claimed range again, even after a restart: the same message id, so JetStream drops the copy of a batch whose
 * PubAck was lost. Dead letters are marked forwarded only after the PubAck; they stay in the local table for
 * inspection and redrive until the table's bound removes them (forwarded ones first).
 *
 * The same loop notices when another process (the edge-dlq CLI) committed to the outbox file, re-reads the
 * counters and wakes the publisher, so redriven events leave without waiting for the next ingest commit.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { Logger } from '../../../shared/logger.js';
import { deadLetterSubject } from '../../../shared/wire.js';
import { deadLetterMessageId, encodeDeadLetterBatch, type DeadLetterBatch, type DeadLetterEntry } from '../../../shared/dead-letter-records.js';
import type { DeadLetterStore, StoredDeadLetter } from './outbox.js';

export function toDeadLetterEntry(letter: StoredDeadLetter, maxPayloadBytes: number): DeadLetterEntry {
  const truncated = letter.payload.byteLength > maxPayloadBytes;
  return {
    id: letter.id,
    at: letter.at,
    source: letter.source,
    code: letter.code,
    reason: letter.reason,
    ...(letter.origin !== undefined ? { origin: letter.origin } : {}),
    ...(letter.defaultType !== undefined ? { defaultType: letter.defaultType } : {}),
    payload: truncated ? letter.payload.subarray(0, maxPayloadBytes) : letter.payload,
    bytes: letter.payload.byteLength,
    ...(truncated ? { truncated: true as const } : {}),
  };
}

/** Bytes a batch may hold beside its payloads, per dead letter (reason, origin, field names): a generous bound. */
const ENTRY_OVERHEAD_BYTES = 1024;

export interface DeadLetterForwarderOptions {
  agentId: string;
  /** Send dead letters to the hub; when false, the loop only watches for external changes. */
  forward: boolean;
  /** Most dead letters in one DLQ message. */
  batchSize: number;
  /** Most bytes of one DLQ message (below the server's max_payload); a single larger dead letter goes alone. */
  maxBatchBytes: number;
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
  /** DLQ messages (batches) acknowledged since start. */
  batches: number;
  /** Of the dead letters, how many came in batches JetStream reported as duplicates (stored before a lost PubAck). */
  duplicates: number;
  /** Failed publish attempts (retried with the same batch and message id). */
  errors: number;
}

export class DeadLetterForwarder {
  readonly stats: DeadLetterForwarderStats = { forwarded: 0, batches: 0, duplicates: 0, errors: 0 };
  private stopping = false;
  /** The last batch was cut by its bounds: more dead letters wait. */
  private moreWaiting = false;
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
   * One round: sends the claimed batch again if there is one (a retry), or claims and sends the next one. Marks its
   * dead letters forwarded after the PubAck and returns how many; throws the publish error (the claim stays).
   */
  async forwardOnce(): Promise<number> {
    const js = this.js;
    if (!js) return 0;
    const letters = this.nextBatch();
    if (letters.length === 0) return 0;
    const first = letters[0]!.id;
    const last = letters[letters.length - 1]!.id;
    const batch: DeadLetterBatch = { v: 2, agent: this.options.agentId, letters: letters.map((l) => toDeadLetterEntry(l, this.options.maxPayloadBytes)) };
    const ack = await js.publish(deadLetterSubject(this.options.agentId), encodeDeadLetterBatch(batch), {
      msgID: deadLetterMessageId(this.options.agentId, first, last),
      timeout: this.options.publishTimeoutMs,
    });
    if (ack.duplicate) this.stats.duplicates += letters.length;
    this.store.markForwarded(first, last);
    this.stats.forwarded += letters.length;
    this.stats.batches++;
    return letters.length;
  }

  /** The claimed range's dead letters, or a new claim: the oldest unforwarded, bounded by count and bytes. */
  private nextBatch(): StoredDeadLetter[] {
    const claim = this.store.deadLetterClaim();
    if (claim) {
      const claimed = this.store.unforwardedBetween(claim.first, claim.last);
      // Empty when the table's bound removed them all meanwhile; then claim anew.
      if (claimed.length > 0) {
        this.moreWaiting = true;
        return claimed;
      }
    }
    const letters = this.store.unforwarded(this.options.batchSize);
    let bytes = 0;
    let count = 0;
    for (const letter of letters) {
      bytes += Math.min(letter.payload.byteLength, this.options.maxPayloadBytes) + ENTRY_OVERHEAD_BYTES;
      if (count > 0 && bytes > this.options.maxBatchBytes) break;
      count++;
    }
    const batch = letters.slice(0, count);
    this.moreWaiting = count < letters.length || letters.length === this.options.batchSize;
    if (batch.length > 0) this.store.claimDeadLetters(batch[0]!.id, batch[batch.length - 1]!.id);
    return batch;
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
        this.log.warn({ err: (error as Error).message, retryInMs: delay }, 'dead-letter forwarding failed; will retry the same batch with the same message id');
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.options.retryMaxMs);
        continue;
      }
      // A full batch means more may wait: go on. Otherwise pause, so that a trickle travels in batches too.
      if (sent === 0 || !this.moreWaiting) await this.sleep(this.options.intervalMs);
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
