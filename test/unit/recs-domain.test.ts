/**
 * The recommendation domain as tables: interactions in, expected profile values and ranked items out. Time is always
 * passed in, so decay is checked against exact half-lives. A small synchronous "world" below wires profiles, item
 * statistics and boards the way the application layer does, without any ports.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  addDecayed,
  addNeighbour,
  ALL_CATEGORIES,
  applyInteraction,
  applyItemDelta,
  decayedAt,
  emptyCategoryBoard,
  emptyItemStats,
  DEFAULT_POLICY,
  enrich,
  interactionFromAppEvent,
  newProfile,
  planItemUpdates,
  preferredCategories,
  RecommendationService,
  riskScoreOf,
  segmentOf,
  upsertCategoryBoard,
  type CategoryPopularity,
  type CustomerProfile,
  type Interaction,
  type ItemStats,
  type Neighbour,
  type Product,
  type RecommendationPolicy,
} from '../../hub/src/recommendations/domain/index.js';

const T0 = Date.UTC(2026, 0, 1);
const MINUTE = 60_000;
const DAY = 86_400_000;

const PRODUCTS: Product[] = [
  { id: 'g1', name: 'Spade', category: 'garden', price: 20 },
  { id: 'g2', name: 'Rake', category: 'garden', price: 15 },
  { id: 'g3', name: 'Hose', category: 'garden', price: 30 },
  { id: 'g4', name: 'Gloves', category: 'garden', price: 5 },
  { id: 'b1', name: 'Novel', category: 'books', price: 12 },
  { id: 'b2', name: 'Atlas', category: 'books', price: 40 },
];
const CATALOGUE = new Map(PRODUCTS.map((p) => [p.id, p]));

let nextId = 0;
/** `u1 view g1`, `u1 buy g2 @5m x2 $9`, `u1 review g2 1*`, `u1 failed_login`: a compact interaction. */
function ix(spec: string, at = T0): Interaction {
  const [customerId, verb, ...tokens] = spec.split(' ');
  const productId = tokens[0] && !/^[@x$]|\*$/.test(tokens[0]) ? tokens.shift() : undefined;
  const rest = tokens;
  const kind = ({ view: 'product_view', cart: 'add_to_cart', buy: 'purchase', review: 'review_submitted', play: 'video_play', complete: 'video_complete', failed_login: 'failed_login' } as const)[verb as 'view'];
  assert.ok(kind, `unknown verb in ${spec}`);
  const interaction: Interaction = { eventId: `e${nextId++}`, customerId: customerId!, kind, at };
  if (productId) interaction.productId = productId;
  for (const token of rest) {
    if (token.startsWith('@')) interaction.at = at + Number(token.slice(1, -1)) * (token.endsWith('d') ? DAY : MINUTE);
    else if (token.startsWith('x')) interaction.quantity = Number(token.slice(1));
    else if (token.startsWith('$')) interaction.price = Number(token.slice(1));
    else if (token.endsWith('*')) interaction.rating = Number(token.slice(0, -1));
  }
  return interaction;
}

