/**
 * Partition leases (hub/src/partitions/kv-lease-manager.ts) on the real 3-node cluster: hub workers, each with its
 * own NATS connection, split the 8 partitions, take over from a worker that stops or vanishes, and give up a share
 * to a worker that joins — and no partition is ever owned by two workers at once, neither as seen through owned()
 * (sampled every 25 ms) nor as seen by the handlers (onAcquire … onRelease intervals of different workers never
 * overlap). Each test uses its own bucket and deletes it.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { pino } from 'pino';
import { KvLeaseManager, type LeaseManagerOptions, type ReleaseReason } from '../../hub/src/partitions/index.js';
import { testStack } from '../support/env.js';

const stack = testStack();
const runId = Date.now().toString(36);
const log = pino({ level: process.env.LOG_LEVEL ?? 'error' });
const PARTITIONS = 8;

// Right after the stack starts, the first JetStream requests can time out while the cluster settles: wait until an
// R3 bucket can be created, so that the tests measure the leases and not the warm-up.
before(async () => {
  const nc = await connect({ servers: stack.natsUrls });
  const jsm = await jetstreamManager(nc);
  const deadline = performance.now() + 60_000;
  try {
    for (;;) {
      try {
        await jsm.streams.add({ name: `LEASE_WARMUP_${runId}`, subjects: [`lease-warmup.${runId}`], num_replicas: 3 });
        await jsm.streams.delete(`LEASE_WARMUP_${runId}`);
        return;
      } catch (error) {
        if (performance.now() > deadline) throw error;
        await delay(500);
      }
    }
  } finally {
    await nc.close();
  }
});

interface Worker {
  id: string;
  nc: NatsConnection;
  manager: KvLeaseManager;
  events: { partition: number; kind: 'acquire' | ReleaseReason }[];
}

/** One test's workers on one bucket, with the two ownership checks running all along. */
class Fleet {
  readonly workers: Worker[] = [];
  readonly violations: string[] = [];
  /** Partition → worker between its onAcquire start and its onRelease end. */
  private readonly handlerOwner = new Map<number, string>();
  private readonly sampler: NodeJS.Timeout;

  constructor(readonly bucket: string) {
    this.sampler = setInterval(() => this.sample(), 25);
  }

  async add(id: string, options: Partial<LeaseManagerOptions> = {}): Promise<Worker> {
    const nc = await connect({ servers: stack.natsUrls, name: `lease-test-${id}` });
    const events: Worker['events'] = [];
    const manager = new KvLeaseManager(
      nc,
      { workerId: id, partitions: PARTITIONS, bucket: this.bucket, ...options },
      {
        onAcquire: async (partition) => {
          const holder = this.handlerOwner.get(partition);
          if (holder !== undefined) this.violations.push(`onAcquire(${partition}) on ${id} while ${holder} holds it`);
          this.handlerOwner.set(partition, id);
          events.push({ partition, kind: 'acquire' });
          await delay(20); // a restore takes a moment
        },
        onRelease: async (partition, reason) => {
          await delay(20); // so does a snapshot
          if (this.handlerOwner.get(partition) === id) this.handlerOwner.delete(partition);
          events.push({ partition, kind: reason });
        },
      },
      log,
    );
    const worker = { id, nc, manager, events };
    this.workers.push(worker);
    await manager.start();
    return worker;
  }

  /** Partitions owned per worker (in `add` order). */
  counts(workers = this.workers): number[] {
    return workers.map((w) => w.manager.owned().length);
  }

