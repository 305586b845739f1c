/**
 * Recommendations without I/O (issue 10): what the domain and application layers cost per event and per list, on
 * one core, so that bench:recs (the real stack) can be read as "this much is the model, the rest is NATS and KV".
 *
 *   (1) apply: a simulated shop's app events through RecommendationsUseCases.recordAppEvent, with the write side's
 *       policy (WRITE_POLICY) and in-memory ports that hand out their records without copying, as the write side's
 *       cache does: events/s, and µs per event.
 *   (2) recommend: getRecommendations(limit 10) for the first N customers: ms per list (p50/p95/p99).
 *
 *   npm run bench:recs-apply -- [--shoppers 20000] [--products 5000] [--lists 2000]
 */
import { parseArgs } from 'node:util';
import { inMemoryPorts, RecommendationsUseCases } from '../hub/src/recommendations/application/index.js';
import { WRITE_POLICY } from '../hub/src/recommendations/infrastructure/partition-state.js';
import { benchmarkShop } from './lib/bench-shop.js';
import { LatencyRecorder, machineDescription, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({
  options: {
    shoppers: { type: 'string', default: '20000' },
    products: { type: 'string', default: '5000' },
    lists: { type: 'string', default: '2000' },
  },
});

const shop = benchmarkShop({ shoppers: Number(values.shoppers), products: Number(values.products) });
const ports = inMemoryPorts(shop.catalogue, Date.now(), { copy: false });
const app = new RecommendationsUseCases({ ...ports, policy: WRITE_POLICY });

const memoryBefore = process.memoryUsage().heapUsed;
const applyStart = performance.now();
for (const [sequence, e] of shop.events.entries()) {
  await app.recordAppEvent({ id: e.event_id, user_id: e.user_id, event_type: e.event_type, ts: e.timestamp, properties: e.properties }, { source: 'p0', sequence });
}
const applyMs = performance.now() - applyStart;
const heapMb = (process.memoryUsage().heapUsed - memoryBefore) / 1e6;

const customers = [...ports.profiles.byId.keys()].slice(0, Number(values.lists));
const lists = new LatencyRecorder();
for (const id of customers) {
  const start = performance.now();
  const result = await app.getRecommendations(id, 10);
  lists.record(performance.now() - start);
  if (!result.ok) throw new Error(`no list for ${id}`);
}

const results = {
  machine: machineDescription(),
  shop: { shoppers: Number(values.shoppers), products: Number(values.products), events: shop.events.length, profiles: ports.profiles.byId.size, items: ports.itemStats.items.size },
  apply: { eventsPerSecond: Math.round(shop.events.length / (applyMs / 1000)), microsecondsPerEvent: Number(((applyMs * 1000) / shop.events.length).toFixed(1)), heapGrowthMb: Number(heapMb.toFixed(0)) },
  recommend: { lists: customers.length, ...lists.percentiles() },
};
console.log(
  table([
    { measure: 'apply (domain + application, in memory)', value: `${results.apply.eventsPerSecond.toLocaleString('en-US')} events/s (${results.apply.microsecondsPerEvent} µs each)` },
    { measure: 'state held', value: `${results.shop.profiles} profiles, ${results.shop.items} items, heap +${results.apply.heapGrowthMb} MB` },
    { measure: 'one list of 10 (a few hundred candidates scored)', value: `p50 ${results.recommend.p50.toFixed(2)} ms, p95 ${results.recommend.p95.toFixed(2)} ms, p99 ${results.recommend.p99.toFixed(2)} ms` },
  ]),
);
console.log(`written to ${writeResults('recs-apply', results)}`);
