/**
 * The recommendation use cases over in-memory ports (copying values in and out, as a real store would): typed
 * results for the HTTP layer, exactly-once recording (duplicates, a crash between the item and profile writes, a
 * replayed stream), the injected clock, and the shop simulator's events end to end.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inMemoryPorts, MAX_LIMIT, RecommendationsUseCases } from '../../hub/src/recommendations/application/index.js';
import type { AppEventLike, CustomerProfile, Product } from '../../hub/src/recommendations/domain/index.js';
import { generateShop } from '../../simulators/shop.js';

const T0 = Date.UTC(2026, 0, 1);
const DAY = 86_400_000;
const PRODUCTS: Product[] = [
  { id: 'g1', name: 'Spade', category: 'garden', price: 20 },
  { id: 'g2', name: 'Rake', category: 'garden', price: 15 },
  { id: 'g3', name: 'Hose', category: 'garden', price: 30 },
  { id: 'b1', name: 'Novel', category: 'books', price: 12 },
];

let n = 0;
function event(user: string, type: string, properties: Record<string, unknown> = {}, ts = T0): AppEventLike {
  return { id: `ev-${n++}`, user_id: user, event_type: type, ts, properties };
}

function setup(products: readonly Product[] = PRODUCTS) {
  const ports = inMemoryPorts(products, T0);
  return { ports, app: new RecommendationsUseCases(ports) };
}

/** Everything the stores hold, for comparing whole states. */
function snapshot(ports: ReturnType<typeof inMemoryPorts>) {
  const sorted = <V>(m: Map<string, V>) => [...m].sort(([a], [b]) => (a < b ? -1 : 1));
  return { profiles: sorted(ports.profiles.byId), items: sorted(ports.itemStats.items), categories: sorted(ports.itemStats.categories) };
}

async function record(app: RecommendationsUseCases, ...events: AppEventLike[]) {
  const outcomes = [];
  for (const e of events) {
    const result = await app.recordAppEvent(e);
    assert.ok(result.ok, `${e.id}: ${JSON.stringify(result)}`);
    outcomes.push(result.value.status);
  }
  return outcomes;
}

const view = (user: string, product: string, ts = T0) => event(user, 'product_view', { product_id: product }, ts);

test('recordAppEvent: shop events are applied, other app events ignored, broken ones a validation error', async () => {
  const { app } = setup();
  assert.deepEqual(await app.recordAppEvent(view('u', 'g1')), { ok: true, value: { status: 'applied', customerId: 'u', itemsUpdated: 1 } });
  assert.deepEqual(await app.recordAppEvent(view('u', 'g2')), { ok: true, value: { status: 'applied', customerId: 'u', itemsUpdated: 2 } }, 'g2 and its co-occurring g1');
  assert.deepEqual(await app.recordAppEvent(event('u', 'login')), { ok: true, value: { status: 'ignored', eventType: 'login' } });
  assert.deepEqual(await app.recordAppEvent(event('u', 'review_submitted', { product_id: 'g1', rating: 0 })), {
    ok: false,
    error: { kind: 'validation', field: 'event', message: 'review rating must be a whole number from 1 to 5, got 0' },
  });
  assert.deepEqual(await app.recordReview('r1', { customerId: 'u', productId: 'g1', rating: 9, text: '', at: T0 }), {
    ok: false,
    error: { kind: 'validation', field: 'review', message: 'rating must be a whole number from 1 to 5, got 9' },
  });
  const noItem = await app.recordInteraction({ eventId: 'x', customerId: 'u', kind: 'purchase', at: T0 });
  assert.deepEqual(noItem, { ok: false, error: { kind: 'validation', field: 'productId', message: 'purchase needs a productId' } });
});

test('exactly once: a redelivered event is a no-op in the profile and in every item statistic', async () => {
  const { ports, app } = setup();
  const events = [view('u', 'g1'), view('u', 'g2'), event('u', 'purchase', { product_id: 'g2', price: 14, quantity: 2 }), event('u', 'review_submitted', { product_id: 'g2', rating: 5, text: 'ok' })];
  assert.deepEqual(await record(app, ...events), ['applied', 'applied', 'applied', 'applied']);
  const once = structuredClone(snapshot(ports));
  assert.deepEqual(await record(app, ...events, events[2]!), ['duplicate', 'duplicate', 'duplicate', 'duplicate', 'duplicate']);
  assert.deepEqual(snapshot(ports), once);
  const profile = await app.getProfile('u');
  assert.ok(profile.ok);
  assert.equal(profile.value.lifetimeValue, 28);
  assert.deepEqual(profile.value.interactionCounts, { product_view: 2, purchase: 1, review_submitted: 1 });
});

