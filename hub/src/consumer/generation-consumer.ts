/**
 * The consumer of one EVENTS partition for one ownership ("generation") of it, shared by the analytics
 * (partition-processor.ts) and the recommendations (partition-feed.ts): a durable consumer
 * `<prefix>-p<N>-g<generation>` on `events.*.<N>` from the sequence after the state's position (AckAll), created
 * afresh, and the older generations deleted. A new consumer delivers at once, so a takeover waits for no ack
 * timeout, and EVENTS (interest retention) keeps every message after the position meanwhile: the older generation
 * never acked past it.
 *
 * Also: telling a compare-and-swap conflict on a KV key from other failures, which is how a state save notices that
 * another worker took the partition (the fence).
 */
import { AckPolicy, DeliverPolicy, ReplayPolicy, type ConsumerMessages, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from '../../../shared/logger.js';
import { EVENTS_STREAM } from '../../../shared/wire.js';
import { errorMessage } from '../errors.js';

export const generationConsumerName = (prefix: string, partition: number, generation: number): string => `${prefix}-p${partition}-g${generation}`;

export interface GenerationConsumerOptions {
  prefix: string;
  partition: number;
  generation: number;
  /** Stream sequence the state covers (0: none, deliver everything EVENTS holds). */
  coveredSeq: number;
  description: string;
  ackWaitMs: number;
  maxAckPending: number;
  inactiveThresholdMs: number;
  /** Messages buffered by the client. */
  maxMessages: number;
}

export async function openGenerationConsumer(js: JetStreamClient, jsm: JetStreamManager, o: GenerationConsumerOptions, log: Logger): Promise<ConsumerMessages> {
  const name = generationConsumerName(o.prefix, o.partition, o.generation);
  await jsm.consumers.delete(EVENTS_STREAM, name).catch(() => undefined); // a leftover of a crashed takeover
  await jsm.consumers.add(EVENTS_STREAM, {
    durable_name: name,
    description: o.description,
    filter_subject: `events.*.${o.partition}`,
    ack_policy: AckPolicy.All,
    ack_wait: nanos(o.ackWaitMs),
    max_ack_pending: o.maxAckPending,
    max_deliver: -1,
    inactive_threshold: nanos(o.inactiveThresholdMs),
    replay_policy: ReplayPolicy.Instant,
    ...(o.coveredSeq > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: o.coveredSeq + 1 } : { deliver_policy: DeliverPolicy.All }),
  });
  const older = `${o.prefix}-p${o.partition}-g`;
  for await (const info of jsm.consumers.list(EVENTS_STREAM)) {
    if (!info.name.startsWith(older) || info.name === name) continue;
    await jsm.consumers.delete(EVENTS_STREAM, info.name).catch((error: unknown) => {
      log.warn({ consumer: info.name, err: errorMessage(error) }, 'could not delete an older partition consumer');
    });
  }
  return (await js.consumers.get(EVENTS_STREAM, name)).consume({ max_messages: o.maxMessages });
}

/** A KV create/update refused because the key's revision moved on (another writer got there first). */
export function isRevisionConflict(error: unknown): boolean {
  return /wrong last sequence|key exists|10071/i.test((error as Error)?.message ?? '');
}
