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