test('exactly once: a crash after the item writes and before the profile write is repaired by the redelivery', async () => {
  const clean = setup();
  const events = [view('u', 'g1'), view('u', 'g2'), view('u', 'g3')];
  await record(clean.app, ...events);

  const crashing = setup();
  const profiles = crashing.ports.profiles;
  const realPut = profiles.put.bind(profiles);
  let failNext = false;
  profiles.put = async (profile: CustomerProfile) => {
    if (failNext) {
      failNext = false;
      throw new Error('crash before the profile write');
    }
    return realPut(profile);
  };
  await record(crashing.app, events[0]!, events[1]!);
  failNext = true;
  await assert.rejects(crashing.app.recordAppEvent(events[2]!), /crash/);
  assert.deepEqual(await crashing.app.recordAppEvent(events[2]!), { ok: true, value: { status: 'applied', customerId: 'u', itemsUpdated: 0 } }, 'items were done already');
  assert.deepEqual(snapshot(crashing.ports), snapshot(clean.ports));
});

test('replay: the same stream in the same order gives the same state; delivering everything twice changes nothing', async () => {
  const world = generateShop({ shoppers: 25, seed: 7 });
  const asApp = world.events.map((e) => ({ id: e.event_id, user_id: e.user_id, event_type: e.event_type, ts: e.timestamp, properties: e.properties }));
  const runs = [];
  for (const twice of [false, false, true]) {
    const { ports, app } = setup(world.catalogue);
    for (const e of asApp) await record(app, ...(twice ? [e, e] : [e]));
    runs.push(snapshot(ports));
  }
  assert.ok(runs[0]!.profiles.length === 25 && runs[0]!.items.length > 50);
  assert.deepEqual(runs[1], runs[0]);
  assert.deepEqual(runs[2], runs[0]);
});

test('getRecommendations: typed not-found and validation errors, then a ranked list with reasons', async () => {
  const { app } = setup();
  await record(app, view('a', 'g1'), view('a', 'g2'), view('b', 'g1'), view('b', 'g3'), view('c', 'b1'), view('t', 'g1'));
  assert.deepEqual(await app.getRecommendations('nobody', 5), { ok: false, error: { kind: 'not_found', entity: 'customer', id: 'nobody' } });
  for (const limit of [0, MAX_LIMIT + 1, 1.5, Number.NaN]) {
    const result = await app.getRecommendations('t', limit);
    assert.ok(!result.ok && result.error.kind === 'validation' && result.error.field === 'limit', `limit ${limit}`);
  }
  const result = await app.getRecommendations('t', 3);
  assert.ok(result.ok);
  assert.deepEqual(result.value.map((r) => `${r.productId} ${r.reason.kind}`), ['g2 also_engaged', 'g3 also_engaged', 'g1 preferred_category']);
  assert.equal(result.value[0]!.reason.text, 'Customers who engaged with Spade also engaged with Rake');
});

test('purchased items never come back; a 1-star review pushes the item down', async () => {
  const { app } = setup();
  await record(app, view('a', 'g1'), view('a', 'g2'), view('a', 'g2'), view('b', 'g1'), view('b', 'g3'), view('t', 'g1'));
  const before = await app.getRecommendations('t', 10);
  assert.ok(before.ok);
  assert.deepEqual(before.value.map((r) => r.productId), ['g2', 'g3', 'g1']);
  await record(app, event('t', 'purchase', { product_id: 'g3' }));
  const afterPurchase = await app.getRecommendations('t', 10);
  assert.ok(afterPurchase.ok);
  assert.ok(!afterPurchase.value.some((r) => r.productId === 'g3'));
  const reviewed = await app.recordReview('rev-1', { customerId: 't', productId: 'g2', rating: 1, text: 'broke', at: T0 });
  assert.ok(reviewed.ok);
  const afterReview = await app.getRecommendations('t', 10);
  assert.ok(afterReview.ok);
  assert.deepEqual(afterReview.value.map((r) => r.productId), ['g1', 'g2']);
  const explained = await app.explainRecommendation('t', 'g3');
  assert.ok(explained.ok);
  assert.equal(explained.value.excluded, 'already_purchased');
});

