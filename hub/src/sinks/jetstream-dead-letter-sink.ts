/**
 * Publishes the hub's dead letters into the DLQ stream (`dlq.hub.<reason>`, msgpack, see dead-letter-sink.ts) and
 * resolves only once JetStream confirmed each one. At most `maxInFlight` publishes wait for their PubAck at a time.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { DLQ_STREAM } from '../../../shared/wire.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import type { Clock } from '../hub-worker.js';
import {
  deadLetterMessageId,
  encodeHubDeadLetter,
  hubDeadLetterSubject,
  toDeadLetterRecord,
  type DeadLetter,
  type DeadLetterSink,
} from './dead-letter-sink.js';

export interface JetStreamDeadLetterSinkOptions {
  /** Written into every record: which hub dead-lettered the event. */
  hubName: string;
  /** How long to wait for one PubAck. */
  publishTimeoutMs: number;
  /** Publishes waiting for their PubAck at once. */
  maxInFlight: number;
  clock: Clock;
}

export interface DeadLetterSinkStats {
  /** Records the stream confirmed. */
  published: number;
  /** Of those, how many the stream already had (same Nats-Msg-Id within its duplicate window). */
  duplicates: number;
}

export class JetStreamDeadLetterSink implements DeadLetterSink {
  readonly stats: DeadLetterSinkStats = { published: 0, duplicates: 0 };
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly js: Pick<JetStreamClient, 'publish'>,
    private readonly options: JetStreamDeadLetterSinkOptions,
  ) {}

  async publish(letters: readonly DeadLetter[]): Promise<void> {
    const results = await Promise.allSettled(letters.map((letter) => this.publishOne(letter)));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0) {
      throw new HubError(
        HubErrorCode.DEAD_LETTER_FAILED,
        `${failed.length} of ${letters.length} dead letters not confirmed by the ${DLQ_STREAM} stream: ${errorMessage(failed[0]!.reason)}`,
        { cause: failed[0]!.reason },
      );
    }
  }

  private async publishOne(letter: DeadLetter): Promise<void> {
    await this.slot();
    try {
      const record = toDeadLetterRecord(letter, this.options.hubName, this.options.clock.now());
      const ack = await this.js.publish(hubDeadLetterSubject(letter.reason), encodeHubDeadLetter(record), {
        msgID: deadLetterMessageId(letter),
        // Fails instead of landing in another stream if the subject were ever captured by one.
        expect: { streamName: DLQ_STREAM },
        timeout: this.options.publishTimeoutMs,
      });
      this.stats.published++;
      if (ack.duplicate) this.stats.duplicates++;
    } finally {
      this.release();
    }
  }

  private async slot(): Promise<void> {
    while (this.inFlight >= this.options.maxInFlight) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inFlight++;
  }

  private release(): void {
    this.inFlight--;
    this.waiting.shift()?.();
  }
}
