import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimiter } from '../../edge-agent/src/sources/rate-limiter.js';

function clock(start = 0) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

test('a bucket lets a burst through, then the rate, and says when to retry', () => {
  const time = clock();
  const limiter = new RateLimiter({ now: time.now });
  const limit = { ratePerSecond: 10, burst: 5 };
  for (let i = 0; i < 5; i++) assert.deepEqual(limiter.take('a', 1, limit), { ok: true }, `burst request ${i}`);
  assert.deepEqual(limiter.take('a', 1, limit), { ok: false, retryAfterMs: 100 });
  time.advance(50);
  assert.deepEqual(limiter.take('a', 1, limit), { ok: false, retryAfterMs: 50 });
  time.advance(50);
  assert.deepEqual(limiter.take('a', 1, limit), { ok: true });
  assert.equal(limiter.take('a', 1, limit).ok, false);
});

test('events cost one token each; a refused request takes nothing', () => {
  const time = clock();
  const limiter = new RateLimiter({ now: time.now });
  const limit = { ratePerSecond: 100, burst: 100 };
  assert.equal(limiter.take('a', 60, limit).ok, true);
  assert.deepEqual(limiter.take('a', 60, limit), { ok: false, retryAfterMs: 200 }); // 40 left, 20 missing at 100/s
  assert.equal(limiter.take('a', 40, limit).ok, true, 'the refused 60 did not take tokens');
});

test('a batch larger than the burst passes from a full bucket and is paid back by waiting', () => {
  const time = clock();
  const limiter = new RateLimiter({ now: time.now });
  const limit = { ratePerSecond: 10, burst: 10 };
  assert.equal(limiter.take('a', 30, limit).ok, true); // bucket now at -20
  // Needs min(30, 10) = 10 tokens again: 30 missing at 10/s.
  assert.deepEqual(limiter.take('a', 30, limit), { ok: false, retryAfterMs: 3000 });
  assert.deepEqual(limiter.take('a', 1, limit), { ok: false, retryAfterMs: 2100 });
  time.advance(3000);
  assert.equal(limiter.take('a', 30, limit).ok, true, 'long-run rate stays 10/s: 30 events per 3 s');
});

test('clients have separate buckets, and a per-client limit can differ', () => {
  const time = clock();
  const limiter = new RateLimiter({ now: time.now });
  assert.equal(limiter.take('a', 1, { ratePerSecond: 1, burst: 1 }).ok, true);
  assert.equal(limiter.take('a', 1, { ratePerSecond: 1, burst: 1 }).ok, false);
  assert.equal(limiter.take('b', 1, { ratePerSecond: 1, burst: 1 }).ok, true, 'b is not slowed down by a');
  assert.equal(limiter.take('c', 50, { ratePerSecond: 100, burst: 50 }).ok, true);
});

test('a rate of 0 means no limit and keeps no state', () => {
  const limiter = new RateLimiter({ now: () => 0 });
  for (let i = 0; i < 1000; i++) assert.equal(limiter.take('a', 1000, { ratePerSecond: 0, burst: 0 }).ok, true);
  assert.equal(limiter.size(), 0);
});

test('the refill never exceeds the burst, whatever the idle time', () => {
  const time = clock();
  const limiter = new RateLimiter({ now: time.now });
  const limit = { ratePerSecond: 10, burst: 3 };
  limiter.take('a', 3, limit);
  time.advance(3_600_000);
  for (let i = 0; i < 3; i++) assert.equal(limiter.take('a', 1, limit).ok, true);
  assert.equal(limiter.take('a', 1, limit).ok, false);
});

test('the number of buckets is bounded: full ones are forgotten first, then the oldest', () => {
  const time = clock();
  const limiter = new RateLimiter({ now: time.now, maxKeys: 10 });
  const limit = { ratePerSecond: 1, burst: 1 };
  for (let i = 0; i < 10; i++) limiter.take(`busy-${i}`, 1, limit); // all empty now
  assert.equal(limiter.size(), 10);
  limiter.take('new-1', 1, limit);
  assert.ok(limiter.size() <= 10);
  assert.equal(limiter.take('new-1', 1, limit).ok, false, 'the newest bucket is kept and still limits');
  time.advance(5000); // everyone refilled
  limiter.take('new-2', 1, limit);
  assert.equal(limiter.size(), 1, 'refilled buckets are the same as new ones and go first');
});
