/**
 * Recommendations on the real stack: a shop's events (simulators/shop.ts) go in through an edge agent over HTTP and
 * MQTT, a hub with recommendations applies them from JetStream into NATS KV, and its API answers from the read model.
 *
 * - A new customer's first event shows in their profile and recommendations (the time it took is printed).
 * - The hub is killed with SIGKILL mid-stream and started again; once everything is applied, every profile and every
 *   item's statistics equal a recomputation through the application layer with in-memory ports over the same events
 *   in the order they were sent (nothing lost, nothing doubled; some events are also sent twice on purpose).
 * - The API's errors: a bad limit or id is a 400 naming the field, an unknown customer or product a 404.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { inMemoryPorts, RecommendationsUseCases } from '../../hub/src/recommendations/application/index.js';
import { DEFAULT_POLICY, type CustomerProfile, type ItemStats } from '../../hub/src/recommendations/domain/index.js';
import { decodeValue, itemShardKey, RECS_BUCKETS } from '../../hub/src/recommendations/infrastructure/kv-state.js';
import { mergeItemShards } from '../../hub/src/recommendations/infrastructure/read-model.js';
import { connect } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { generateShop, type ShopEvent } from '../../simulators/shop.js';
import { testStack } from '../support/env.js';
import { agentPorts, freePort, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const run = Date.now().toString(36);
const root = mkdtempSync(join(tmpdir(), 'recs-'));
const shop = ownProducts(generateShop({ seed: 7, shoppers: 60, products: 120, categories: 6, prefix: `r${run}`, startAt: Date.now() - 86_400_000, days: 1 }));

/** Product ids of this run (the KV buckets outlive a test run on the same stack). */
function ownProducts(world: ReturnType<typeof generateShop>): ReturnType<typeof generateShop> {
  const own = (id: unknown) => `${String(id)}-${run}`;
  for (const p of world.catalogue) p.id = own(p.id);
  for (const e of world.events) {
    if (e.properties.product_id !== undefined) e.properties.product_id = own(e.properties.product_id);
    if (e.properties.content_id !== undefined) e.properties.content_id = own(e.properties.content_id);
  }
  return world;
}
/** Outside the shop's events, so the recomputation below need not know the newcomer. */
const newcomerProduct = { id: `newcomer-item-${run}`, name: 'Newcomer item', category: 'electronics', price: 20 };
let hub: ManagedProcess;
let hubPort: number;
let agent: ManagedProcess;
let ports: AgentPorts;
const catalogueFile = join(root, 'catalogue.json');

const startRecsHub = async (): Promise<ManagedProcess> =>
  startHub(`recs-${run}`, stack.natsUrls, stack.questdbHttp, {
    HUB_HTTP__PORT: String(hubPort),
    HUB_CONSUMER__ENABLED: 'false',
    HUB_ANALYTICS__ENABLED: 'false',
    HUB_DASHBOARD__ENABLED: 'false',
    HUB_RECOMMENDATIONS__ENABLED: 'true',
    HUB_RECOMMENDATIONS__WORKER_ID: `recs-${run}`,
    HUB_RECOMMENDATIONS__CATALOGUE_FILE: catalogueFile,
    HUB_RECOMMENDATIONS__LEASE_TTL_MS: '3000',
  });

const api = async (path: string): Promise<{ status: number; body: any }> => {
  const response = await fetch(`http://127.0.0.1:${hubPort}${path}`);
  return { status: response.status, body: await response.json() };
};

async function post(events: readonly ShopEvent[]): Promise<void> {
  for (let i = 0; i < events.length; i += 200) {
    const body = events.slice(i, i + 200).map((e) => JSON.stringify(e)).join('\n');
    const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    assert.equal(response.status, 200, await response.text());
  }
}

before(async () => {
  writeFileSync(catalogueFile, JSON.stringify([...shop.catalogue.map((p) => ({ id: p.id, name: p.name, category: p.category, price: p.price })), newcomerProduct]));
  hubPort = await freePort();
  hub = await startRecsHub();
  ports = await agentPorts();
  agent = await startAgent(`recs-${run}`, stack.natsUrls, ports, join(root, 'agent'), {
    // App events over MQTT: an app backend's topic, keyed by the events' user_id.
    EDGE_SOURCES__MQTT__ROUTES: JSON.stringify([
      { pattern: 'devices/+/telemetry', type: 'device.telemetry', keyLevel: 1 },
      { pattern: 'apps/+/events', type: 'app.event' },
    ]),
  });
});

after(async () => {
  await agent?.stop();
  await hub?.stop();
  rmSync(root, { recursive: true, force: true });
});