/** Profiles, item stats and boards updated the way the application layer does it (items first, profile last). */
class World {
  readonly profiles = new Map<string, CustomerProfile>();
  readonly items = new Map<string, ItemStats>();
  readonly boards = new Map<string, CategoryPopularity>();
  readonly service: RecommendationService;
  constructor(readonly policy: RecommendationPolicy = DEFAULT_POLICY) {
    this.service = new RecommendationService(policy);
  }
  apply(...interactions: Interaction[]): this {
    for (const interaction of interactions) {
      const before = this.profiles.get(interaction.customerId);
      const product = interaction.productId ? CATALOGUE.get(interaction.productId) : undefined;
      for (const delta of planItemUpdates(before, interaction, this.policy)) {
        const stats = this.items.get(delta.productId) ?? emptyItemStats(delta.productId);
        applyItemDelta(stats, delta, interaction, this.policy);
        this.items.set(delta.productId, stats);
        if (delta.productId === interaction.productId && delta.popularity > 0) {
          for (const category of product ? [product.category, ALL_CATEGORIES] : [ALL_CATEGORIES]) {
            const board = this.boards.get(category) ?? emptyCategoryBoard(category);
            upsertCategoryBoard(board, delta.productId, stats.popularity, this.policy);
            this.boards.set(category, board);
          }
        }
      }
      const profile = before ?? newProfile(interaction.customerId, interaction.at);
      applyInteraction(profile, interaction, product, this.policy);
      this.profiles.set(interaction.customerId, profile);
    }
    return this;
  }
  inputs(customerId: string, now: number) {
    const profile = this.profiles.get(customerId)!;
    return { profile, now, itemStats: this.items, boards: this.boards, products: CATALOGUE };
  }
  recommend(customerId: string, now = T0, limit = 10) {
    const inputs = this.inputs(customerId, now);
    return this.service.rank(inputs, this.service.candidates(inputs.profile, now, this.items, this.boards), limit);
  }
  /** `id score reason` per item, scores to 4 decimals. */
  brief(customerId: string, now = T0): string[] {
    return this.recommend(customerId, now).map((r) => `${r.productId} ${r.score.toFixed(4)} ${r.reason.kind}${r.reason.kind === 'also_engaged' ? `<${r.reason.becauseOf}` : ''}`);
  }
}

const near = (actual: number, expected: number, what = '') => assert.ok(Math.abs(actual - expected) < 1e-9, `${what} ${actual} != ${expected}`);

test('app events map to interactions, other events to "not a shop event", broken ones to a problem', () => {
  const cases: Array<{ event: Parameters<typeof interactionFromAppEvent>[0]; expected: unknown }> = [
    { event: { id: 'a', user_id: 'u', event_type: 'product_view', ts: T0, properties: { product_id: 'g1', price: 20 } }, expected: { ok: true, interaction: { eventId: 'a', customerId: 'u', kind: 'product_view', at: T0, productId: 'g1', price: 20 } } },
    { event: { id: 'b', user_id: 'u', event_type: 'video_complete', ts: '2026-01-01T00:00:01Z', properties: { content_id: 'g2' } }, expected: { ok: true, interaction: { eventId: 'b', customerId: 'u', kind: 'video_complete', at: T0 + 1000, productId: 'g2' } } },
    { event: { id: 'c', user_id: 'u', event_type: 'purchase', ts: T0, properties: { product_id: 'g1', price: 18, quantity: 2 } }, expected: { ok: true, interaction: { eventId: 'c', customerId: 'u', kind: 'purchase', at: T0, productId: 'g1', price: 18, quantity: 2 } } },
    { event: { id: 'd', user_id: 'u', event_type: 'review_submitted', ts: T0, properties: { product_id: 'g1', rating: 1, text: 'bad' } }, expected: { ok: true, interaction: { eventId: 'd', customerId: 'u', kind: 'review_submitted', at: T0, productId: 'g1', rating: 1, text: 'bad' } } },
    { event: { id: 'e', user_id: 'u', event_type: 'failed_login', ts: T0, properties: {} }, expected: { ok: true, interaction: { eventId: 'e', customerId: 'u', kind: 'failed_login', at: T0 } } },
    { event: { id: 'f', user_id: 'u', event_type: 'video_pause', ts: T0 }, expected: { ok: false, reason: 'not_a_shop_event', eventType: 'video_pause' } },
    { event: { id: 'g', user_id: 'u', event_type: 'review_submitted', ts: T0, properties: { product_id: 'g1', rating: 6 } }, expected: { ok: false, reason: 'invalid', problem: 'review rating must be a whole number from 1 to 5, got 6' } },
    { event: { id: 'h', user_id: 'u', event_type: 'add_to_cart', ts: T0, properties: {} }, expected: { ok: false, reason: 'invalid', problem: 'add_to_cart without properties.product_id' } },
    { event: { id: 'i', user_id: 'u', event_type: 'product_view', ts: 'yesterday', properties: { product_id: 'g1' } }, expected: { ok: false, reason: 'invalid', problem: 'timestamp yesterday is not a time' } },
  ];
  for (const { event, expected } of cases) assert.deepEqual(interactionFromAppEvent(event), expected, event.id);
  assert.deepEqual(interactionFromAppEvent({ id: 'p', user_id: 'u', event_type: 'product_view', ts: T0, properties: { product_id: 'g1' } }, { source: 'part-3', sequence: 7 }), {
    ok: true,
    interaction: { eventId: 'p', customerId: 'u', kind: 'product_view', at: T0, productId: 'g1', position: { source: 'part-3', sequence: 7 } },
  });
});

