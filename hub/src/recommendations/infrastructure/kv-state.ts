/**
 * Where the recommendations' state lives: two NATS KV buckets (JetStream, 3 replicas, history 1), values msgpack.
 *
 *   recs-profiles   c.<customer>                one customer's profile; written only by the owner of the customer's
 *                                               partition (app events are partitioned by user_id)
 *   recs-items      i.<product>.p<N>            partition N's share of a product's statistics (popularity,
 *                                               co-occurrence neighbours, ratings)
 *                   b.<category>.p<N>           partition N's share of a category board
 *
 * Item statistics are sharded by partition so that every key has exactly one writer, the partition's owner: no
 * compare-and-set races between workers, and each shard's applied-events ledger needs one high-water mark. Readers
 * merge the shards (read-model.ts): popularity, engagements and ratings add up, neighbour weights add up per
 * neighbour, boards add up per item.
 *
 * Ids become key tokens as they are when they are plain (letters, digits, `_`, `-`), else `=` + base64url of the id.
 */
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { Packr } from 'msgpackr';
import type { Logger } from '../../../../shared/logger.js';

export const RECS_BUCKETS = { profiles: 'recs-profiles', items: 'recs-items', checkpoints: 'recs-checkpoints', leases: 'recs-leases', catalogue: 'recs-catalogue' } as const;

const PLAIN = /^[A-Za-z0-9_-]{1,200}$/;
const packr = new Packr({ useRecords: false, moreTypes: false });

export function keyToken(id: string): string {
  return PLAIN.test(id) ? id : `=${Buffer.from(id, 'utf8').toString('base64url')}`;
}

export function idOfToken(token: string): string {
  return token.startsWith('=') ? Buffer.from(token.slice(1), 'base64url').toString('utf8') : token;
}

export const profileKey = (customerId: string): string => `c.${keyToken(customerId)}`;
export const itemShardKey = (productId: string, partition: number): string => `i.${keyToken(productId)}.p${partition}`;
export const boardShardKey = (category: string, partition: number): string => `b.${category === '*' ? 'all' : keyToken(category)}.p${partition}`;

/** What a key of recs-items names, or undefined for a key of another shape. */
export function parseItemsKey(key: string): { kind: 'item' | 'board'; id: string; partition: number } | undefined {
  const m = /^([ib])\.([^.]+)\.p(\d+)$/.exec(key);
  if (!m) return undefined;
  const kind = m[1] === 'i' ? 'item' : 'board';
  const id = kind === 'board' && m[2] === 'all' ? '*' : idOfToken(m[2]!);
  return { kind, id, partition: Number(m[3]) };
}

export function parseProfileKey(key: string): string | undefined {
  return key.startsWith('c.') ? idOfToken(key.slice(2)) : undefined;
}

export function encodeValue(value: unknown): Uint8Array {
  return packr.pack(value);
}

export function decodeValue<T>(data: Uint8Array): T {
  return packr.unpack(data) as T;
}

export async function openRecsBucket(nc: NatsConnection, bucket: string, replicas: number): Promise<KV> {
  return new Kvm(nc).create(bucket, { replicas, history: 1 });
}

/** Messages per atomic batch: the server's limit (nats-server 2.12+). */
const ATOMIC_BATCH_LIMIT = 1000;

/**
 * Allows atomic batch publishing on a bucket's stream (`allow_atomic`, nats-server 2.12 or later), so that a flush
 * can write its keys in batches (see putMany). False, logged, when the server refuses: puts then go one by one.
 */
export async function enableAtomicBatches(jsm: JetStreamManager, bucket: string, log: Logger): Promise<boolean> {
  const stream = `KV_${bucket}`;
  try {
    const info = await jsm.streams.info(stream);
    if (info.config.allow_atomic === true) return true;
    const updated = await jsm.streams.update(stream, { allow_atomic: true });
    return updated.config.allow_atomic === true;
  } catch (error) {
    log.warn({ stream, err: String(error) }, 'recommendations: atomic batches unavailable on the bucket (nats-server before 2.12?); each key is put on its own');
    return false;
  }
}

/**
 * Puts many keys of one bucket. With atomic batches, each 1000 keys are one batch: the first and the last message
 * are requests (the server acks the first, and the commit once every message of the batch is stored), the ones
 * between are plain publishes; the server stores the whole batch or none of it. Two round trips per thousand keys
 * instead of one per key, and the per-request work of the client (a reply subscription, a timer, an ack to parse)
 * was most of the hub's CPU per event. Batches go one after the other: the server allows 50 in flight per stream.
 */
