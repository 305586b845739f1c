/**
 * Operator snapshots in NATS KV: a snapshot larger than one chunk round-trips, a stale owner's save is fenced, and
 * the pieces of a replaced snapshot are removed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { KvSnapshotStore, type PartitionState } from '../../hub/src/analytics/kv-snapshot-store.js';
import { HubErrorCode } from '../../hub/src/errors.js';
import { testStack } from '../support/env.js';

const stack = testStack();
const bucket = `snapshots-${Date.now().toString(36)}`;
let nc: NatsConnection;

before(async () => {
  nc = await connect({ servers: stack.natsUrls });
});
after(async () => {
  await (await new Kvm(nc).open(bucket)).destroy().catch(() => undefined);
  await nc.close();
});

function state(generation: number, keys: number): PartitionState {
  // Random-looking values so deflate cannot shrink it below one chunk.
  const windows = Array.from({ length: keys }, (_, i) => ({ key: `device-${i}`, sum: Math.sin(i * generation) * 1e6, n: i }));
  return {
    generation,
    owner: `w${generation}`,
    savedAt: 1000 * generation,
    operators: { v: 1, streamSeq: 4242 + generation, watermark: { partitions: [], combined: null }, operators: { r: { ruleHash: 'h', snapshot: { v: 1, kind: 'window', rule: 'r', watermark: null, counters: {} as never, state: windows } } } },
  };
}

test('a snapshot larger than a chunk round-trips, and a save on a stale revision is fenced', async () => {
  const store = new KvSnapshotStore(nc, { bucket, replicas: 3, chunkBytes: 4096 });
  const first = state(1, 5000);
  const revision = await store.save(3, first, 0);
  const kv = await new Kvm(nc).open(bucket);
  const pieces = async () => {
    const keys: string[] = [];
    for await (const key of await kv.keys('p3.>')) keys.push(key);
    return keys;
  };
  assert.ok((await pieces()).length > 1, 'stored in several pieces');

  const other = new KvSnapshotStore(nc, { bucket, replicas: 3, chunkBytes: 4096 });
  const loaded = await other.load(3);
  assert.deepEqual(loaded.state, first);
  assert.equal(loaded.revision, revision);

  // The new owner saves; the old one, still holding the old revision, is fenced off.
  await other.save(3, state(2, 5000), loaded.revision);
  await assert.rejects(store.save(3, state(1, 10), revision), (error: { code?: string }) => error.code === HubErrorCode.PARTITION_FENCED);
  assert.deepEqual((await other.load(3)).state, state(2, 5000));
  // Only the new snapshot's pieces are left (the fenced save removed its own, the swap removed the old ones).
  const left = await pieces();
  assert.ok(left.every((k) => k.startsWith('p3.')) && left.length > 0);
  const [saveIds] = [new Set(left.map((k) => k.split('.')[1]))];
  assert.equal(saveIds.size, 1, `pieces of one save only: ${[...saveIds].join(', ')}`);
});
