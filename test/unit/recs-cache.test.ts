/** The recommendation cache: served until the profile changes or the age runs out, bounded by customers. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecommendationCache } from '../../hub/src/recommendations/infrastructure/recommendation-cache.js';
import type { Recommendation } from '../../hub/src/recommendations/domain/index.js';

function setup(maxAgeMs = 1000, maxCustomers = 10, available = Infinity) {
  let now = 0;
  const computed: string[] = [];
  const unknown = new Set<string>();
  const cache = new RecommendationCache(
    async (customerId, limit) => {
      computed.push(`${customerId}/${limit}`);
      if (unknown.has(customerId)) return { ok: false, error: { kind: 'not_found', entity: 'customer', id: customerId } };
      const list: Recommendation[] = Array.from({ length: Math.min(limit, available) }, (_, i) => ({
        productId: `for-${customerId}-${computed.length}-${i}`,
        score: 1,
        reason: { kind: 'popular', category: 'c', text: 't' },
        components: { coOccurrence: 0, category: 0, popularity: 1, ratingFactor: 1, dislikeFactor: 1 },
      }));
      return { ok: true, value: list };
    },
    { maxAgeMs, maxCustomers, now: () => now },
  );
  return { cache, computed, unknown, advance: (ms: number) => (now += ms) };
}

test('a list is scored once and served until it is maxAgeMs old', async () => {
  const { cache, computed, advance } = setup();
  const first = await cache.get('u1', 10);
  assert.equal(await cache.get('u1', 10), first);
  advance(999);
  assert.equal(await cache.get('u1', 10), first);
  advance(1);
  assert.notEqual(await cache.get('u1', 10), first, 'at maxAgeMs it is scored again');
  assert.deepEqual(computed, ['u1/10', 'u1/10']);
  assert.equal(cache.hits, 2);
  assert.equal(cache.misses, 2);
});

test("a profile change invalidates that customer's lists (every limit) and no other", async () => {
  const { cache, computed } = setup();
  await cache.get('u1', 10);
  await cache.get('u1', 5);
  await cache.get('u2', 10);
  cache.invalidate('u1');
  await cache.get('u1', 10);
  await cache.get('u1', 5);
  await cache.get('u2', 10);
  assert.deepEqual(computed, ['u1/10', 'u1/5', 'u2/10', 'u1/10', 'u1/5']);
});

test('beyond maxCustomers the customer cached longest ago goes; maxAgeMs 0 scores every request', async () => {
  const { cache, computed } = setup(1000, 2);
  for (const id of ['a', 'b', 'c']) await cache.get(id, 10);
  assert.equal(cache.size(), 2);
  await cache.get('b', 10);
  await cache.get('a', 10);
  assert.deepEqual(computed, ['a/10', 'b/10', 'c/10', 'a/10']);

  const off = setup(0);
  await off.cache.get('a', 10);
  await off.cache.get('a', 10);
  assert.deepEqual(off.computed, ['a/10', 'a/10']);
});

test('a list shorter than asked for (cold start) is kept for a second only; an error is not kept', async () => {
  const { cache, computed, unknown, advance } = setup(30_000, 10, 3);
  const short = await cache.get('u1', 5);
  assert.equal(short.ok && short.value.length, 3);
  advance(999);
  assert.equal(await cache.get('u1', 5), short);
  advance(1);
  assert.notEqual(await cache.get('u1', 5), short, 'after a second the boards may have arrived: scored again');
  const full = await cache.get('u1', 2);
  advance(29_999);
  assert.equal(await cache.get('u1', 2), full, 'a full list is kept for maxAgeMs');

  unknown.add('ghost');
  assert.equal((await cache.get('ghost', 5)).ok, false);
  unknown.delete('ghost');
  assert.equal((await cache.get('ghost', 5)).ok, true, 'the customer exists now: not served the old error');
  assert.deepEqual(computed, ['u1/5', 'u1/5', 'u1/2', 'ghost/5', 'ghost/5']);
});
