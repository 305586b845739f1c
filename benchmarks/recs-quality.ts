/**
 * Offline quality of recommendations on simulated shoppers with planted tastes (simulators/shop.ts): every shopper's
 * last few item interactions are held out, everything else goes through the application layer (in-memory ports,
 * every 20th event delivered twice to exercise exactly-once), and then, at the time of each shopper's first held-out
 * event, the top 10 of (a) our recommender and (b) a popularity-only baseline are checked against the held-out items.
 *
 *   hit rate@10 = held-out items found in the top 10 / held-out items
 *
 * (items the shopper had already bought before the cut are left out of both counts: neither side may recommend
 * them). "New items" repeats the count for held-out items the shopper had not touched before the cut.
 *
 *   npx tsx benchmarks/recs-quality.ts [--shoppers 300] [--seed 1] [--hold-out 3]
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { inMemoryPorts, RecommendationsUseCases } from '../hub/src/recommendations/application/index.js';
import { decayedAt, DEFAULT_POLICY } from '../hub/src/recommendations/domain/index.js';
import { generateShop, type ShopEvent, type ShopOptions } from '../simulators/shop.js';
import { machineDescription, table, writeResults } from './lib/measure.js';

export interface RecsQualityOptions {
  shop?: Partial<ShopOptions>;
  /** Item interactions held out at the end of each shopper's history. */
  holdOut?: number;
  /** Length of the list checked. */
  k?: number;
}

export interface RecsQualityResult {
  shoppers: number;
  shoppersEvaluated: number;
  eventsFed: number;
  duplicatesDelivered: number;
  duplicatesDropped: number;
  heldOutItems: number;
  hitRateOurs: number;
  hitRateBaseline: number;
  ratio: number;
  newItems: number;
  newItemHitRateOurs: number;
  newItemHitRateBaseline: number;
  seconds: number;
}

const itemOf = (event: ShopEvent): string | undefined => (event.properties.product_id ?? event.properties.content_id) as string | undefined;