interface ProfileCase {
  name: string;
  interactions: string[];
  /** Read at this many days after T0. */
  readAtDays?: number;
  expected: Partial<{ counts: Record<string, number>; lastActive: number; recent: string[]; ltv: number; purchases: number; purchased: string[]; disliked: string[]; categories: Array<[string, number]>; risk: number; segment: string }>;
}

const profileCases: ProfileCase[] = [
  {
    name: 'counts by type, recent items newest last and distinct, lifetime value from price x quantity',
    interactions: ['u view g1', 'u view g2 @1m', 'u view g1 @2m', 'u cart g1 @3m', 'u buy g1 @4m x2 $18', 'u buy g2 @5m'],
    expected: { counts: { product_view: 3, add_to_cart: 1, purchase: 2 }, lastActive: T0 + 5 * MINUTE, recent: ['g1', 'g2'], ltv: 2 * 18 + 15, purchases: 2, purchased: ['g1', 'g2'] },
  },
  {
    name: 'video events count as interactions with their content item; a failed login is counted but is not activity',
    interactions: ['u play g3', 'u complete g3', 'u failed_login @10m'],
    expected: { counts: { video_play: 1, video_complete: 1, failed_login: 1 }, lastActive: T0, recent: ['g3'], categories: [['garden', 1 + 2]] },
  },
  {
    name: 'category preferences decay with a 14-day half-life between events and to the reading time',
    interactions: ['u view g1', 'u buy b1 @14d'],
    readAtDays: 28,
    expected: { categories: [['books', 5 / 2], ['garden', 1 / 4]] },
  },
  {
    name: 'a review of 1-2 stars makes the item disliked and adds no preference; a later good review takes it back',
    interactions: ['u review g1 1*', 'u review g2 2*', 'u review g2 5*'],
    expected: { disliked: ['g1'], categories: [['garden', 3]], counts: { review_submitted: 3 } },
  },
  {
    name: 'a burst of 5 failed logins raises risk by 0+0.1+0.2+0.3+0.4 points: at risk',
    interactions: ['u view g1', ...Array.from({ length: 5 }, () => 'u failed_login')],
    expected: { risk: 1 - Math.exp(-1.0), segment: 'at_risk' },
  },
  {
    name: 'risk halves its points in a day: the same burst read a day later is no longer at risk',
    interactions: ['u view g1', ...Array.from({ length: 5 }, () => 'u failed_login')],
    readAtDays: 1,
    expected: { risk: 1 - Math.exp(-0.5), segment: 'new' },
  },
  {
    name: 'failed logins spread over days are no burst: no risk',
    interactions: ['u failed_login', 'u failed_login @1d', 'u failed_login @2d'],
    readAtDays: 2,
    // The 2nd and 3rd come 1 day = 288 burst half-lives after the one before: they add 0.1 x 2^-288, i.e. nothing.
    expected: { risk: 0, counts: { failed_login: 3 } },
  },
];

