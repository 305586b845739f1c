/**
 * What happens to the events of a batch the sink could not write, so that no event is acked without being in
 * QuestDB or in the DLQ stream:
 *
 * - an event of a type/version the hub does not map: the version is looked up in the schema registry (learned and
 *   mapped if it is there and acceptable), then the event is written like any other; if the registry has no such
 *   version, or the hub refuses it, the event is dead-lettered (`unknown_schema`, `schema_incompatible`);
 * - an event that cannot become a row (no id, no usable time, not an object): dead-lettered (`invalid_event`).
 *
 * `settle()` resolves once the rewritten events are in the sink's buffer and the DLQ stream confirmed every dead
 * letter; the worker then acks the message after the next flush. It rejects when the registry could not be read or
 * the DLQ did not confirm: the worker gives the message back (nak) and a redelivery tries again; dead letters
 * already stored are not stored twice (same Nats-Msg-Id).
 */
import type { EventBatch } from '../../shared/wire.js';
import type { DeadLetter, DeadLetterReason, DeadLetterSink } from './sinks/dead-letter-sink.js';
import type { SkippedEvent, WriteResult } from './sinks/sink.js';
import type { Resolution, SchemaResolver } from './schema-resolver.js';

export interface UnmappedInput {
  batch: EventBatch;
  /** EVENTS stream sequence of the message (in the dead letters). */
  seq: number;
  skipped: readonly SkippedEvent[];
  /** Position of each skipped event in `batch.events`; found by id when the sink did not say. */
  skippedAt?: readonly number[] | undefined;
}

export interface UnmappedOutcome {
  /** Events written into the sink after their version was learned. */
  written: number;
  /** Dead letters the DLQ stream confirmed. */
  deadLettered: readonly DeadLetter[];
}

/** Thrown when the message was given back while its events were being settled. */
export class SettleAborted extends Error {
  constructor() {
    super('message given back while its unmapped events were settled');
    this.name = 'SettleAborted';
  }
}

export class UnmappedEvents {
  constructor(
    private readonly resolver: SchemaResolver,
    private readonly deadLetters: DeadLetterSink,
  ) {}

  /**
   * Settles the skipped events of one message. `write` puts a batch of events whose version is now mapped into the
   * sink (the worker's write, with its accounting). Nothing is written or published once `signal` aborted.
   */
  async settle(input: UnmappedInput, write: (batch: EventBatch) => WriteResult, signal?: AbortSignal): Promise<UnmappedOutcome> {
    const { batch } = input;
    const positions = input.skippedAt && input.skippedAt.length === input.skipped.length ? input.skippedAt : locateSkipped(batch, input.skipped);
    const letters: DeadLetter[] = [];
    const letter = (reason: DeadLetterReason, detail: string, index: number): DeadLetter => ({
      reason,
      detail,
      agent: batch.agent,
      partition: batch.partition,
      seq: input.seq,
      index,
      event: batch.events[index],
    });

    // Unknown versions: one lookup per (type, version), all at once.
    const lookups = new Map<string, Promise<Resolution>>();
    const waiting: Array<{ index: number; key: string }> = [];
    input.skipped.forEach((skip, i) => {
      const index = positions[i]!;
      if (skip.type === 'invalid_event') {
        letters.push(letter('invalid_event', skip.reason, index));
        return;
      }
      const event = batch.events[index] as { type?: unknown; sv?: unknown } | undefined;
      const type = event?.type;
      const version = event?.sv;
      if (typeof type !== 'string' || typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
        letters.push(letter('unknown_schema', `event names no usable type and schema version (type=${String(type)}, sv=${String(version)})`, index));
        return;
      }
      const key = `${type}\u0000${version}`;
      if (!lookups.has(key)) lookups.set(key, this.resolver.resolve(type, version));
      waiting.push({ index, key });
    });
    const resolved = new Map<string, Resolution>();
    await Promise.all([...lookups].map(async ([key, lookup]) => resolved.set(key, await lookup)));
    if (signal?.aborted) throw new SettleAborted();

    const rewrite: number[] = [];
    for (const { index, key } of waiting) {
      const resolution = resolved.get(key)!;
      if (resolution.status === 'mapped') rewrite.push(index);
      else letters.push(letter(resolution.status === 'unknown' ? 'unknown_schema' : 'schema_incompatible', resolution.reason, index));
    }
    let written = 0;
    if (rewrite.length > 0) {
      rewrite.sort((a, b) => a - b);
      const sub: EventBatch = { ...batch, events: rewrite.map((index) => batch.events[index]!) };
      const result = write(sub);
      written = result.rows;
      const at = result.skippedAt && result.skippedAt.length === result.skipped.length ? result.skippedAt : locateSkipped(sub, result.skipped);
      result.skipped.forEach((skip, i) => {
        const index = rewrite[at[i]!]!;
        // Only an invalid event can fail now (its version is mapped); anything else is still not lost.
        if (skip.type === 'invalid_event') letters.push(letter('invalid_event', skip.reason, index));
        else letters.push(letter('unknown_schema', `${skip.eventType} v${skip.version} was learned but is not mapped`, index));
      });
    }
    if (letters.length > 0) {
      if (signal?.aborted) throw new SettleAborted();
      await this.deadLetters.publish(letters);
    }
    return { written, deadLettered: letters };
  }
}

/**
 * Positions of the skipped events when the sink did not report them: the skipped list is in batch order, so each is
 * the next event with its id (and type/version for an unknown version; a non-object for an id-less invalid one).
 */
export function locateSkipped(batch: EventBatch, skipped: readonly SkippedEvent[]): number[] {
  const positions: number[] = [];
  let cursor = 0;
  for (const skip of skipped) {
    let found = -1;
    for (let i = cursor; i < batch.events.length; i++) {
      const event = batch.events[i] as unknown as Record<string, unknown> | null;
      const isObject = event !== null && typeof event === 'object';
      const matches =
        skip.type === 'unknown_schema'
          ? isObject && String(event.id) === skip.id && String(event.type) === skip.eventType && Number(event.sv) === skip.version
          : skip.id === ''
            ? !isObject || typeof event.id !== 'string' || event.id === ''
            : isObject && String(event.id) === skip.id;
      if (matches) {
        found = i;
        break;
      }
    }
    // Not found (a sink reporting something odd): take the next position, so every skip still becomes a dead letter.
    const index = found >= 0 ? found : Math.min(cursor, batch.events.length - 1);
    positions.push(index);
    cursor = index + 1;
  }
  return positions;
}
