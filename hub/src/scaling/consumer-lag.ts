/**
 * The hub's consumer lag on EVENTS, as `hub scale` and KEDA read it: messages stored and not yet processed.
 * - raw path: the shared durable (`consumer.durableName`): undelivered + delivered and not yet acked. The acked
 *   count matters because every worker reads ahead up to `consumer.pullMaxMessages`: a slow worker's read-ahead is
 *   delivered but not done.
 * - analytics: the partition consumers (`<analytics.stateBucket>-p<N>-g<G>`), undelivered only: they ack at each
 *   checkpoint, so their acks lag by design.
 * One consumer-list request per sample, answered by the stream leader.
 */
import type { JetStreamManager } from '@nats-io/jetstream';

export interface ConsumerLagReading {
  raw: number;
  analytics: number;
  /** The larger of the two: the path that is behind decides. */
  lag: number;
}

export class ConsumerLag {
  constructor(
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    private readonly rawDurable: string | undefined,
    private readonly analyticsPrefix: string | undefined,
  ) {}

  async read(): Promise<ConsumerLagReading> {
    let raw = 0;
    let analytics = 0;
    for await (const consumer of this.jsm.consumers.list(this.stream)) {
      const name = consumer.name;
      if (name === this.rawDurable) raw = consumer.num_pending + consumer.num_ack_pending;
      else if (this.analyticsPrefix && name.startsWith(this.analyticsPrefix)) analytics += consumer.num_pending;
    }
    return { raw, analytics, lag: Math.max(raw, analytics) };
  }
}
