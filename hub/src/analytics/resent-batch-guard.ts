/**
 * Recognises a batch an edge agent sent again after the stream's duplicate window had passed.
 *
 * JetStream drops a repeated Nats-Msg-Id only within `duplicate_window` (2 minutes by default). An agent whose link
 * broke after the server stored a batch but before the PubAck came back holds that batch as unsent; if the link
 * stays down longer than the window, the retry is stored a second time, under a new stream sequence. The raw rows
 * do not care (QuestDB upserts by event id), but the rules would count those events twice.
 *
 * An agent's batches are cut from its outbox in ranges of sequence numbers [first, last] fixed before the first send
 * (see edge-agent/src/buffer/outbox-records.ts), and it retries the oldest unacknowledged range first. So a resent batch
 * always repeats one of the last few ranges the hub saw from that agent, at most `maxInFlightRanges` back (8 by
 * default). Remembering the last `perAgent` ranges of each agent in a partition, with the first event's id as a
 * check against an agent whose outbox was wiped and started counting again, finds every resend, in constant memory
 * per agent. It is part of the operator snapshot, so a resend after a takeover is found too.
 */
export type RangeKey = string;

/** Per agent: the most recent ranges, oldest first, as "first-last:firstEventId". */
export type ResentBatchGuardSnapshot = Record<string, RangeKey[]>;

export class ResentBatchGuard {
  private readonly recent = new Map<string, RangeKey[]>();

  /** `perAgent` must be larger than the agents' maxInFlightRanges. */
  constructor(private readonly perAgent = 32) {}

  /** True if this batch was seen before (skip it); otherwise remembers it and returns false. */
  seenBefore(agent: string, first: number, last: number, firstEventId: string | undefined): boolean {
    const key: RangeKey = `${first}-${last}:${firstEventId ?? ''}`;
    let ranges = this.recent.get(agent);
    if (!ranges) this.recent.set(agent, (ranges = []));
    if (ranges.includes(key)) return true;
    ranges.push(key);
    if (ranges.length > this.perAgent) ranges.shift();
    return false;
  }

  snapshot(): ResentBatchGuardSnapshot {
    return Object.fromEntries([...this.recent].map(([agent, ranges]) => [agent, [...ranges]]));
  }

  restore(snapshot: ResentBatchGuardSnapshot | undefined): void {
    this.recent.clear();
    for (const [agent, ranges] of Object.entries(snapshot ?? {})) this.recent.set(agent, ranges.slice(-this.perAgent));
  }
}