for (const c of profileCases) {
  test(`profile: ${c.name}`, () => {
    const world = new World().apply(...c.interactions.map((s) => ix(s)));
    const profile = world.profiles.get('u')!;
    const now = T0 + (c.readAtDays ?? 0) * DAY;
    const e = c.expected;
    if (e.counts) assert.deepEqual(profile.interactionCounts, e.counts);
    if (e.lastActive !== undefined) assert.equal(profile.lastActive, e.lastActive);
    if (e.recent) assert.deepEqual(profile.recentItems.map((r) => r.productId), e.recent);
    if (e.ltv !== undefined) near(profile.lifetimeValue, e.ltv, 'ltv');
    if (e.purchases !== undefined) assert.equal(profile.purchaseCount, e.purchases);
    if (e.purchased) assert.deepEqual(profile.purchasedItems, e.purchased);
    if (e.disliked) assert.deepEqual(profile.dislikedItems, e.disliked);
    if (e.categories) {
      const prefs = preferredCategories(profile, now, DEFAULT_POLICY);
      assert.deepEqual(prefs.map((p) => p.category), e.categories.map(([name]) => name));
      for (const [i, [, weight]] of e.categories.entries()) near(prefs[i]!.weight, weight, prefs[i]!.category);
    }
    if (e.risk !== undefined) near(riskScoreOf(profile, now, DEFAULT_POLICY), e.risk, 'risk');
    if (e.segment) assert.equal(segmentOf(profile, now, DEFAULT_POLICY), e.segment);
  });
}

test('segments: new for 14 days, then loyal (3 purchases, active), active, dormant after 30 days', () => {
  const world = new World().apply(ix('u buy g1'), ix('u buy g2'), ix('v view g1'));
  const [u, v] = [world.profiles.get('u')!, world.profiles.get('v')!];
  assert.equal(segmentOf(u, T0 + 13 * DAY, DEFAULT_POLICY), 'new');
  assert.equal(segmentOf(u, T0 + 15 * DAY, DEFAULT_POLICY), 'active');
  world.apply(ix('u buy g3 @15d'));
  assert.equal(segmentOf(world.profiles.get('u')!, T0 + 15 * DAY, DEFAULT_POLICY), 'loyal');
  assert.equal(segmentOf(world.profiles.get('u')!, T0 + 46 * DAY, DEFAULT_POLICY), 'dormant');
  assert.equal(segmentOf(v, T0 + 31 * DAY, DEFAULT_POLICY), 'dormant');
});

test('lazy decay: out-of-order amounts give the same value as in-order ones', () => {
  const h = 10;
  const inOrder = addDecayed(addDecayed({ value: 0, asOf: 0 }, 4, 100, h), 2, 120, h);
  const reordered = addDecayed(addDecayed({ value: 0, asOf: 0 }, 2, 120, h), 4, 100, h);
  near(decayedAt(inOrder, 130, h), decayedAt(reordered, 130, h));
  near(decayedAt(inOrder, 130, h), 4 / 8 + 2 / 2);
});

test('exactly once: an interaction applied twice, or one at or below the source high-water mark, changes nothing', () => {
  const view = ix('u view g1');
  const profile = newProfile('u', T0);
  assert.equal(applyInteraction(profile, view, CATALOGUE.get('g1'), DEFAULT_POLICY), true);
  const first = structuredClone(profile);
  assert.equal(applyInteraction(profile, view, CATALOGUE.get('g1'), DEFAULT_POLICY), false);
  assert.deepEqual(profile, first, 'a duplicate changes nothing');

  const at = (sequence: number, eventId: string): Interaction => ({ ...ix('u view g2'), eventId, position: { source: 'p0', sequence } });
  const p5 = newProfile('u', T0);
  applyInteraction(p5, at(5, 'x5'), undefined, DEFAULT_POLICY);
  assert.equal(applyInteraction(p5, at(4, 'x4'), undefined, DEFAULT_POLICY), false, 'below the mark: a replay');
  assert.equal(applyInteraction(p5, at(6, 'x6'), undefined, DEFAULT_POLICY), true);
  assert.equal(applyInteraction(p5, { ...at(9, 'x9'), position: { source: 'p1', sequence: 1 } }, undefined, DEFAULT_POLICY), true, 'marks are per source');

  const delta = planItemUpdates(undefined, view, DEFAULT_POLICY)[0]!;
  const stats = emptyItemStats('g1');
  assert.equal(applyItemDelta(stats, delta, view, DEFAULT_POLICY), true);
  const statsOnce = structuredClone(stats);
  assert.equal(applyItemDelta(stats, delta, view, DEFAULT_POLICY), false);
  assert.deepEqual(stats, statsOnce);
});

