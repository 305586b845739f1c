/** Sends outbox ranges to the hub. A range is accepted (deleted from the outbox) only after the hub's ack. */
export interface Publisher<Connection = unknown> {
  /** Starts forwarding over a connection to the hub. */
  start(connection: Connection): void;
  /** New rows were committed: wake up if idle. */
  notify(): void;
  /** Stops claiming new ranges and waits (up to `timeoutMs`) for in-flight ones to be acknowledged. */
  stop(timeoutMs: number): Promise<void>;
  readonly stats: PublisherStats;
}

export interface PublisherStats {
  /** Events acknowledged by the hub. */
  eventsPublished: number;
  /** Messages the hub reported as duplicates (a retry of something it already stored). */
  duplicateMessages: number;
  messagesPublished: number;
  publishErrors: number;
  rangesInFlight: number;
  /** Time from claim to PubAck of the last range, ms. */
  lastRangeLatencyMs: number;
  connected: boolean;
}