  private sample(): void {
    const seen = new Map<number, string>();
    for (const w of this.workers) {
      for (const p of w.manager.owned()) {
        const other = seen.get(p);
        if (other !== undefined) this.violations.push(`partition ${p} owned by ${other} and ${w.id} at the same time`);
        seen.set(p, w.id);
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.sampler);
    for (const w of this.workers) {
      await w.manager.stop().catch(() => undefined);
      await w.nc.close().catch(() => undefined);
    }
    const nc = await connect({ servers: stack.natsUrls });
    try {
      await (await jetstreamManager(nc)).streams.delete(`KV_${this.bucket}`);
    } catch {
      // never created
    } finally {
      await nc.close();
    }
  }
}

test('two workers split 8 partitions 4/4, no partition owned twice', { timeout: 60_000 }, async () => {
  const fleet = new Fleet(`leases-split-${runId}`);
  try {
    const [a, b] = await Promise.all([fleet.add('split-a'), fleet.add('split-b')]);
    await waitUntil(() => sameCounts(fleet.counts(), [4, 4]), 15_000, () => `counts ${fleet.counts()}`);
    const all = [...a.manager.owned(), ...b.manager.owned()].sort((x, y) => x - y);
    assert.deepEqual(all, [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(a.manager.status().liveWorkers, ['split-a', 'split-b']);
    for (const p of a.manager.owned()) assert.ok((a.manager.token(p) ?? 0) > 0, 'an owned partition has a token');
    assert.equal(a.manager.token(b.manager.owned()[0]!), undefined, 'no token for a partition owned elsewhere');
    assert.deepEqual(fleet.violations, []);
  } finally {
    await fleet.close();
  }
});

test('when a worker stops, the other owns all 8 partitions within a few seconds', { timeout: 60_000 }, async () => {
  const fleet = new Fleet(`leases-stop-${runId}`);
  try {
    const a = await fleet.add('stop-a');
    const b = await fleet.add('stop-b');
    await waitUntil(() => sameCounts(fleet.counts(), [4, 4]), 15_000, () => `counts ${fleet.counts()}`);
    const tokensBefore = new Map(b.manager.owned().map((p) => [p, b.manager.token(p)!]));
    const t0 = performance.now();
    await b.manager.stop();
    const stopMs = performance.now() - t0;
    assert.deepEqual(b.manager.owned(), []);
    assert.equal(b.events.filter((e) => e.kind === 'stopping').length, 4, 'onRelease(stopping) for each of its partitions');
    await waitUntil(() => a.manager.owned().length === PARTITIONS, 10_000, () => `a owns ${a.manager.owned()}`);
    const takeoverMs = performance.now() - t0;
    console.log(`# graceful stop: stop() took ${stopMs.toFixed(0)} ms, takeover of all partitions ${takeoverMs.toFixed(0)} ms after stop() began`);
    assert.ok(takeoverMs < 6000, `takeover took ${takeoverMs} ms`);
    for (const [p, before] of tokensBefore) assert.ok(a.manager.token(p)! > before, `fencing token of ${p} grew`);
    assert.deepEqual(fleet.violations, []);
  } finally {
    await fleet.close();
  }
});

test('a third worker joins: partitions rebalance to 3/3/2, never owned twice', { timeout: 60_000 }, async () => {
  const fleet = new Fleet(`leases-join-${runId}`);
  try {
    await fleet.add('join-a');
    await fleet.add('join-b');
    await waitUntil(() => sameCounts(fleet.counts(), [4, 4]), 15_000, () => `counts ${fleet.counts()}`);
    const movesBefore = rebalanceCount(fleet);
    const t0 = performance.now();
    await fleet.add('join-c');
    await waitUntil(
      () => fleet.counts().reduce((x, y) => x + y, 0) === PARTITIONS && sameCounts(fleet.counts(), [3, 3, 2]),
      15_000,
      () => `counts ${fleet.counts()}`,
    );
    console.log(`# join: 3/3/2 reached ${(performance.now() - t0).toFixed(0)} ms after the third worker started`);
    // Stable: nothing moves any more.
    const settled = fleet.workers.map((w) => w.manager.owned());
    await delay(4500);
    assert.deepEqual(fleet.workers.map((w) => w.manager.owned()), settled, 'no flapping after the rebalance');
    assert.equal(rebalanceCount(fleet) - movesBefore, 2, 'exactly two partitions moved');
    assert.deepEqual(fleet.violations, []);
  } finally {
    await fleet.close();
  }
});

test('a worker that vanishes without stop() loses its partitions to the other within 30 s', { timeout: 90_000 }, async () => {
  const fleet = new Fleet(`leases-kill-${runId}`);
  const options = { leaseTtlMs: 5000 };
  try {
    const a = await fleet.add('kill-a', options);
    const b = await fleet.add('kill-b', options);
    await waitUntil(() => sameCounts(fleet.counts(), [4, 4]), 15_000, () => `counts ${fleet.counts()}`);
    const taken = b.manager.owned();
    // Like kill -9 as far as the bucket can tell: the connection goes, nothing is deleted.
    const t0 = performance.now();
    await b.nc.close();
    await waitUntil(() => a.manager.owned().length === PARTITIONS, 30_000, () => `a owns ${a.manager.owned()}`);
    const takeoverMs = performance.now() - t0;
    console.log(`# abrupt loss (leaseTtlMs 5000, rebalance 2000 ms): takeover of all partitions ${takeoverMs.toFixed(0)} ms after the connection closed`);
    assert.ok(takeoverMs < 30_000);
    assert.ok(takeoverMs >= 4000, `a lease was taken over before it could have expired (${takeoverMs} ms)`);
    // The cut-off worker noticed on its own (renewals failing) and stopped serving before the takeover.
    assert.deepEqual(b.manager.owned(), []);
    assert.deepEqual(b.events.filter((e) => e.kind === 'lost').map((e) => e.partition).sort(), [...taken].sort());
    assert.deepEqual(fleet.violations, []);
  } finally {
    await fleet.close();
  }
});

function rebalanceCount(fleet: Fleet): number {
  return fleet.workers.reduce((n, w) => n + w.events.filter((e) => e.kind === 'rebalance').length, 0);
}

function sameCounts(actual: number[], expected: number[]): boolean {
  return JSON.stringify([...actual].sort()) === JSON.stringify([...expected].sort());
}

async function waitUntil(check: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) assert.fail(`not reached within ${timeoutMs} ms: ${describe()}`);
    await delay(25);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
