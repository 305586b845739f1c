/**
 * Exactly-once in state: every state object (a customer profile, an item's statistics) carries the ledger of the
 * events it has already applied, and applying an event found in it is a no-op. The ledger is bounded two ways:
 *
 * - `highWater`: per source (e.g. one JetStream partition), the highest position applied. The hub consumes a
 *   partition in order, so anything at or below the mark is a redelivery or a replay, however long ago it was
 *   first applied. Size = number of sources, which is small and fixed (the partition count).
 * - `recentIds`: the last N event ids, for events that come without a position (tests, simulators, HTTP imports),
 *   and as a second guard. Redeliveries arrive within seconds of the first delivery, so N of a few hundred covers them.
 *
 * Because the ledger lives inside the object it protects, the check and the change are one write of one key: the
 * store needs no transaction across keys, only a put (or compare-and-set where several writers share a key).
 *
 * Like the records that hold it, a ledger is changed in place by its owner (see customer-profile.ts).
 */

/** Where an event sits in an ordered source: `sequence` grows with every event of `source`. */
export interface EventPosition {
  source: string;
  sequence: number;
}

export interface AppliedEvents {
  /** Oldest first, at most the capacity given to `recordApplied`. */
  recentIds: string[];
  /** Highest applied position per source. */
  highWater: Record<string, number>;
}

export function emptyAppliedEvents(): AppliedEvents {
  return { recentIds: [], highWater: {} };
}

export function wasApplied(ledger: AppliedEvents, eventId: string, position?: EventPosition): boolean {
  if (position !== undefined) {
    const mark = ledger.highWater[position.source];
    if (mark !== undefined && position.sequence <= mark) return true;
  }
  return ledger.recentIds.includes(eventId);
}

/** Adds the event to the ledger (in place); the oldest ids drop out beyond `capacity`. */
export function recordApplied(ledger: AppliedEvents, eventId: string, position: EventPosition | undefined, capacity: number): void {
  ledger.recentIds.push(eventId);
  if (ledger.recentIds.length > capacity) ledger.recentIds.splice(0, ledger.recentIds.length - capacity);
  if (position !== undefined) ledger.highWater[position.source] = Math.max(position.sequence, ledger.highWater[position.source] ?? -Infinity);
}
