/**
 * A shop with shoppers of planted tastes, as app events (schemas/app.event/v1.json): a seeded catalogue of products
 * in categories, grouped into bundles of items bought together; shoppers who each prefer one or two categories and,
 * session by session, browse a bundle of one of them (views, some add_to_cart, some purchases, product videos,
 * reviews). A few products are lemons that collect 1-2 star reviews; a few shoppers suffer failed_login bursts.
 * Deterministic: the same options give the same catalogue and the same events, in time order.
 *
 *   npx tsx simulators/shop.ts --shoppers 200 --seed 1                 NDJSON on stdout
 *   npx tsx simulators/shop.ts --shoppers 200 --url http://127.0.0.1:8080/v1/events   posted in batches
 */
import { pathToFileURL } from 'node:url';
import { numericFlags } from './lib/cli.js';
import { pick, seededRandom } from './lib/random.js';

export interface ShopOptions {
  seed: number;
  products: number;
  categories: number;
  shoppers: number;
  /** Sessions per shopper, drawn from [min, max]. */
  sessionsMin: number;
  sessionsMax: number;
  /** Items per bundle. */
  bundleSize: number;
  /** Share of sessions spent outside the shopper's planted categories (noise). */
  strayShare: number;
  /** Share of products that are lemons (reviewed with 1-2 stars). */
  lemonShare: number;
  /** Share of shoppers who get a burst of failed logins. */
  failedLoginShare: number;
  /** Event time of the first session, epoch ms, and how many days the sessions spread over. */
  startAt: number;
  days: number;
  prefix: string;
}

export const DEFAULT_SHOP_OPTIONS: ShopOptions = {
  seed: 1,
  products: 500,
  categories: 12,
  shoppers: 300,
  sessionsMin: 4,
  sessionsMax: 12,
  bundleSize: 5,
  strayShare: 0.1,
  lemonShare: 0.05,
  failedLoginShare: 0.05,
  startAt: Date.UTC(2026, 0, 1),
  days: 60,
  prefix: 'shop',
};

export interface ShopProduct {
  id: string;
  name: string;
  category: string;
  price: number;
}

export interface Shopper {
  userId: string;
  /** Planted tastes: preferred categories, with the share of sessions each gets. */
  categories: Array<{ category: string; share: number }>;
}

export interface ShopEvent {
  event_id: string;
  event_type: 'product_view' | 'add_to_cart' | 'purchase' | 'review_submitted' | 'failed_login' | 'video_play' | 'video_complete';
  user_id: string;
  session_id: string;
  timestamp: string;
  properties: Record<string, string | number>;
  context: { device_type: string; location: string };
}

export interface ShopWorld {
  catalogue: ShopProduct[];
  /** Product ids per bundle; every bundle lies in one category. */
  bundles: string[][];
  lemons: Set<string>;
  shoppers: Shopper[];
  /** In time order (ties by event id). */
  events: ShopEvent[];
}

const CATEGORY_NAMES = ['electronics', 'books', 'garden', 'kitchen', 'toys', 'sports', 'beauty', 'fashion', 'music', 'games', 'pets', 'office', 'outdoor', 'baby', 'auto', 'health'];
const ADJECTIVES = ['classic', 'smart', 'compact', 'deluxe', 'eco', 'pro', 'mini', 'family', 'travel', 'vintage'];
const DEVICE_TYPES = ['mobile', 'web', 'tablet'];
const LOCATIONS = ['DE', 'FR', 'US', 'BR', 'JP', 'IN'];
const GOOD_REVIEWS = ['Great value', 'Exactly as described', 'Would buy again', 'Works well'];
const BAD_REVIEWS = ['Broke after a week', 'Not as described', 'Waste of money'];

/** Index drawn with probability proportional to `weights`. */
function weighted(random: () => number, weights: readonly number[]): number {
  const total = weights.reduce((a, b) => a + b, 0);
  let r = random() * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]!;
    if (r < 0) return i;
  }
  return weights.length - 1;
}

