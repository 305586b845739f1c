/** Error and rejection codes of the edge agent, in one place (fastify's FST_ERR_* style). */
export const EdgeErrorCode = {
  /** The payload is not parseable JSON (or an NDJSON line is not). */
  MALFORMED_JSON: 'EDGE_ERR_MALFORMED_JSON',
  /** The event is not a JSON object. */
  NOT_AN_OBJECT: 'EDGE_ERR_NOT_AN_OBJECT',
  /** No schema is registered for the event's type (or type/version). */
  UNKNOWN_TYPE: 'EDGE_ERR_UNKNOWN_TYPE',
  /** The event does not match its JSON Schema. */
  SCHEMA_INVALID: 'EDGE_ERR_SCHEMA_INVALID',
  /** The event names another device than the MQTT topic it came on. */
  TOPIC_MISMATCH: 'EDGE_ERR_TOPIC_MISMATCH',
  /** No MQTT route (topic pattern) matches the topic. */
  NO_ROUTE: 'EDGE_ERR_NO_ROUTE',
  /** The payload exceeds the configured size limit. */
  TOO_LARGE: 'EDGE_ERR_TOO_LARGE',
  /** The outbox is full and its policy is `reject`. */
  OUTBOX_FULL: 'EDGE_ERR_OUTBOX_FULL',
  /** The agent is shutting down and takes no new events. */
  SHUTTING_DOWN: 'EDGE_ERR_SHUTTING_DOWN',
} as const;

export type EdgeErrorCode = (typeof EdgeErrorCode)[keyof typeof EdgeErrorCode];

export class EdgeError extends Error {
  constructor(
    readonly code: EdgeErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'EdgeError';
  }
}

export class OutboxFullError extends EdgeError {
  constructor(
    readonly bytes: number,
    readonly maxBytes: number,
  ) {
    super(EdgeErrorCode.OUTBOX_FULL, `outbox is full (${bytes} of ${maxBytes} bytes); retry later`);
  }
}
