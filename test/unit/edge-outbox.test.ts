import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteOutbox } from '../../edge-agent/src/buffer/sqlite-outbox.js';
import { packRecords } from '../../edge-agent/src/buffer/outbox-records.js';
import { OutboxFullError } from '../../edge-agent/src/errors.js';

const event = (partition: number, size = 10) => ({ partition, data: Buffer.alloc(size, partition) });
const open = (path: string, maxBytes = 1 << 20, fullPolicy: 'reject' | 'drop-oldest' = 'reject') =>
  new SqliteOutbox({ path, maxBytes, fullPolicy, synchronous: 'full', now: () => 1000 });
const dbPath = () => join(mkdtempSync(join(tmpdir(), 'outbox-')), 'outbox.db');

test('rows come back in append order and are deleted only when their range is accepted', () => {
  const outbox = open(dbPath());
  outbox.append([event(0), event(1), event(2)], []);
  const rows = outbox.readAfter(0, 10, 1 << 20);
  assert.deepEqual(rows.map((r) => [r.seq, r.partition]), [[1, 0], [2, 1], [3, 2]]);
  const range = { first: 1, last: 2, events: 2, bytes: 20 };
  outbox.claim(range);
  assert.deepEqual(outbox.claimed(), [range]);
  assert.equal(outbox.stats().rows, 3);
  outbox.accept(range);
  assert.deepEqual(outbox.claimed(), []);
  assert.deepEqual(outbox.readAfter(0, 10, 1 << 20).map((r) => r.seq), [3]);
  assert.deepEqual({ rows: outbox.stats().rows, bytes: outbox.stats().bytes }, { rows: 1, bytes: 10 });
  outbox.close();
});

test('a claimed range survives a restart and reads back the same rows', () => {
  const path = dbPath();
  let outbox = open(path);
  outbox.append([event(0), event(1), event(0)], [{ source: 'http', code: 'X', reason: 'bad', payload: Buffer.from('x') }]);
  outbox.claim({ first: 1, last: 3, events: 3, bytes: 30 });
  outbox.close();
  outbox = open(path);
  const [claimed] = outbox.claimed();
  assert.deepEqual(claimed, { first: 1, last: 3, events: 3, bytes: 30 });
  assert.deepEqual(outbox.readRange(claimed!).map((r) => r.seq), [1, 2, 3]);
  assert.deepEqual({ rows: outbox.stats().rows, bytes: outbox.stats().bytes, deadLetters: outbox.stats().deadLetters }, { rows: 3, bytes: 30, deadLetters: 1 });
  outbox.close();
});

test('readAfter stops at the byte bound but always returns at least one row', () => {
  const outbox = open(dbPath());
  outbox.append([event(0, 100), event(0, 100), event(0, 100)], []);
  assert.equal(outbox.readAfter(0, 10, 250).length, 2);
  assert.equal(outbox.readAfter(0, 10, 50).length, 1);
  assert.equal(outbox.readAfter(0, 2, 1 << 20).length, 2);
  outbox.close();
});

test('reject policy refuses an append that would exceed maxBytes and stores nothing of it', () => {
  const outbox = open(dbPath(), 2048, 'reject');
  outbox.append([event(0, 1500)], []);
  assert.throws(() => outbox.append([event(0, 600)], []), OutboxFullError);
  assert.equal(outbox.stats().rows, 1);
  // Dead letters alone are still recorded: refusing them would lose the reason for a device's failure.
  outbox.append([], [{ source: 'mqtt', code: 'X', reason: 'r', payload: Buffer.from('p') }]);
  assert.equal(outbox.stats().deadLetters, 1);
  outbox.close();
});

test('drop-oldest deletes the oldest unclaimed rows, counts them, and never touches a claimed range', () => {
  const outbox = open(dbPath(), 2048, 'drop-oldest');
  outbox.append([event(0, 500), event(1, 500), event(2, 500), event(3, 500)], []);
  outbox.claim({ first: 1, last: 1, events: 1, bytes: 500 });
  outbox.append([event(4, 700)], []);
  assert.equal(outbox.stats().dropped, 2);
  assert.deepEqual(outbox.readAfter(0, 10, 1 << 20).map((r) => r.seq), [1, 4, 5]);
  assert.ok(outbox.stats().bytes <= 2048);
  outbox.close();
});

test('packRecords groups events per partition in arrival order and cuts records at the event and byte limits', () => {
  const e = (partition: number, text: string) => ({ partition, data: Buffer.from(text) });
  const records = packRecords([e(0, 'a'), e(1, 'b'), e(0, 'c'), e(0, 'd'), e(1, 'e'), e(0, 'f')], { maxEvents: 3, maxBytes: 1 << 20 });
  assert.deepEqual(
    records.map((r) => [r.partition, Buffer.from(r.data).toString(), r.count ?? 1]),
    [[0, 'acd', 3], [1, 'be', 2], [0, 'f', 1]],
  );
  const bySize = packRecords([e(2, 'xxxx'), e(2, 'yyyy'), e(2, 'zz')], { maxEvents: 100, maxBytes: 8 });
  assert.deepEqual(bySize.map((r) => Buffer.from(r.data).toString()), ['xxxxyyyy', 'zz']);
});

test('records of several events count as events in stats, ranges and drop-oldest', () => {
  const dir = mkdtempSync(join(tmpdir(), 'outbox-records-'));
  const outbox = new SqliteOutbox({ path: join(dir, 'o.db'), maxBytes: 1000, fullPolicy: 'drop-oldest', synchronous: 'normal' });
  outbox.append([{ partition: 0, data: Buffer.alloc(300), count: 30 }, { partition: 1, data: Buffer.alloc(300), count: 20 }], []);
  assert.equal(outbox.stats().rows, 50);
  assert.deepEqual(outbox.readAfter(0, 40, 1 << 20).map((r) => [r.seq, r.events]), [[1, 30]], 'a second record would pass 40 events');
  assert.equal(outbox.readAfter(0, 10, 1 << 20).length, 1, 'the first record always comes back, even when larger than the bound');
  outbox.append([{ partition: 0, data: Buffer.alloc(600), count: 60 }], []);
  assert.deepEqual({ rows: outbox.stats().rows, dropped: outbox.stats().dropped }, { rows: 80, dropped: 30 }, 'the oldest record (30 events) made room');
  outbox.close();
  rmSync(dir, { recursive: true, force: true });
});