function shuffled<T>(random: () => number, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export function generateShop(overrides: Partial<ShopOptions> = {}): ShopWorld {
  const o = { ...DEFAULT_SHOP_OPTIONS, ...overrides };
  const random = seededRandom(o.seed);
  const categories = Array.from({ length: o.categories }, (_, i) => CATEGORY_NAMES[i] ?? `category-${i}`);

  const catalogue: ShopProduct[] = [];
  for (let i = 0; i < o.products; i++) {
    const category = categories[i % categories.length]!;
    const basePrice = 5 + (categories.indexOf(category) % 6) * 15;
    catalogue.push({ id: `p-${String(i).padStart(4, '0')}`, name: `${pick(random, ADJECTIVES)} ${category} item ${i}`, category, price: Math.round(basePrice * Math.exp(random() - 0.5) * 100) / 100 });
  }
  const byId = new Map(catalogue.map((p) => [p.id, p]));
  const lemons = new Set(catalogue.filter(() => random() < o.lemonShare).map((p) => p.id));

  // Bundles per category, with Zipf-like weights: a few bundles are far more popular than the rest, so the
  // popularity baseline has something to find too.
  const bundles: string[][] = [];
  const bundlesOf = new Map<string, number[]>();
  for (const category of categories) {
    const ids = shuffled(random, catalogue.filter((p) => p.category === category).map((p) => p.id));
    for (let i = 0; i < ids.length; i += o.bundleSize) {
      bundlesOf.set(category, [...(bundlesOf.get(category) ?? []), bundles.length]);
      bundles.push(ids.slice(i, i + o.bundleSize));
    }
  }
  const bundleWeight = (rank: number) => 1 / (rank + 1);
  const categoryWeights = categories.map((_, i) => 1 / Math.sqrt(i + 1));

  const shoppers: Shopper[] = [];
  const events: ShopEvent[] = [];
  let n = 0;
  for (let s = 0; s < o.shoppers; s++) {
    const userId = `${o.prefix}-user-${s}`;
    const first = categories[weighted(random, categoryWeights)]!;
    let second = categories[weighted(random, categoryWeights)]!;
    const tastes = random() < 0.5 || second === first ? [{ category: first, share: 1 }] : [{ category: first, share: 0.65 }, { category: second, share: 0.35 }];
    shoppers.push({ userId, categories: tastes });
    const context = { device_type: pick(random, DEVICE_TYPES), location: pick(random, LOCATIONS) };
    const emit = (type: ShopEvent['event_type'], at: number, session: string, properties: ShopEvent['properties']) =>
      events.push({ event_id: `${o.prefix}-${n++}`, event_type: type, user_id: userId, session_id: session, timestamp: new Date(at).toISOString(), properties, context });

    const sessions = o.sessionsMin + Math.floor(random() * (o.sessionsMax - o.sessionsMin + 1));
    const sessionStarts = Array.from({ length: sessions }, () => o.startAt + Math.floor(random() * o.days * 86_400_000)).sort((a, b) => a - b);
    const purchased = new Set<string>();
    for (const [k, start] of sessionStarts.entries()) {
      const session = `${userId}-s${k}`;
      let at = start;
      const step = () => (at += 10_000 + Math.floor(random() * 110_000));
      const category = random() < o.strayShare ? pick(random, categories) : tastes[weighted(random, tastes.map((t) => t.share))]!.category;
      const inCategory = bundlesOf.get(category)!;
      const bundle = bundles[inCategory[weighted(random, inCategory.map((_, rank) => bundleWeight(rank)))]!]!;
      const browsed = shuffled(random, bundle).slice(0, 2 + Math.floor(random() * 3));
      if (random() < 0.15) {
        emit('video_play', step(), session, { content_id: browsed[0]! });
        if (random() < 0.6) emit('video_complete', step(), session, { content_id: browsed[0]! });
      }
      const carted: string[] = [];
      for (const id of browsed) {
        emit('product_view', step(), session, { product_id: id, price: byId.get(id)!.price });
        if (random() < 0.3) {
          emit('add_to_cart', step(), session, { product_id: id, price: byId.get(id)!.price, quantity: 1 });
          carted.push(id);
        }
      }
      for (const id of carted) {
        if (random() >= 0.5 || purchased.has(id)) continue;
        const quantity = random() < 0.8 ? 1 : 2;
        emit('purchase', step(), session, { product_id: id, price: byId.get(id)!.price, quantity });
        purchased.add(id);
        if (random() < 0.3 || lemons.has(id)) {
          const rating = lemons.has(id) ? 1 + Math.floor(random() * 2) : 4 + Math.floor(random() * 2);
          emit('review_submitted', step(), session, { product_id: id, rating, text: pick(random, rating <= 2 ? BAD_REVIEWS : GOOD_REVIEWS) });
        }
      }
    }
    if (random() < o.failedLoginShare) {
      let at = o.startAt + Math.floor(random() * o.days * 86_400_000);
      const burst = 3 + Math.floor(random() * 4);
      for (let b = 0; b < burst; b++) emit('failed_login', (at += 2_000 + Math.floor(random() * 8_000)), `${userId}-attack`, { reason: 'bad_password' });
    }
  }
  events.sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : Number(a.event_id.slice(o.prefix.length + 1)) - Number(b.event_id.slice(o.prefix.length + 1))));
  return { catalogue, bundles, lemons, shoppers, events };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const flags = numericFlags(
    { url: '', shoppers: DEFAULT_SHOP_OPTIONS.shoppers, products: DEFAULT_SHOP_OPTIONS.products, categories: DEFAULT_SHOP_OPTIONS.categories, days: DEFAULT_SHOP_OPTIONS.days, seed: 1, prefix: 'shop', batch: 200 },
    'A simulated shop: app events of shoppers with planted tastes, as NDJSON on stdout or posted to --url.',
  );
  const world = generateShop({ shoppers: flags.shoppers, products: flags.products, categories: flags.categories, days: flags.days, seed: flags.seed, prefix: flags.prefix });
  if (!flags.url) {
    for (const event of world.events) process.stdout.write(`${JSON.stringify(event)}\n`);
  } else {
    let accepted = 0;
    for (let i = 0; i < world.events.length; i += flags.batch) {
      const body = world.events.slice(i, i + flags.batch).map((e) => JSON.stringify(e)).join('\n');
      const response = await fetch(flags.url, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
      if (!response.ok) throw new Error(`POST ${flags.url}: HTTP ${response.status}`);
      accepted += ((await response.json()) as { accepted: number }).accepted;
    }
    process.stderr.write(`sent ${world.events.length} events of ${world.shoppers.length} shoppers, accepted ${accepted}\n`);
  }
}
