/**
 * Offline recommendation quality, small and seeded (benchmarks/recs-quality.ts runs the full size): on simulated
 * shoppers with planted tastes, hit rate@10 on held-out next interactions must be at least twice the popularity-only
 * baseline's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { measureRecsQuality } from '../../benchmarks/recs-quality.js';

test('hit rate@10 beats the popularity-only baseline by at least 2x, and redeliveries are dropped', async () => {
  const result = await measureRecsQuality({ shop: { shoppers: 80, seed: 3 }, holdOut: 3, k: 10 });
  console.log(`hit rate@10: ours ${(100 * result.hitRateOurs).toFixed(1)} %, popularity ${(100 * result.hitRateBaseline).toFixed(1)} %, ratio ${result.ratio.toFixed(2)}x over ${result.heldOutItems} held-out items`);
  assert.ok(result.heldOutItems >= 150, `too few held-out items to judge: ${result.heldOutItems}`);
  assert.ok(result.hitRateOurs >= 2 * result.hitRateBaseline, `ours ${result.hitRateOurs} vs baseline ${result.hitRateBaseline}`);
  assert.ok(result.hitRateOurs >= 0.3, `ours ${result.hitRateOurs}`);
  assert.equal(result.duplicatesDropped, result.duplicatesDelivered);
});