export async function measureRecsQuality(options: RecsQualityOptions = {}): Promise<RecsQualityResult> {
  const started = performance.now();
  const holdOut = options.holdOut ?? 3;
  const k = options.k ?? 10;
  const world = generateShop(options.shop);

  // Each shopper's held-out tail: the last `holdOut` item interactions (shoppers with too short a history are fed
  // but not evaluated).
  const itemEventsOf = new Map<string, ShopEvent[]>();
  for (const event of world.events) if (itemOf(event)) itemEventsOf.set(event.user_id, [...(itemEventsOf.get(event.user_id) ?? []), event]);
  const heldOut = new Map<string, ShopEvent[]>();
  for (const [user, events] of itemEventsOf) if (events.length >= holdOut + 3) heldOut.set(user, events.slice(-holdOut));
  const heldOutIds = new Set([...heldOut.values()].flat().map((e) => e.event_id));

  const ports = inMemoryPorts(world.catalogue, world.events[0] ? Date.parse(world.events[0].timestamp) : 0, { copy: false });
  const app = new RecommendationsUseCases(ports);
  let eventsFed = 0;
  let duplicatesDelivered = 0;
  let duplicatesDropped = 0;
  const feedable = world.events.filter((e) => !heldOutIds.has(e.event_id));
  for (const [i, event] of feedable.entries()) {
    const deliveries = i % 20 === 0 ? 2 : 1;
    for (let d = 0; d < deliveries; d++) {
      const result = await app.recordAppEvent({ id: event.event_id, user_id: event.user_id, event_type: event.event_type, ts: event.timestamp, properties: event.properties });
      if (!result.ok) throw new Error(`event ${event.event_id} refused: ${result.error.message}`);
      if (d > 0) duplicatesDelivered++;
      if (result.value.status === 'duplicate') duplicatesDropped++;
    }
    eventsFed++;
  }

  let heldOutItems = 0;
  let hitsOurs = 0;
  let hitsBaseline = 0;
  let newItems = 0;
  let newHitsOurs = 0;
  let newHitsBaseline = 0;
  for (const [user, tail] of heldOut) {
    const cutAt = Date.parse(tail[0]!.timestamp);
    ports.clock.set(cutAt);
    const profile = ports.profiles.byId.get(user);
    if (!profile) continue;
    const bought = new Set(profile.purchasedItems);
    const seen = new Set(profile.recentItems.map((r) => r.productId));
    const targets = [...new Set(tail.map((e) => itemOf(e)!))].filter((id) => !bought.has(id));

    const ours = await app.getRecommendations(user, k);
    if (!ours.ok) throw new Error(`recommendations for ${user}: ${ours.error.kind}`);
    const oursTop = new Set(ours.value.map((r) => r.productId));
    // Baseline: the shop's most popular items at the cut (same decayed popularity), minus what the shopper bought.
    const baselineTop = new Set(
      [...ports.itemStats.items.values()]
        .filter((s) => !bought.has(s.productId))
        .map((s) => ({ id: s.productId, popularity: decayedAt(s.popularity, cutAt, DEFAULT_POLICY.popularityHalfLifeMs) }))
        .sort((a, b) => b.popularity - a.popularity || (a.id < b.id ? -1 : 1))
        .slice(0, k)
        .map((s) => s.id),
    );
    for (const id of targets) {
      heldOutItems++;
      if (oursTop.has(id)) hitsOurs++;
      if (baselineTop.has(id)) hitsBaseline++;
      if (!seen.has(id)) {
        newItems++;
        if (oursTop.has(id)) newHitsOurs++;
        if (baselineTop.has(id)) newHitsBaseline++;
      }
    }
  }
  const rate = (hits: number, of: number) => (of === 0 ? 0 : hits / of);
  const hitRateOurs = rate(hitsOurs, heldOutItems);
  const hitRateBaseline = rate(hitsBaseline, heldOutItems);
  return {
    shoppers: world.shoppers.length,
    shoppersEvaluated: heldOut.size,
    eventsFed,
    duplicatesDelivered,
    duplicatesDropped,
    heldOutItems,
    hitRateOurs,
    hitRateBaseline,
    ratio: hitRateBaseline === 0 ? Infinity : hitRateOurs / hitRateBaseline,
    newItems,
    newItemHitRateOurs: rate(newHitsOurs, newItems),
    newItemHitRateBaseline: rate(newHitsBaseline, newItems),
    seconds: (performance.now() - started) / 1000,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { shoppers: { type: 'string', default: '300' }, seed: { type: 'string', default: '1' }, 'hold-out': { type: 'string', default: '3' } } });
  const shop = { shoppers: Number(values.shoppers), seed: Number(values.seed) };
  const result = await measureRecsQuality({ shop, holdOut: Number(values['hold-out']), k: 10 });
  const setup = `simulators/shop.ts seed ${shop.seed}: ${result.shoppers} shoppers, 500 products in 12 categories; last ${values['hold-out']} item interactions of each shopper held out; ${machineDescription()}`;
  const file = writeResults('recs-quality', { date: new Date().toISOString(), setup, ...result });
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  process.stdout.write(
    `\nRecommendation quality, offline. ${setup}\n\n` +
      table([
        { recommender: 'ours (co-occurrence + categories + reviews)', 'hit rate@10': pct(result.hitRateOurs), 'hit rate@10, new items': pct(result.newItemHitRateOurs) },
        { recommender: 'popularity only (baseline)', 'hit rate@10': pct(result.hitRateBaseline), 'hit rate@10, new items': pct(result.newItemHitRateBaseline) },
      ]) +
      `\n\nratio ours / baseline: ${result.ratio.toFixed(2)}x (must be >= 2x) over ${result.heldOutItems} held-out items (${result.newItems} new) of ${result.shoppersEvaluated} shoppers\n` +
      `events fed ${result.eventsFed}, redelivered ${result.duplicatesDelivered}, dropped as duplicates ${result.duplicatesDropped}; ${result.seconds.toFixed(1)} s\n` +
      `written to ${file}\n`,
  );
  if (result.ratio < 2) process.exitCode = 1;
}
