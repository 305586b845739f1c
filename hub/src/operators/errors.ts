/**
 * Error codes of the stream operators (fastify's FST_ERR_* style). They use the hub's HUB_ERR_ prefix so they can
 * move into hub/src/errors.ts unchanged.
 */
export const OperatorErrorCode = {
  /** A rule does not match the rule schema, or its values contradict each other (e.g. slide longer than size). */
  RULE_INVALID: 'HUB_ERR_RULE_INVALID',
  /** A snapshot belongs to another rule or operator kind, or to an unknown snapshot version. */
  SNAPSHOT_MISMATCH: 'HUB_ERR_SNAPSHOT_MISMATCH',
  /** Two accumulators or sketches of different kinds or precisions were merged. */
  MERGE_MISMATCH: 'HUB_ERR_MERGE_MISMATCH',
} as const;

export type OperatorErrorCode = (typeof OperatorErrorCode)[keyof typeof OperatorErrorCode];

export class OperatorError extends Error {
  constructor(
    readonly code: OperatorErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'OperatorError';
  }
}