test('bounds: 100 recent items, category limit, ledger capacity', () => {
  const policy: RecommendationPolicy = { ...DEFAULT_POLICY, categoryLimit: 1, profileLedgerCapacity: 3 };
  const profile = newProfile('u', T0);
  for (let i = 0; i < 130; i++) applyInteraction(profile, { eventId: `v${i}`, customerId: 'u', kind: 'product_view', productId: `x${i}`, at: T0 + i }, undefined, policy);
  assert.equal(profile.recentItems.length, 100);
  assert.equal(profile.recentItems[0]!.productId, 'x30');
  assert.deepEqual(profile.applied.recentIds, ['v127', 'v128', 'v129']);

  applyInteraction(profile, ix('u buy b1 @1m'), CATALOGUE.get('b1'), policy);
  applyInteraction(profile, ix('u view g1 @2m'), CATALOGUE.get('g1'), policy);
  assert.deepEqual(Object.keys(profile.categoryPreferences), ['garden'], 'the newest category stays, the weakest other goes');
  applyInteraction(profile, { eventId: 'again', customerId: 'u', kind: 'product_view', productId: 'x50', at: T0 + 3 * MINUTE }, undefined, policy);
  assert.equal(profile.recentItems.at(-1)!.productId, 'x50', 'an item seen again moves to the end');
  assert.equal(profile.recentItems.length, 100, 'and is not in the list twice');
  applyInteraction(profile, ix('u buy b1 @4m'), CATALOGUE.get('b1'), policy);
  assert.deepEqual(profile.purchasedItems, ['b1'], 'purchased items are distinct');
  assert.equal(profile.purchaseCount, 2);
});

test('co-occurrence neighbours: bounded top-K with deterministic Space-Saving eviction', () => {
  const steps: Array<[string, number, string]> = [
    ['a', 3, 'a:3'],
    ['b', 1, 'a:3 b:1'],
    ['c', 1, 'a:3 b:1 c:1'],
    ['b', 2, 'a:3 b:3 c:1'], // equal weights rank by id
    ['d', 1, 'a:3 b:3 d:2'], // full: c (weakest) goes, d starts from c's 1 plus its own 1
    ['e', 1, 'a:3 b:3 e:3'], // d is weakest now
    ['f', 1, 'f:4 a:3 b:3'], // a, b and e tie at 3: e, last by id, is the weakest
  ];
  const neighbours: Neighbour[] = [];
  for (const [id, weight, expected] of steps) {
    addNeighbour(neighbours, id, weight, 3);
    assert.equal(neighbours.map((n) => `${n.productId}:${n.weight}`).join(' '), expected, `after ${id}+${weight}`);
  }
});

test('item updates: an interaction links to at most 5 recent items of the last 7 days; a 1-star review links nothing', () => {
  const world = new World();
  for (let i = 0; i < 12; i++) world.apply({ eventId: `w${i}`, customerId: 'u', kind: 'product_view', productId: `x${i}`, at: T0 + i * MINUTE });
  world.apply(ix('u view b1 @8d'));
  const profile = world.profiles.get('u')!;
  const cart = ix('u cart g1 @1m');
  const deltas = planItemUpdates(profile, cart, DEFAULT_POLICY);
  assert.deepEqual(deltas.map((d) => `${d.productId} +${d.popularity} [${d.neighbours.map((n) => `${n.productId}:${n.weight}`).join(' ')}]`), [
    'g1 +3 [b1:3 x11:3 x10:3 x9:3 x8:3]',
    'b1 +0 [g1:3]', 'x11 +0 [g1:3]', 'x10 +0 [g1:3]', 'x9 +0 [g1:3]', 'x8 +0 [g1:3]',
  ]);
  const late = ix('u view g2 @10d');
  assert.deepEqual(planItemUpdates(profile, late, DEFAULT_POLICY).map((d) => d.neighbours.map((n) => n.productId)), [['b1'], ['g2']], 'x* are older than 7 days');
  const afterDislike = structuredClone(profile);
  applyInteraction(afterDislike, ix('u review b1 1* @8d'), CATALOGUE.get('b1'), DEFAULT_POLICY);
  assert.deepEqual(planItemUpdates(afterDislike, late, DEFAULT_POLICY), [{ productId: 'g2', popularity: 1, neighbours: [] }], 'a disliked item links to nothing');
  assert.deepEqual(planItemUpdates(profile, ix('u review g1 1*'), DEFAULT_POLICY), [{ productId: 'g1', popularity: 0, neighbours: [], rating: 1 }]);
});

