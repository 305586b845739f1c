/**
 * A durable pull consumer on EVENTS, read with `consume()`. Several hub processes share the durable and JetStream
 * spreads the messages between them, so each message is acked on its own (explicit ack): AckAll would also ack
 * messages another process has not written yet.
 *
 * Bounded: the client asks for at most `pullMaxMessages` at a time, and it asks again only as the iterator is read
 * (nats.js queues the next pull behind the messages already received), so a worker that stops reading stops
 * pulling. On the server, `max_ack_pending` bounds the unacked messages over all processes.
 */
import { AckPolicy, DeliverPolicy, JetStreamApiError, ReplayPolicy } from '@nats-io/jetstream';
import type { ConsumerConfig, ConsumerInfo, ConsumerMessages, JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from '../../../shared/logger.js';
import { decodeBatch } from '../../../shared/wire.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import type { BatchSource, Inbound } from './consumer.js';

export interface DurableConsumerOptions {
  stream: string;
  durableName: string;
  ackWaitMs: number;
  maxAckPendingMessages: number;
}

/** JetStream API error codes used here (nats-server's errors.json). */
const CONSUMER_NOT_FOUND = 10014;
const CONSUMER_ALREADY_EXISTS = 10148;
const CONSUMER_NAME_EXISTS = 10013;

export function desiredConsumerConfig(options: DurableConsumerOptions): Partial<ConsumerConfig> {
  return {
    durable_name: options.durableName,
    description: 'hub: events to QuestDB; acked per message after the rows are durable',
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(options.ackWaitMs),
    max_ack_pending: options.maxAckPendingMessages,
    deliver_policy: DeliverPolicy.All,
    replay_policy: ReplayPolicy.Instant,
    max_deliver: -1,
  };
}

/** Creates the durable consumer, or updates ack_wait / max_ack_pending of an existing one. Idempotent. */
export async function ensureDurableConsumer(jsm: JetStreamManager, options: DurableConsumerOptions, log: Logger): Promise<ConsumerInfo> {
  const desired = desiredConsumerConfig(options);
  const { stream, durableName } = options;
  try {
    for (let attempt = 0; ; attempt++) {
      let info: ConsumerInfo;
      try {
        info = await jsm.consumers.info(stream, durableName);
      } catch (error) {
        if (!(error instanceof JetStreamApiError && error.code === CONSUMER_NOT_FOUND)) throw error;
        try {
          const created = await jsm.consumers.add(stream, desired);
          log.info({ stream, durable: durableName }, 'durable consumer created');
          return created;
        } catch (addError) {
          // Another hub process created it between our info and add: read it again.
          const raced = addError instanceof JetStreamApiError && [CONSUMER_ALREADY_EXISTS, CONSUMER_NAME_EXISTS].includes(addError.code);
          if (raced && attempt < 3) continue;
          throw addError;
        }
      }
      const current = info.config;
      if (current.ack_policy !== AckPolicy.Explicit) {
        throw new HubError(
          HubErrorCode.CONSUMER_INCOMPATIBLE,
          `consumer ${stream}/${durableName} has ack_policy ${current.ack_policy}, the hub needs explicit (it cannot be changed; delete the consumer)`,
        );
      }
      if (current.ack_wait === desired.ack_wait && current.max_ack_pending === desired.max_ack_pending) return info;
      const updated = await jsm.consumers.update(stream, durableName, {
        ack_wait: desired.ack_wait!,
        max_ack_pending: desired.max_ack_pending!,
      });
      log.info(
        { stream, durable: durableName, ackWaitMs: options.ackWaitMs, maxAckPending: options.maxAckPendingMessages },
        'durable consumer updated',
      );
      return updated;
    }
  } catch (error) {
    if (error instanceof HubError) throw error;
    throw new HubError(HubErrorCode.CONSUMER_SETUP, `cannot set up consumer ${stream}/${durableName}: ${errorMessage(error)}`, { cause: error });
  }
}

export interface JetStreamBatchSourceOptions {
  stream: string;
  durableName: string;
  pullMaxMessages: number;
  /**
   * How long one pull request stays open (nats.js default 30 s). A process that freezes (GC, SIGSTOP, a paused VM)
   * keeps its open request, and the server goes on delivering new and redelivered messages to it until it expires;
   * keeping it under the ack wait lets them reach the other workers after about one ack wait.
   */
  pullExpiresMs?: number;
  log: Logger;
  /** Called (at most every few seconds) when the server reports the consumer or stream missing; recreates them. */
  recover?: () => Promise<void>;
}

const RECOVER_INTERVAL_MS = 5000;

export class JetStreamBatchSource implements BatchSource {
  private messages: ConsumerMessages | undefined;
  private stopped = false;
  private lastRecover = 0;
  private wakeSleep: (() => void) | undefined;

  constructor(
    private readonly js: JetStreamClient,
    private readonly options: JetStreamBatchSourceOptions,
  ) {}

  async *[Symbol.asyncIterator](): AsyncIterator<Inbound> {
    const { stream, durableName, log } = this.options;
    // consume() recovers from disconnects and missing consumers by itself; this loop covers what makes it end
    // (a refused pull, a permissions error) and a consumer that does not exist yet at start.
    let failures = 0;
    while (!this.stopped) {
      let messages: ConsumerMessages;
      try {
        messages = await this.open();
      } catch (error) {
        failures++;
        log.warn({ stream, durable: durableName, err: errorMessage(error), attempt: failures }, 'consumer: cannot start consuming; retrying');
        this.recover();
        await this.sleep(Math.min(10_000, 500 * 2 ** Math.min(failures - 1, 5)));
        continue;
      }
      failures = 0;
      let ended: unknown;
      try {
        yield* this.read(messages);
      } catch (error) {
        ended = error;
      }
      if (!this.stopped) {
        log.warn({ stream, durable: durableName, err: ended === undefined ? undefined : errorMessage(ended) }, 'consumer: consume ended; restarting');
        await this.sleep(1000);
      }
    }
    log.info({ stream, durable: durableName }, 'consumer stopped');
  }

  private async open(): Promise<ConsumerMessages> {
    const consumer = await this.js.consumers.get(this.options.stream, this.options.durableName);
    const messages = await consumer.consume({
      max_messages: this.options.pullMaxMessages,
      ...(this.options.pullExpiresMs !== undefined ? { expires: this.options.pullExpiresMs } : {}),
    });
    this.messages = messages;
    void this.watch(messages);
    if (this.stopped) await messages.close();
    return messages;
  }

  private async *read(messages: ConsumerMessages): AsyncGenerator<Inbound> {
    for await (const message of messages) {
      const bytes = message.data.length;
      let batch;
      try {
        batch = decodeBatch(message.data);
      } catch (error) {
        // Poison: it would fail the same way on every redelivery, so it is terminated, not nak'ed.
        message.term(`undecodable: ${errorMessage(error)}`.slice(0, 200));
        yield { type: 'poison', bytes, seq: message.seq, subject: message.subject, error: errorMessage(error) };
        continue;
      }
      yield {
        type: 'batch',
        batch,
        bytes,
        seq: message.seq,
        redelivered: message.redelivered,
        pending: message.info.pending,
        ack: () => message.ack(),
        nak: (delayMs?: number) => message.nak(delayMs),
      };
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wakeSleep = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeSleep?.();
    await this.messages?.close();
  }

  private async watch(messages: ConsumerMessages): Promise<void> {
    const log = this.options.log;
    for await (const status of messages.status()) {
      switch (status.type) {
        case 'heartbeats_missed':
          log.warn({ count: status.count }, 'consumer: missed server heartbeats');
          break;
        case 'consumer_deleted':
        case 'consumer_not_found':
        case 'stream_not_found':
          log.warn({ status }, 'consumer: resource missing; recreating');
          // Once recreated, restart consume() at once: the old pull loop would only notice after missed heartbeats.
          this.recover(() => void messages.close());
          break;
        case 'exceeded_limits':
        case 'no_responders':
          log.warn({ status }, 'consumer: pull refused by the server');
          break;
        default:
          log.debug({ status }, 'consumer status');
      }
    }
  }

  private recover(then?: () => void): void {
    const now = Date.now();
    if (!this.options.recover || this.stopped || now - this.lastRecover < RECOVER_INTERVAL_MS) return;
    this.lastRecover = now;
    this.options.recover().then(then, (error: unknown) => this.options.log.error({ err: errorMessage(error) }, 'consumer: recreating failed'));
  }
}
