/**
 * The hub owns the JetStream streams: EVENTS (what edges publish) and DLQ (the dead letters edges forward, and the
 * events the hub itself could not write, see sinks/dead-letter-sink.ts). Both are created or brought up to date at
 * every start, so config changes (replicas, limits) roll out with the hub.
 *
 * EVENTS uses `discard: new`: a full stream refuses publishes instead of silently dropping old, unconsumed data; the
 * edge keeps the events in its outbox and retries. With the default `interest` retention, acked messages leave the
 * stream, so max_bytes bounds the backlog (the hub being behind), not the history (QuestDB holds that).
 */
import { DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { JetStreamManager, StreamConfig, StreamInfo } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from '../../shared/logger.js';
import { ALERTS_STREAM, ALERTS_SUBJECTS, DLQ_STREAM, DLQ_SUBJECTS, EVENTS_STREAM, EVENTS_SUBJECTS } from '../../shared/wire.js';
import type { HubConfig } from './config.js';
import { HubError, HubErrorCode, errorMessage } from './errors.js';

/** JetStream API error codes used here (nats-server's errors.json). */
const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;

export type StreamSpec = Pick<
  StreamConfig,
  'name' | 'subjects' | 'description' | 'storage' | 'retention' | 'discard' | 'num_replicas' | 'max_bytes' | 'max_age' | 'duplicate_window'
>;

export function streamSpecs(config: HubConfig['streams']): StreamSpec[] {
  return [
    {
      name: EVENTS_STREAM,
      subjects: [EVENTS_SUBJECTS],
      description: 'Event batches from edge agents (events.<agent>.<partition>), deduplicated by Nats-Msg-Id',
      storage: StorageType.File,
      retention: config.retention === 'interest' ? RetentionPolicy.Interest : RetentionPolicy.Limits,
      discard: DiscardPolicy.New,
      num_replicas: config.replicas,
      max_bytes: config.maxBytes,
      max_age: nanos(config.maxAgeMs),
      duplicate_window: nanos(config.duplicateWindowMs),
    },
    recordStream(
      config,
      DLQ_STREAM,
      DLQ_SUBJECTS,
      'Dead letters, msgpack: batches of events edge agents refused (dlq.<agent>, Nats-Msg-Id <agent>:dlq:<first>-<last>) and ' +
        'one record per event the hub could not write (dlq.hub.<reason>, Nats-Msg-Id hub.dlq:<event id>@<ts>)',
    ),
    recordStream(
      config,
      ALERTS_STREAM,
      ALERTS_SUBJECTS,
      'Alerts of the CEP rules, JSON, on alerts.<rule> (Nats-Msg-Id <rule>:<key>:<ts>: a replayed alert is dropped as a duplicate)',
    ),
  ];
}

/** A stream of records kept for people to read (dead letters, alerts): bounded by size and age, oldest go first. */
function recordStream(config: HubConfig['streams'], name: string, subject: string, description: string): StreamSpec {
  return {
    name,
    subjects: [subject],
    description,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    num_replicas: config.replicas,
    max_bytes: config.dlqMaxBytes,
    max_age: nanos(config.dlqMaxAgeMs),
    duplicate_window: nanos(config.duplicateWindowMs),
  };
}

/** Fields of `spec` whose value differs in `current`. */
export function streamDiff(spec: StreamSpec, current: Partial<StreamConfig>): string[] {
  const differ: string[] = [];
  for (const [key, want] of Object.entries(spec) as Array<[keyof StreamSpec, unknown]>) {
    if (key === 'name') continue;
    const have = current[key];
    const same = Array.isArray(want) ? JSON.stringify([...want].sort()) === JSON.stringify([...((have as unknown[]) ?? [])].sort()) : want === have;
    if (!same) differ.push(key);
  }
  return differ;
}

/** Creates each stream, or updates it when its config differs. Idempotent; safe with several hubs starting at once. */
export async function ensureStreams(jsm: JetStreamManager, specs: readonly StreamSpec[], log: Logger): Promise<StreamInfo[]> {
  const infos: StreamInfo[] = [];
  for (const spec of specs) infos.push(await ensureStream(jsm, spec, log));
  return infos;
}

async function ensureStream(jsm: JetStreamManager, spec: StreamSpec, log: Logger): Promise<StreamInfo> {
  try {
    for (let attempt = 0; ; attempt++) {
      let info: StreamInfo;
      try {
        info = await jsm.streams.info(spec.name);
      } catch (error) {
        if (!(error instanceof JetStreamApiError && error.code === STREAM_NOT_FOUND)) throw error;
        try {
          const created = await jsm.streams.add({ ...spec });
          log.info({ stream: spec.name, replicas: spec.num_replicas, retention: spec.retention }, 'stream created');
          return created;
        } catch (addError) {
          // "already in use": another hub created it meanwhile (possibly with another config); compare again.
          if (addError instanceof JetStreamApiError && addError.code === STREAM_NAME_IN_USE && attempt < 3) continue;
          throw addError;
        }
      }
      const differ = streamDiff(spec, info.config);
      if (differ.length === 0) return info;
      const { name, ...update } = spec;
      const updated = await jsm.streams.update(name, update);
      log.info({ stream: name, changed: differ }, 'stream updated');
      return updated;
    }
  } catch (error) {
    throw new HubError(HubErrorCode.STREAM_SETUP, `cannot create or update stream ${spec.name}: ${errorMessage(error)}`, { cause: error });
  }
}
