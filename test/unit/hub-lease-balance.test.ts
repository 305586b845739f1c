/** The share decision of the partition lease manager (planLeases): which leases a worker takes and gives back. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leaseQuotas, planLeases, type LeasePlan, type LeasePlanInput } from '../../hub/src/partitions/index.js';

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

interface Row {
  name: string;
  input: LeasePlanInput;
  expected: LeasePlan;
}

const rows: Row[] = [
  {
    name: 'a lone worker takes every free partition',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a'], owned: [], free: range(0, 8) },
    expected: { quota: 8, acquire: range(0, 8), release: [] },
  },
  {
    name: 'a worker missing from the heartbeats counts itself',
    input: { partitions: 8, workerId: 'b', liveWorkers: ['a'], owned: [], free: range(0, 8) },
    expected: { quota: 4, acquire: [4, 5, 6, 7], release: [] },
  },
  {
    name: 'two new workers start at different offsets: the first at 0',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b'], owned: [], free: range(0, 8) },
    expected: { quota: 4, acquire: [0, 1, 2, 3], release: [] },
  },
  {
    name: 'two new workers start at different offsets: the second at P/2',
    input: { partitions: 8, workerId: 'b', liveWorkers: ['b', 'a'], owned: [], free: range(0, 8) },
    expected: { quota: 4, acquire: [4, 5, 6, 7], release: [] },
  },
  {
    name: 'a worker with everything gives back its highest partitions when a second one appears',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b'], owned: range(0, 8), free: [] },
    expected: { quota: 4, acquire: [], release: [7, 6, 5, 4] },
  },
  {
    name: 'three workers: the first two in id order get the ceiling',
    input: { partitions: 8, workerId: 'b', liveWorkers: ['c', 'a', 'b'], owned: [0, 1, 2, 3], free: [] },
    expected: { quota: 3, acquire: [], release: [3] },
  },
  {
    name: 'three workers: the last gets the floor and gives back down to it',
    input: { partitions: 8, workerId: 'c', liveWorkers: ['a', 'b', 'c'], owned: [2, 5, 7], free: [] },
    expected: { quota: 2, acquire: [], release: [7] },
  },
  {
    name: 'the search for free leases wraps around from the worker offset',
    input: { partitions: 8, workerId: 'c', liveWorkers: ['a', 'b', 'c'], owned: [], free: [0, 1, 6] },
    expected: { quota: 2, acquire: [6, 0], release: [] },
  },
  {
    name: 'under quota with too few free: takes all of them',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b'], owned: [0], free: [5] },
    expected: { quota: 4, acquire: [5], release: [] },
  },
  {
    name: 'at quota nothing moves, even with a partition just freed',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b', 'c'], owned: [0, 1, 2], free: [7] },
    expected: { quota: 3, acquire: [], release: [] },
  },
  {
    name: 'at quota, a partition free for long is taken beyond quota, one per tick',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b', 'c'], owned: [0, 1, 2], free: [6, 7], longFree: [6, 7] },
    expected: { quota: 3, acquire: [6], release: [] },
  },
  {
    name: 'under quota, one long-free partition more than the quota asks for is added',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b'], owned: [0, 1, 2], free: [3, 4, 5], longFree: [4, 5] },
    expected: { quota: 4, acquire: [3, 4], release: [] },
  },
  {
    name: 'an extra lease taken while long free is kept within the allowance',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b', 'c'], owned: [0, 1, 2, 6], free: [], allowance: 1 },
    expected: { quota: 3, acquire: [], release: [] },
  },
  {
    name: 'without allowance (membership changed) the extra lease is given back',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b', 'c'], owned: [0, 1, 2, 6], free: [], allowance: 0 },
    expected: { quota: 3, acquire: [], release: [6] },
  },
  {
    name: 'over quota plus allowance gives back only the excess over both',
    input: { partitions: 8, workerId: 'a', liveWorkers: ['a', 'b', 'c', 'd'], owned: [0, 1, 2, 3, 4], free: [], allowance: 1 },
    expected: { quota: 2, acquire: [], release: [4, 3] },
  },
  {
    name: 'five workers on eight partitions: no worker is left idle',
    input: { partitions: 8, workerId: 'e', liveWorkers: ['a', 'b', 'c', 'd', 'e'], owned: [], free: [7] },
    expected: { quota: 1, acquire: [7], release: [] },
  },
  {
    name: 'more workers than partitions: the last ones get nothing and take nothing',
    input: { partitions: 2, workerId: 'c', liveWorkers: ['a', 'b', 'c'], owned: [], free: [0, 1] },
    expected: { quota: 0, acquire: [], release: [] },
  },
  {
    name: 'duplicates, owned and out-of-range partitions in the free list are ignored',
    input: { partitions: 4, workerId: 'a', liveWorkers: ['a'], owned: [1], free: [3, 3, 1, 9, -1, 2] },
    expected: { quota: 4, acquire: [2, 3], release: [] },
  },
];

for (const row of rows) {
  test(row.name, () => {
    assert.deepEqual(planLeases(row.input), row.expected);
  });
}

test('quotas sum to the partition count and differ by at most one', () => {
  for (let partitions = 1; partitions <= 16; partitions++) {
    for (let workers = 1; workers <= 10; workers++) {
      const ids = range(0, workers).map((i) => `w${i}`);
      const quotas = [...leaseQuotas(partitions, ids).values()];
      assert.equal(quotas.reduce((a, b) => a + b, 0), partitions, `${partitions} partitions over ${workers} workers`);
      assert.ok(Math.max(...quotas) - Math.min(...quotas) <= 1);
      assert.equal(Math.max(...quotas), Math.ceil(partitions / workers));
    }
  }
});

test('workers that agree on the membership converge to a disjoint cover of all partitions', () => {
  // Simulate synchronous ticks with a shared view: each worker plans on the same state, one after another.
  for (const workers of [['a'], ['a', 'b'], ['a', 'b', 'c'], ['a', 'b', 'c', 'd', 'e'], ['w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7']]) {
    const partitions = 8;
    const owner = new Map<number, string>();
    for (let tick = 0; tick < 5; tick++) {
      for (const id of workers) {
        const owned = [...owner].filter(([, o]) => o === id).map(([p]) => p);
        const free = range(0, partitions).filter((p) => !owner.has(p));
        const plan = planLeases({ partitions, workerId: id, liveWorkers: workers, owned, free });
        for (const p of plan.release) owner.delete(p);
        for (const p of plan.acquire) if (!owner.has(p)) owner.set(p, id);
      }
    }
    assert.equal(owner.size, partitions, `every partition owned with ${workers.length} workers`);
    const quotas = leaseQuotas(partitions, workers);
    for (const id of workers) {
      assert.equal([...owner.values()].filter((o) => o === id).length, quotas.get(id), `${id} holds its quota`);
    }
  }
});