test('category boards: newest value wins, writes are idempotent, size is bounded', () => {
  const policy = { ...DEFAULT_POLICY, categoryBoardSize: 2 };
  const board = emptyCategoryBoard('garden');
  upsertCategoryBoard(board, 'g1', { value: 5, asOf: 10 }, policy);
  upsertCategoryBoard(board, 'g1', { value: 1, asOf: 5 }, policy);
  assert.deepEqual(board.entries, [{ productId: 'g1', popularity: { value: 5, asOf: 10 } }], 'an older value does not overwrite');
  upsertCategoryBoard(board, 'g2', { value: 3, asOf: 10 }, policy);
  const once = structuredClone(board);
  upsertCategoryBoard(board, 'g2', { value: 3, asOf: 10 }, policy);
  assert.deepEqual(board, once);
  upsertCategoryBoard(board, 'g3', { value: 4, asOf: 10 }, policy);
  upsertCategoryBoard(board, 'g4', { value: 1, asOf: 10 }, policy);
  assert.equal(board.entries.length, 4, 'up to twice the size before a trim');
  upsertCategoryBoard(board, 'g5', { value: 2, asOf: 10 }, policy);
  assert.deepEqual(board.entries.map((e) => e.productId), ['g1', 'g3'], 'past it, the strongest two stay');
  upsertCategoryBoard(board, 'g6', { value: 1, asOf: 10 + 7 * DAY }, policy);
  upsertCategoryBoard(board, 'g7', { value: 3, asOf: 10 + 7 * DAY }, policy);
  upsertCategoryBoard(board, 'g8', { value: 0.1, asOf: 10 + 7 * DAY }, policy);
  assert.deepEqual(board.entries.map((e) => e.productId), ['g7', 'g1'], 'strength compares decayed values: a week later g7 is 3, g1 2.5 (5 halved), g3 2');
});

/**
 * The shared shop for ranking: g1 is engaged with together with g2 (by u1 and u3, u1 bought it) and with g3 (u2).
 * Co-occurrence of g1: g2 = 1 + 5 + 1 = 7, g3 = 1. Popularity: g2 7, g1 3 (+1 per extra viewer), g3 1, b1 1.
 */
function shop(): World {
  return new World().apply(ix('u1 view g1'), ix('u1 view g2'), ix('u1 buy g2'), ix('u2 view g1'), ix('u2 view g3'), ix('u3 view g1'), ix('u3 view g2'), ix('u4 view b1'));
}

test('ranking: co-occurrence first, then category popularity, each with its reason and exact score', () => {
  const world = shop().apply(ix('t view g1'));
  // g2: 7/8 co-occurrence + 0.3 * (1 * 7/7) + 0.05 * 7/7; g1: 0.3 * 4/7 + 0.05 * 4/7; g3: 1/8 + 0.35 * 1/7; b1: 0.05 * 1/7
  assert.deepEqual(world.brief('t'), [
    `g2 ${(7 / 8 + 0.35).toFixed(4)} also_engaged<g1`,
    `g1 ${(0.35 * 4 / 7).toFixed(4)} preferred_category`,
    `g3 ${(1 / 8 + 0.35 / 7).toFixed(4)} also_engaged<g1`,
    `b1 ${(0.05 / 7).toFixed(4)} popular`,
  ]);
  assert.equal(world.recommend('t')[0]!.reason.text, 'Customers who engaged with Spade also engaged with Rake');
});

test('ranking: purchased items are excluded, and explain says why', () => {
  const world = shop();
  assert.deepEqual(world.recommend('u1').map((r) => r.productId), ['g1', 'g3', 'b1']);
  const explanation = world.service.explain(world.inputs('u1', T0), CATALOGUE.get('g2')!);
  assert.equal(explanation.excluded, 'already_purchased');
});

