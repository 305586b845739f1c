/** Error codes of the hub, in one place (fastify's FST_ERR_* style). */
export const HubErrorCode = {
  /** A config value is inconsistent with another (the schema itself is checked by shared/config.ts). */
  CONFIG_INVALID: 'HUB_ERR_CONFIG_INVALID',
  /** Two schema versions (or two types sharing a table) disagree on a column, or a column shadows a standard one. */
  SCHEMA_CONFLICT: 'HUB_ERR_SCHEMA_CONFLICT',
  /** QuestDB refused a DDL statement, or an existing table does not match what the schemas need. */
  TABLE_SETUP: 'HUB_ERR_TABLE_SETUP',
  /** QuestDB could not be reached, timed out, or answered with a server error (transient: retried). */
  QUESTDB_UNAVAILABLE: 'HUB_ERR_QUESTDB_UNAVAILABLE',
  /** QuestDB refused an SQL statement (not retried). */
  QUESTDB_REFUSED: 'HUB_ERR_QUESTDB_REFUSED',
  /** Creating or updating a JetStream stream failed. */
  STREAM_SETUP: 'HUB_ERR_STREAM_SETUP',
  /** Creating or updating the durable consumer failed. */
  CONSUMER_SETUP: 'HUB_ERR_CONSUMER_SETUP',
  /** The durable consumer exists with settings the hub cannot change (e.g. its ack policy). */
  CONSUMER_INCOMPATIBLE: 'HUB_ERR_CONSUMER_INCOMPATIBLE',
  /** A flush to the sink failed; the rows are kept and the flush is retried. */
  FLUSH_FAILED: 'HUB_ERR_FLUSH_FAILED',
  /** A JetStream message is not a wire-version-1 event batch (poison message; it is terminated). */
  UNDECODABLE_MESSAGE: 'HUB_ERR_UNDECODABLE_MESSAGE',
  /** An event's type/version has no schema in the hub's catalogue nor in the schema registry (dead-lettered). */
  UNKNOWN_SCHEMA: 'HUB_ERR_UNKNOWN_SCHEMA',
  /**
   * A schema version is refused: incompatible with the version before it, or its QuestDB mapping conflicts with
   * the tables (logged at start; its events are dead-lettered while running).
   */
  SCHEMA_INCOMPATIBLE: 'HUB_ERR_SCHEMA_INCOMPATIBLE',
  /** Reading the schema registry or preparing the table of a new version failed (transient: the message is redelivered). */
  SCHEMA_LOOKUP_FAILED: 'HUB_ERR_SCHEMA_LOOKUP_FAILED',
  /** The DLQ stream did not confirm a dead letter (the message is not acked, so it is redelivered). */
  DEAD_LETTER_FAILED: 'HUB_ERR_DEAD_LETTER_FAILED',
  /** An event lacks a usable id or timestamp, so it cannot become a row. */
  INVALID_EVENT: 'HUB_ERR_INVALID_EVENT',
  /** An event came after its window rule's allowed lateness (or behind a CEP rule's watermark): side output to the DLQ. */
  LATE_EVENT: 'HUB_ERR_LATE_EVENT',
  /** Another worker took over a partition (its snapshot revision moved): this one stops processing it. */
  PARTITION_FENCED: 'HUB_ERR_PARTITION_FENCED',
} as const;

export type HubErrorCode = (typeof HubErrorCode)[keyof typeof HubErrorCode];

export class HubError extends Error {
  constructor(
    readonly code: HubErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HubError';
  }
}

/** Errors a retry cannot fix: start-up gives up on them instead of retrying. */
export function isPermanent(error: unknown): boolean {
  if (!(error instanceof HubError)) return false;
  const permanent: readonly HubErrorCode[] = [
    HubErrorCode.CONFIG_INVALID,
    HubErrorCode.SCHEMA_CONFLICT,
    HubErrorCode.TABLE_SETUP,
    HubErrorCode.QUESTDB_REFUSED,
    HubErrorCode.CONSUMER_INCOMPATIBLE,
  ];
  return permanent.includes(error.code);
}

/** The message of an unknown thrown value, for logs and status. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
