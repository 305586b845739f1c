import type { Logger } from '../../../shared/logger.js';
import { EdgeErrorCode } from '../errors.js';
import type { IngestItem, IngestPipeline } from '../ingest.js';

/**
 * A way events come in (MQTT, HTTP, files). A source hands what it receives to the ingest pipeline and
 * acknowledges its client only when the pipeline's promise resolved (the outbox commit).
 */
export interface Source {
  readonly name: string;
  start(): Promise<void>;
  /** Stops taking new input; in-progress submissions finish. */
  stop(): Promise<void>;
  /** Inputs refused before ingest (authentication, ACL, limits), by code; read by /metrics. */
  refusalCounts?(): Partial<Record<string, number>>;
}

export interface SourceDeps {
  ingest: IngestPipeline;
  log: Logger;
  /** The agent's data folder: sources that remember a position (file offsets, last row) keep it here. */
  dataDir?: string;
  /** The agent's id, to name per-agent state files and MQTT client ids. */
  agentId?: string;
}

export type SourceFactory<Config> = (config: Config, deps: SourceDeps) => Source;

/** Splits a payload into ingest items: a JSON array is one item per element, anything else one item. */
export function itemsFromJson(payload: Buffer): IngestItem[] {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch (error) {
    return [{ refused: { code: EdgeErrorCode.MALFORMED_JSON, reason: `payload is not valid JSON: ${(error as Error).message}` }, raw: payload }];
  }
  return Array.isArray(value) ? value.map((element) => ({ value: element })) : [{ value, raw: payload }];
}