test('ranking: cold start falls back to popularity in the customer category, then in the whole shop', () => {
  const world = shop().apply(ix('c1 failed_login'), ix('c2 view b2'));
  const oneView = (0.05 / 7).toFixed(4);
  assert.deepEqual(world.brief('c1'), [`g2 ${(0.05).toFixed(4)} popular`, `g1 ${(0.05 * 3 / 7).toFixed(4)} popular`, `b1 ${oneView} popular`, `b2 ${oneView} popular`, `g3 ${oneView} popular`]);
  // c2 likes books: b1 (popular in books) comes first, then b2 itself; garden only by shop popularity.
  assert.deepEqual(world.recommend('c2').map((r) => `${r.productId} ${r.reason.kind}`), ['b1 preferred_category', 'b2 preferred_category', 'g2 popular', 'g1 popular', 'g3 popular']);
});

test('ranking: a 1-star review pushes the item down for everyone, and the item and its neighbours for the reviewer', () => {
  const before = shop().apply(ix('t view g1'), ix('d view g1'));
  const after = shop().apply(ix('t view g1'), ix('d view g1'), ix('d review g2 1*'));
  const rating = (1 + 3.5 * 3) / 4 / 3.5;
  const score = (w: World, who: string, id: string) => w.recommend(who).find((r) => r.productId === id)?.score ?? NaN;
  near(score(after, 't', 'g2'), score(before, 't', 'g2') * rating, 'everyone: rating factor');
  assert.equal(after.recommend('t')[0]!.productId, 'g2', 'one bad review does not bury it for others');
  // The reviewer: g2 x rating x 0.1 (disliked); g1 x 0.5 (a neighbour of g2); g3 untouched.
  const explained = after.service.explain(after.inputs('d', T0), CATALOGUE.get('g1')!);
  assert.equal(explained.components.dislikeFactor, 0.5, 'g1 is a co-occurrence neighbour of the disliked g2');
  near(score(after, 'd', 'g2'), score(before, 'd', 'g2') * rating * 0.1, 'disliked item');
  near(score(after, 'd', 'g1'), score(before, 'd', 'g1') * 0.5, 'neighbour of the disliked item');
  near(score(after, 'd', 'g3'), score(before, 'd', 'g3'), 'not related to the disliked item');
  assert.deepEqual(after.recommend('d').map((r) => r.productId), ['g3', 'g1', 'g2', 'b1']);
  assert.deepEqual(before.recommend('d').map((r) => r.productId), ['g2', 'g1', 'g3', 'b1']);
});

test('ranking decays with the injected clock: old co-occurrence seeds and old categories fade', () => {
  const world = shop().apply(ix('t view g1'), ix('t view b2 @6d'));
  const now = T0 + 6 * DAY;
  // g1 was seen 6 days ago (2 half-lives of 3 days: recency 1/4); its neighbours are now g2 7, g3 1 and b2 1 (t).
  const g2 = world.recommend('t', now).find((r) => r.productId === 'g2')!;
  near(g2.components.coOccurrence, 7 / 9 / 4, 'recency of the seed');
  const books = preferredCategories(world.profiles.get('t')!, now, DEFAULT_POLICY);
  assert.deepEqual(books.map((p) => p.category), ['books', 'garden']);
  near(books[1]!.weight, Math.pow(2, -6 / 14), 'garden after 6 of 14 days');
});

test('enrichment: category and price from the catalogue unless the event has a price; segment from the profile', () => {
  const world = shop();
  assert.deepEqual(enrich(ix('u1 view g1 $17'), CATALOGUE.get('g1'), world.profiles.get('u1'), DEFAULT_POLICY), { category: 'garden', price: 17, segment: 'new' });
  assert.deepEqual(enrich(ix('zz view nope @20d'), undefined, undefined, DEFAULT_POLICY), { category: null, price: null, segment: 'new' });
  assert.deepEqual(enrich(ix('u1 view g3 @20d'), CATALOGUE.get('g3'), world.profiles.get('u1'), DEFAULT_POLICY), { category: 'garden', price: 30, segment: 'active' });
});