export async function putMany(target: { js: JetStreamClient; kv: KV; bucket: string; atomic: boolean }, entries: ReadonlyArray<readonly [string, Uint8Array]>): Promise<void> {
  if (!target.atomic) {
    for (let i = 0; i < entries.length; i += 512) await Promise.all(entries.slice(i, i + 512).map(([key, value]) => target.kv.put(key, value)));
    return;
  }
  const subject = (key: string) => `$KV.${target.bucket}.${key}`;
  for (let i = 0; i < entries.length; i += ATOMIC_BATCH_LIMIT) {
    const chunk = entries.slice(i, i + ATOMIC_BATCH_LIMIT);
    const [firstKey, firstValue] = chunk[0]!;
    if (chunk.length === 1) {
      await target.js.publish(subject(firstKey), firstValue);
      continue;
    }
    const batch = await target.js.startBatch(subject(firstKey), firstValue);
    for (let j = 1; j < chunk.length - 1; j++) batch.add(subject(chunk[j]![0]), chunk[j]![1]);
    const [lastKey, lastValue] = chunk[chunk.length - 1]!;
    await batch.commit(subject(lastKey), lastValue);
  }
}

/** Keys per batch direct get (a request names every subject it asks for). */
const MULTI_GET_KEYS = 256;

/**
 * Reads many keys of one bucket with batch direct gets (nats-server 2.11+, `multi_last`): one request per 256 keys,
 * the server streams back the last message of each key that has one. A key absent from the answer, or whose last
 * message is a delete or purge marker, maps to undefined. Cold keys one request each were what limited a partition
 * taken over with a backlog.
 */
export async function getMany(jsm: JetStreamManager, bucket: string, keys: readonly string[]): Promise<Map<string, Uint8Array | undefined>> {
  const prefix = `$KV.${bucket}.`;
  const found = new Map<string, Uint8Array | undefined>(keys.map((key) => [key, undefined]));
  const chunks: string[][] = [];
  for (let i = 0; i < keys.length; i += MULTI_GET_KEYS) chunks.push(keys.slice(i, i + MULTI_GET_KEYS).map((key) => prefix + key));
  await Promise.all(
    chunks.map(async (subjects) => {
      const messages = await jsm.direct.getLastMessagesFor(`KV_${bucket}`, { multi_last: subjects, batch: subjects.length });
      for await (const message of messages) {
        const operation = message.header?.get('KV-Operation');
        if (!operation && message.data.length > 0) found.set(message.subject.slice(prefix.length), message.data);
      }
    }),
  );
  return found;
}

/**
 * Reads keys from the stream leader (STREAM.MSG.GET, one request per key): what the previous owner of a partition
 * wrote just before a takeover is there once acknowledged, while a direct get may be answered by a replica a few
 * milliseconds behind. Slower than getMany, so only for the first seconds of an ownership.
 */
export async function getManyFromLeader(jsm: JetStreamManager, bucket: string, keys: readonly string[]): Promise<Map<string, Uint8Array | undefined>> {
  const prefix = `$KV.${bucket}.`;
  const found = new Map<string, Uint8Array | undefined>();
  for (let i = 0; i < keys.length; i += 256) {
    await Promise.all(
      keys.slice(i, i + 256).map(async (key) => {
        const message = await jsm.streams.getMessage(`KV_${bucket}`, { last_by_subj: prefix + key });
        const deleted = !message || message.header?.get('KV-Operation') || message.data.length === 0;
        found.set(key, deleted ? undefined : message.data);
      }),
    );
  }
  return found;
}

/**
 * Every current value of the keys matching `keyFilters` (KV wildcards, e.g. `i.*.p3`), read in one pass by an
 * ordered consumer on the bucket's stream (last message per subject; from the stream leader, so nothing older than
 * what was acknowledged). Deleted and purged keys are left out.
 */
export async function loadMatching(js: JetStreamClient, bucket: string, keyFilters: readonly string[]): Promise<Map<string, Uint8Array>> {
  const prefix = `$KV.${bucket}.`;
  const found = new Map<string, Uint8Array>();
  const consumer = await js.consumers.get(`KV_${bucket}`, { filter_subjects: keyFilters.map((k) => prefix + k), deliver_policy: DeliverPolicy.LastPerSubject });
  if ((await consumer.info(true)).num_pending === 0) return found;
  const messages = await consumer.consume();
  for await (const message of messages) {
    const key = message.subject.slice(prefix.length);
    if (message.headers?.get('KV-Operation') || message.data.length === 0) found.delete(key);
    else found.set(key, message.data);
    if (message.info.pending === 0) break;
  }
  messages.stop();
  return found;
}

/**
 * Watches every key of `kv` (current values first, then each change) into `apply`, and resolves once the current
 * values are in, so that a reader started with it answers from a complete copy. An entry `apply` cannot read is
 * logged and skipped. Returns the function that stops the watch.
 */
export async function watchBucket(kv: KV, apply: (entry: KvWatchEntry) => void, log: Logger): Promise<() => void> {
  const iterator = await kv.watch();
  let loaded!: () => void;
  const initial = new Promise<void>((resolve) => (loaded = resolve));
  void (async () => {
    for await (const entry of iterator) {
      try {
        apply(entry);
      } catch (error) {
        log.warn({ bucket: entry.bucket, key: entry.key, err: String(error) }, 'unreadable KV value skipped');
      }
      if (entry.delta === 0) loaded();
    }
  })();
  // An empty bucket has no current values to count down.
  if ((await kv.status()).values === 0) loaded();
  await initial;
  return () => iterator.stop();
}