describe('recommendations on the real stack', () => {
  test('a new customer\'s first events show in the profile and the recommendations', async () => {
    const customer = `r${run}-newcomer`;
    const product = newcomerProduct;
    const sentAt = Date.now();
    await post([{ event_id: `${customer}-1`, event_type: 'product_view', user_id: customer, session_id: 's', timestamp: new Date().toISOString(), properties: { product_id: product.id }, context: { device_type: 'web', location: 'DE' } }]);
    const profile = await waitFor(() => api(`/v1/customers/${customer}/profile`), (r) => r.status === 200, 30_000, 20);
    const visibleAfter = Date.now() - sentAt;
    assert.equal(profile.status, 200, JSON.stringify(profile.body));
    assert.equal(profile.body.interactionCounts.product_view, 1);
    assert.equal(profile.body.recentItems[0].productId, product.id);
    process.stderr.write(`[recs] HTTP POST to the agent -> profile served by the hub: ${visibleAfter} ms\n`);

    // Over MQTT (QoS 1) the same customer adds the item to the cart: the profile changes.
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${ports.mqtt}`, { clientId: `${customer}-app` });
    const mqttSentAt = Date.now();
    await client.publishAsync(
      `apps/shop/events`,
      JSON.stringify({ event_id: `${customer}-2`, event_type: 'add_to_cart', user_id: customer, timestamp: new Date().toISOString(), properties: { product_id: product.id, price: product.price } }),
      { qos: 1 },
    );
    await client.endAsync();
    const changed = await waitFor(() => api(`/v1/customers/${customer}/profile`), (r) => r.body.interactionCounts?.add_to_cart === 1, 30_000, 20);
    assert.equal(changed.body.interactionCounts.add_to_cart, 1, 'the MQTT event reached the profile');
    process.stderr.write(`[recs] MQTT publish to the agent -> profile changed: ${Date.now() - mqttSentAt} ms\n`);
    // The profile shows at once on the partition's owner; the shop's boards (the cold start) reach the API with
    // their next write (at most a second apart) and the KV watch. In this fresh shop they are the first ones.
    const recsFrom = Date.now();
    const recs = await waitFor(() => api(`/v1/customers/${customer}/recommendations?limit=5`), (r) => r.status !== 200 || (Array.isArray(r.body) && r.body.length > 0), 5_000, 20);
    process.stderr.write(`[recs] recommendations for the newcomer after the profile changed: ${Date.now() - recsFrom} ms\n`);
    assert.equal(recs.status, 200);
    assert.ok(Array.isArray(recs.body) && recs.body.length > 0, 'a newcomer gets recommendations (popular items as the cold start)');
    assert.ok(recs.body.every((r: { reason: unknown }) => r.reason), 'every item carries its reason');
  });

  test('kill -9 of the hub mid-stream: every profile and item equals a recomputation from the events sent', { timeout: 300_000 }, async () => {
    const events = shop.events;
    // Some events twice, as a device or backend retrying would send them.
    const sent: ShopEvent[] = [];
    events.forEach((e, i) => {
      sent.push(e);
      if (i % 50 === 7) sent.push(e);
    });
    const half = Math.floor(sent.length / 2);
    await post(sent.slice(0, half));
    await waitFor(async () => (await hubStatus()).applied, (n) => n > 200, 30_000, 100);
    await hub.kill();
    process.stderr.write(`[recs] hub killed after ${half} of ${sent.length} events were posted\n`);
    await post(sent.slice(half));
    hub = await startRecsHub();

    // The expected state: the use cases with in-memory ports over the events in the order they were sent.
    const ports = inMemoryPorts(shop.catalogue.map((p) => ({ id: p.id, name: p.name, category: p.category, price: p.price })), Date.now(), { copy: false });
    const offline = new RecommendationsUseCases(ports);
    let appliedOffline = 0;
    for (const e of sent) {
      const result = await offline.recordAppEvent({ id: e.event_id, user_id: e.user_id, event_type: e.event_type, ts: Date.parse(e.timestamp), properties: e.properties });
      if (result.ok && result.value.status === 'applied') appliedOffline++;
    }
    const customers = [...ports.profiles.byId.keys()];
    const done = await waitFor(
      async () => {
        const counts = await profileCounts(customers);
        return { equal: customers.filter((id) => JSON.stringify(counts.get(id)) === JSON.stringify(ports.profiles.byId.get(id)!.interactionCounts)).length };
      },
      (r) => r.equal === customers.length,
      120_000,
      1000,
    );
    assert.equal(done.equal, customers.length, `every customer's interaction counts equal the recomputation (${done.equal} of ${customers.length})`);

    for (const id of customers) {
      const served = (await api(`/v1/customers/${encodeURIComponent(id)}/profile`)).body;
      const expected: CustomerProfile = ports.profiles.byId.get(id)!;
      assert.deepEqual(served.interactionCounts, expected.interactionCounts, `${id}: interaction counts`);
      assert.equal(served.purchaseCount, expected.purchaseCount, `${id}: purchases`);
      assert.ok(Math.abs(served.lifetimeValue - expected.lifetimeValue) < 1e-6, `${id}: lifetime value ${served.lifetimeValue} vs ${expected.lifetimeValue}`);
      assert.deepEqual(
        served.recentItems.map((r: { productId: string }) => r.productId),
        [...expected.recentItems].reverse().map((r) => r.productId),
        `${id}: recent items`,
      );
    }
    // Item statistics as the hub stored them (each partition's shard in KV), merged as the read model merges them.
    const nc = await connect({ servers: stack.natsUrls });
    const itemsKv = await new Kvm(nc).open(RECS_BUCKETS.items);
    let items = 0;
    let compared = 0;
    for (const [productId, expected] of ports.itemStats.items as Map<string, ItemStats>) {
      const shards: ItemStats[] = [];
      for (let partition = 0; partition < 8; partition++) {
        const entry = await itemsKv.get(itemShardKey(productId, partition));
        if (entry && entry.operation === 'PUT' && entry.length > 0) shards.push(decodeValue<ItemStats>(entry.value));
      }
      const served = mergeItemShards(productId, shards, DEFAULT_POLICY);
      assert.equal(served.engagements, expected.engagements, `${productId}: engagements`);
      assert.equal(served.ratingCount, expected.ratingCount, `${productId}: reviews`);
      assert.equal(served.ratingSum, expected.ratingSum, `${productId}: sum of ratings`);
      // Neighbours: equal where no top-K list had to evict (the bounded lists are per partition on the hub).
      if (expected.neighbours.length < DEFAULT_POLICY.neighboursPerItem) {
        const weights = (list: ItemStats['neighbours']) => Object.fromEntries([...list].sort((a, b) => (a.productId < b.productId ? -1 : 1)).map((n) => [n.productId, Math.round(n.weight * 1e6) / 1e6]));
        assert.deepEqual(weights(served.neighbours), weights(expected.neighbours), `${productId}: co-occurrence weights`);
        compared++;
      }
      items++;
    }
    await nc.close();
    // The enriched rows: one per applied event, none twice, with the catalogue's category and the customer's segment.
    const rows = await waitFor(
      () => query<{ n: number; ids: number; categorised: number; segmented: number }>(stack.questdbHttp, `select count() n, count_distinct(event_id) ids, count(category) categorised, count(segment) segmented from shop_interactions where customer_id like 'r${run}-%' and customer_id != 'r${run}-newcomer'`),
      (r) => Number(r[0]?.n) === appliedOffline,
      60_000,
      500,
    );
    assert.equal(Number(rows[0]?.n), appliedOffline, 'one shop_interactions row per applied event');
    assert.equal(Number(rows[0]?.ids), appliedOffline, 'no event twice in shop_interactions');
    assert.equal(Number(rows[0]?.segmented), appliedOffline, 'every row has the customer\'s segment');
    assert.ok(Number(rows[0]?.categorised) > appliedOffline * 0.9, `rows carry the catalogue's category (${rows[0]?.categorised} of ${appliedOffline}; failed logins have none)`);
    const status = await hubStatus();
    process.stderr.write(
      `[recs] ${customers.length} profiles and ${items} items equal the recomputation (neighbour weights compared for ${compared}); after the restart the hub skipped ${status.duplicates} events as already applied\n`,
    );
  });

  test('the API answers bad ids and limits with 400 naming the field, unknown ones with 404', async () => {
    const known = shop.shoppers[0]!.userId;
    const limitZero = await api(`/v1/customers/${known}/recommendations?limit=0`);
    assert.equal(limitZero.status, 400);
    assert.equal(limitZero.body.error.field, 'limit');
    assert.match(limitZero.body.error.message, /1 to 100/);
    assert.equal((await api(`/v1/customers/${known}/recommendations?limit=abc`)).status, 400);
    assert.equal((await api(`/v1/customers/${known}/recommendations?limit=101`)).status, 400);
    const control = await api(`/v1/customers/${encodeURIComponent('a\u0001b')}/profile`);
    assert.equal(control.status, 400);
    assert.equal(control.body.error.field, 'customer id');
    const unknown = await api(`/v1/customers/nobody-${run}/profile`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'unknown_customer');
    assert.equal((await api(`/v1/customers/nobody-${run}/recommendations`)).status, 404);
    assert.equal((await api(`/v1/products/no-such-product-${run}/similar`)).status, 404);
    const explanation = await api(`/v1/customers/${known}/recommendations/${shop.catalogue[3]!.id}/explanation`);
    assert.equal(explanation.status, 200, JSON.stringify(explanation.body));
    assert.ok('components' in explanation.body || 'score' in explanation.body, 'the explanation carries the score parts');
  });
});

async function hubStatus(): Promise<{ applied: number; duplicates: number }> {
  const health = (await (await fetch(`http://127.0.0.1:${hubPort}/healthz`)).json()) as { recommendations?: { counters: { applied: number; duplicates: number } } };
  return health.recommendations?.counters ?? { applied: 0, duplicates: 0 };
}

async function profileCounts(customers: readonly string[]): Promise<Map<string, unknown>> {
  const counts = new Map<string, unknown>();
  for (const id of customers) {
    const r = await api(`/v1/customers/${encodeURIComponent(id)}/profile`);
    if (r.status === 200) counts.set(id, r.body.interactionCounts);
  }
  return counts;
}
