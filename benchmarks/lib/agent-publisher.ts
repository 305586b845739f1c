/** Publishing into EVENTS the way an edge agent does, for benchmarks and tests that feed the hub without an agent. */
import type { JetStreamClient } from '@nats-io/jetstream';
import { encodeBatch, eventSubject, partitionOf, type WireEvent } from '../../shared/wire.js';

/**
 * A publisher of one agent id: one msgpack batch per partition (at most `perBatch` events), deterministic message
 * ids (agent, batch sequence, partition) and 64 publishes in flight. With `attempts` > 1, a publish that failed (a
 * PubAck timeout on a loaded machine) is sent again with the same id, as the agent resends: JetStream's duplicate
 * window drops it if the first one was stored.
 */
export function agentPublisher(
  js: JetStreamClient,
  options: {
    agentId: string;
    partitions: number;
    perBatch: number;
    /** Default: EVENTS' `events.<agent>.<partition>`. */
    subject?: (partition: number) => string;
    /** Tries per message. Default 1. */
    attempts?: number;
  },
): (events: WireEvent[]) => Promise<void> {
  const { agentId, partitions, perBatch } = options;
  const subjectOf = options.subject ?? ((partition: number) => eventSubject(agentId, partition));
  const attempts = options.attempts ?? 1;
  const send = async (subject: string, data: Uint8Array, msgID: string): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        await js.publish(subject, data, { msgID });
        return;
      } catch (error) {
        if (attempt >= attempts) throw error;
      }
    }
  };
  let batchSeq = 0;
  return async (events) => {
    const byPartition = new Map<number, WireEvent[]>();
    for (const event of events) {
      const p = partitionOf(event.key, partitions);
      let list = byPartition.get(p);
      if (!list) byPartition.set(p, (list = []));
      list.push(event);
    }
    const pending: Promise<unknown>[] = [];
    for (const [partition, list] of byPartition) {
      for (let i = 0; i < list.length; i += perBatch) {
        const first = ++batchSeq;
        const data = encodeBatch({ v: 1, agent: agentId, partition, first, last: first, events: list.slice(i, i + perBatch) });
        pending.push(send(subjectOf(partition), data, `${agentId}:${first}:${partition}`));
        if (pending.length >= 64) await Promise.all(pending.splice(0));
      }
    }
    await Promise.all(pending);
  };
}
