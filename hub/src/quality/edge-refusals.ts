/**
 * Validity needs the events that never became events: the ones an edge agent refused. Agents forward them to the
 * DLQ stream (`dlq.<agentId>`, see shared/dead-letter-records.ts); this durable consumer writes one row per refused
 * event into `edge_refusals` (source, event type, which kind of check failed, code, reason), so validity per source
 * and minute is events / (events + refusals) in SQL.
 *
 * Exactly once by construction: a row's upsert keys are (refusal time, agent, the agent's dead-letter id), so a
 * redelivery or a second hub writing the same letter overwrites the same row. Messages are acked only after
 * QuestDB confirmed their rows; a failed flush leaves them unacked and JetStream delivers them again after ack_wait.
 * Its buffer is bounded by the consumer's max_ack_pending (messages of up to `forwardBatch` letters each).
 *
 * Every hub runs it on the same durable consumer: JetStream hands each message to one of them.
 */
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { classifyRefusal, decodeDeadLetters, refusedEventType, type DeadLetterRecord } from '../../../shared/dead-letter-records.js';
import type { Logger } from '../../../shared/logger.js';
import { DLQ_STREAM } from '../../../shared/wire.js';
import { errorMessage } from '../errors.js';
import { EDGE_REFUSALS_TABLE, identity, type AnalyticsRow } from '../sinks/questdb-analytics-sink.js';

export const EDGE_REFUSALS_CONSUMER = 'hub-quality-edge-refusals';

/** Pure: the edge_refusals rows of dead letters (ts = when the agent refused each, in µs). */
export function refusalRows(letters: readonly DeadLetterRecord[], table = EDGE_REFUSALS_TABLE): AnalyticsRow[] {
  return letters.map((letter) => {
    const ts = Math.max(0, Math.floor(letter.at)) * 1000;
    return {
      table,
      ts,
      id: identity(table, ts, letter.agent, letter.id),
      symbols: [
        { name: 'source', value: letter.agent },
        { name: 'event_type', value: refusedEventType(letter) },
        { name: 'check', value: classifyRefusal(letter.code, letter.reason) },
        { name: 'code', value: letter.code },
        { name: 'ingest', value: letter.source },
      ],
      fields: [
        { name: 'letter_id', kind: 'long', value: letter.id },
        { name: 'reason', kind: 'string', value: letter.reason.slice(0, 500) },
      ],
    };
  });
}

export interface RefusalRowSink {
  writeRows(rows: readonly AnalyticsRow[]): void;
  flush(): Promise<void>;
}

export interface EdgeRefusalsOptions {
  /** Write and ack at least this often. @default 1000 */
  flushIntervalMs?: number;
  /** @default 30000 */
  ackWaitMs?: number;
  /** Messages delivered and not yet acked (each a batch of dead letters). @default 200 */
  maxAckPending?: number;
}

export class EdgeRefusalsConsumer {
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private held: JsMsg[] = [];
  private flushing: Promise<void> | undefined;
  readonly stats = { messages: 0, refusals: 0, flushes: 0, flushFailures: 0, undecodable: 0 };

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly sink: RefusalRowSink,
    private readonly log: Logger,
    private readonly options: EdgeRefusalsOptions = {},
  ) {}

  async start(): Promise<void> {
    const ackWaitMs = this.options.ackWaitMs ?? 30_000;
    const config = {
      durable_name: EDGE_REFUSALS_CONSUMER,
      description: 'hub data quality: refused events of the edge agents into edge_refusals (acked after QuestDB confirmed them)',
      // One token after dlq.: the agents' subjects (dlq.<agentId>), not the hub's own (dlq.hub.<reason>).
      filter_subject: 'dlq.*',
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(ackWaitMs),
      max_ack_pending: this.options.maxAckPending ?? 200,
      deliver_policy: DeliverPolicy.All,
      max_deliver: -1,
    };
    try {
      await this.jsm.consumers.info(DLQ_STREAM, EDGE_REFUSALS_CONSUMER);
      await this.jsm.consumers.update(DLQ_STREAM, EDGE_REFUSALS_CONSUMER, { description: config.description, ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
    } catch {
      await this.jsm.consumers.add(DLQ_STREAM, config).catch(async (error: unknown) => {
        // Another hub created it meanwhile.
        await this.jsm.consumers.info(DLQ_STREAM, EDGE_REFUSALS_CONSUMER).catch(() => Promise.reject(error));
      });
    }
    this.messages = await (await this.js.consumers.get(DLQ_STREAM, EDGE_REFUSALS_CONSUMER)).consume({ max_messages: 64 });
    this.loop = this.run().catch((error: unknown) => this.log.error({ err: errorMessage(error) }, 'edge refusals consumer stopped'));
    this.timer = setInterval(() => void this.flush(), this.options.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.messages?.stop();
    await this.loop;
    // A flush in flight took only what was held when it began: wait for it, then write and ack the rest.
    await this.flushing;
    await this.flush();
  }

  private async run(): Promise<void> {
    for await (const message of this.messages!) {
      this.stats.messages++;
      let letters: DeadLetterRecord[];
      try {
        letters = decodeDeadLetters(message.data);
      } catch (error) {
        this.stats.undecodable++;
        this.log.warn({ subject: message.subject, seq: message.seq, err: errorMessage(error) }, 'DLQ message that is no batch of dead letters: skipped by the quality counts');
        message.ack();
        continue;
      }
      this.sink.writeRows(refusalRows(letters));
      this.stats.refusals += letters.length;
      this.held.push(message);
    }
  }

  /** Writes what is buffered, then acks the messages it came from; on failure they stay unacked (redelivered). */
  private flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.held.length === 0) return Promise.resolve();
    const messages = this.held;
    this.held = [];
    this.flushing = this.sink
      .flush()
      .then(
        () => {
          for (const message of messages) message.ack();
          this.stats.flushes++;
        },
        (error: unknown) => {
          this.stats.flushFailures++;
          // Not acked: JetStream delivers them again after ack_wait; the rows stay buffered for the next flush too.
          this.log.warn({ messages: messages.length, err: errorMessage(error) }, 'edge refusals not written yet; their messages stay unacked');
        },
      )
      .finally(() => {
        this.flushing = undefined;
      });
    return this.flushing;
  }
}