test('getProfile reads decayed values at the clock: preferences halve in 14 days, risk in 1 day', async () => {
  const { ports, app } = setup();
  await record(app, view('u', 'g1'), event('u', 'purchase', { product_id: 'b1' }), ...Array.from({ length: 5 }, () => event('u', 'failed_login')));
  const now = await app.getProfile('u');
  assert.ok(now.ok);
  assert.deepEqual(now.value.preferredCategories.map((p) => [p.category, p.weight, p.share]), [['books', 5, 5 / 6], ['garden', 1, 1 / 6]]);
  assert.equal(now.value.segment, 'at_risk');
  assert.ok(Math.abs(now.value.riskScore - (1 - Math.exp(-1))) < 1e-12);
  assert.deepEqual(now.value.recentItems.map((r) => r.productId), ['b1', 'g1'], 'newest first');
  assert.equal(now.value.lifetimeValue, 12, 'catalogue price when the event has none');

  ports.clock.advance(14 * DAY);
  const later = await app.getProfile('u');
  assert.ok(later.ok);
  assert.deepEqual(later.value.preferredCategories.map((p) => [p.category, p.weight]), [['books', 2.5], ['garden', 0.5]]);
  assert.ok(later.value.riskScore < 1e-4);
  assert.equal(later.value.segment, 'active');
  assert.deepEqual(await app.getProfile('ghost'), { ok: false, error: { kind: 'not_found', entity: 'customer', id: 'ghost' } });
});

test('explainRecommendation and similarProducts: parts of the score, neighbours, typed errors', async () => {
  const { app } = setup();
  await record(app, view('a', 'g1'), view('a', 'g2'), view('b', 'g1'), view('b', 'g2'), view('c', 'g1'), view('c', 'g3'), view('t', 'g1'));
  const explained = await app.explainRecommendation('t', 'g2');
  assert.ok(explained.ok);
  assert.deepEqual(explained.value.contributors, [{ productId: 'g1', contribution: 2 / 3 }]);
  assert.deepEqual({ ...explained.value.components }, { coOccurrence: 2 / 3, category: 1 * (2 / 4), popularity: 2 / 4, ratingFactor: 1, dislikeFactor: 1 });
  assert.deepEqual(await app.explainRecommendation('t', 'zzz'), { ok: false, error: { kind: 'not_found', entity: 'product', id: 'zzz' } });
  assert.deepEqual(await app.explainRecommendation('nobody', 'g1'), { ok: false, error: { kind: 'not_found', entity: 'customer', id: 'nobody' } });

  const similar = await app.similarProducts('g1', 5);
  assert.ok(similar.ok);
  assert.deepEqual(similar.value.map((s) => [s.product.id, s.score]), [['g2', 2 / 3], ['g3', 1 / 3]]);
  assert.equal(similar.value[0]!.reason, 'Customers who engaged with Spade also engaged with Rake');
  assert.deepEqual(await app.similarProducts('zzz', 5), { ok: false, error: { kind: 'not_found', entity: 'product', id: 'zzz' } });
  const badLimit = await app.similarProducts('g1', 0);
  assert.ok(!badLimit.ok && badLimit.error.kind === 'validation');
});

test('enrichInteraction: category, price and segment for a row', async () => {
  const { app } = setup();
  await record(app, view('u', 'g1'));
  assert.deepEqual(await app.enrichInteraction({ eventId: 'e', customerId: 'u', kind: 'purchase', productId: 'g2', at: T0 + 20 * DAY }), { category: 'garden', price: 15, segment: 'active' });
  assert.deepEqual(await app.enrichInteraction({ eventId: 'e', customerId: 'new', kind: 'product_view', productId: 'none', at: T0, price: 3 }), { category: null, price: 3, segment: 'new' });
});

test('in-memory ports copy values: what a caller does to a value it read does not reach the store', async () => {
  const { ports, app } = setup();
  await record(app, view('u', 'g1'));
  const read = (await ports.profiles.get('u'))!;
  read.recentItems.length = 0;
  assert.equal((await ports.profiles.get('u'))!.recentItems.length, 1);
});
