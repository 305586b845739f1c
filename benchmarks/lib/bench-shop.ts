/** The simulated shop the recommendation benchmarks share (simulators/shop.ts): 12 categories, 30 days ending now. */
import { generateShop, type ShopWorld } from '../../simulators/shop.js';

export const BENCH_SHOP_DAYS = 30;

export function benchmarkShop(options: { shoppers: number; products: number; prefix?: string }): ShopWorld {
  return generateShop({
    seed: 11,
    shoppers: options.shoppers,
    products: options.products,
    categories: 12,
    sessionsMin: 2,
    sessionsMax: 5,
    ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
    startAt: Date.now() - BENCH_SHOP_DAYS * 86_400_000 - 3_600_000,
    days: BENCH_SHOP_DAYS,
  });
}
