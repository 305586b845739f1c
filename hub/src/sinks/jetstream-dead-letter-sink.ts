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

  constructor(
    private readonly js: Pick<JetStreamClient, 'publish'>,
    private readonly options: JetStreamDeadLetterSinkOptions,
  ) {}

  /**
   * `maxInFlight` publishers take the letters in order from a shared index, so thousands of letters (an agent that
   * drains hours of late data) cost neither a promise nor a queue entry each before their turn.
   */
  async publish(letters: readonly DeadLetter[]): Promise<void> {
    let next = 0;
    let failed = 0;
    let firstFailure: unknown;
    const publisher = async () => {
      while (next < letters.length) {
        const letter = letters[next++]!;
        try {
          await this.publishOne(letter);
        } catch (error) {
          if (failed++ === 0) firstFailure = error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.maxInFlight, letters.length) }, publisher));
    if (failed > 0) {
      throw new HubError(
        HubErrorCode.DEAD_LETTER_FAILED,
        `${failed} of ${letters.length} dead letters not confirmed by the ${DLQ_STREAM} stream: ${errorMessage(firstFailure)}`,
        { cause: firstFailure },
      );
    }
  }

  private async publishOne(letter: DeadLetter): Promise<void> {
    const record = toDeadLetterRecord(letter, this.options.hubName, this.options.clock.now());
    const ack = await this.js.publish(hubDeadLetterSubject(letter.reason), encodeHubDeadLetter(record), {
      msgID: deadLetterMessageId(letter),
      // Fails instead of landing in another stream if the subject were ever captured by one.
      expect: { streamName: DLQ_STREAM },
      timeout: this.options.publishTimeoutMs,
    });
    this.stats.published++;
    if (ack.duplicate) this.stats.duplicates++;
  }
}
