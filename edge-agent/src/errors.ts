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
  /** A CSV record does not parse or does not fit the header row. */
  MALFORMED_CSV: 'EDGE_ERR_MALFORMED_CSV',
  /** A source's configuration does not fit what it finds at start (missing table or column, bad identifier). */
  SOURCE_CONFIG: 'EDGE_ERR_SOURCE_CONFIG',
  /** The payload exceeds the configured size limit. */
  TOO_LARGE: 'EDGE_ERR_TOO_LARGE',
  /** The payload (or an NDJSON line) is not valid UTF-8, or a JSON string escapes a lone surrogate (no UTF-8 form). */
  INVALID_UTF8: 'EDGE_ERR_INVALID_UTF8',
  /**
   * A JSON string contains U+0000. QuestDB refuses it in a SYMBOL (the whole ILP request fails, which would stall the
   * hub) and returns broken JSON from its REST API for a VARCHAR holding it.
   */
  NUL_CHARACTER: 'EDGE_ERR_NUL_CHARACTER',
  /** The event time is further ahead of the agent's clock than `validation.maxFutureMs`: a device clock gone wrong. */
  FUTURE_TIMESTAMP: 'EDGE_ERR_FUTURE_TIMESTAMP',
  /** JSON nests arrays/objects deeper than the source's `maxJsonDepth`. */
  TOO_DEEP: 'EDGE_ERR_TOO_DEEP',
  /** A JSON number overflows a 64-bit float (e.g. `1e400`, which JSON.parse turns into Infinity). */
  NUMBER_OUT_OF_RANGE: 'EDGE_ERR_NUMBER_OUT_OF_RANGE',
  /** Unknown MQTT user name or wrong password, or an unknown HTTP API key. */
  AUTH_FAILED: 'EDGE_ERR_AUTH_FAILED',
  /** An authenticated MQTT device published, subscribed or set a will outside its own topics. */
  NOT_AUTHORIZED: 'EDGE_ERR_NOT_AUTHORIZED',
  /** An MQTT client id is too long or belongs to another device. */
  CLIENT_ID_REJECTED: 'EDGE_ERR_CLIENT_ID_REJECTED',
  /** The MQTT broker already holds `maxConnections` connections. */
  TOO_MANY_CONNECTIONS: 'EDGE_ERR_TOO_MANY_CONNECTIONS',
  /** An MQTT topic or topic filter has more levels than `maxTopicLevels`. */
  TOPIC_TOO_DEEP: 'EDGE_ERR_TOPIC_TOO_DEEP',
  /** An HTTP body in a Content-Encoding other than gzip or identity (415), or gzip that does not decompress (400). */
  BAD_CONTENT_ENCODING: 'EDGE_ERR_BAD_CONTENT_ENCODING',
  /** An HTTP client exceeded its request or event rate. */
  RATE_LIMITED: 'EDGE_ERR_RATE_LIMITED',
  /** Too late for its pre-aggregation window, which was already emitted (aggregate-only mode). */
  LATE_EVENT: 'EDGE_ERR_LATE_EVENT',
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
