/**
 * In-memory ports for tests and the offline benchmark. By default values are copied in and out (structuredClone), as
 * a real store would serialise them; the offline benchmark turns copying off for speed and then behaves like the
 * write side's cache (partition-state.ts), whose records the use cases change in place.
 */
import type { CategoryPopularity, CustomerProfile, ItemStats, Product } from '../domain/index.js';
import type { Catalogue, Clock, CustomerProfileRepository, ItemStatsRepository } from './ports.js';

function copier(copy: boolean): <T>(value: T) => T {
  return copy ? (value) => structuredClone(value) : (value) => value;
}

export class InMemoryProfiles implements CustomerProfileRepository {
  readonly byId = new Map<string, CustomerProfile>();
  private readonly copy: <T>(value: T) => T;
  constructor(options: { copy?: boolean } = {}) {
    this.copy = copier(options.copy ?? true);
  }
  async get(customerId: string): Promise<CustomerProfile | undefined> {
    const profile = this.byId.get(customerId);
    return profile && this.copy(profile);
  }
  async put(profile: CustomerProfile): Promise<void> {
    this.byId.set(profile.customerId, this.copy(profile));
  }
}

export class InMemoryItemStats implements ItemStatsRepository {
  readonly items = new Map<string, ItemStats>();
  readonly categories = new Map<string, CategoryPopularity>();
  private readonly copy: <T>(value: T) => T;
  constructor(options: { copy?: boolean } = {}) {
    this.copy = copier(options.copy ?? true);
  }
  async getItems(productIds: readonly string[]): Promise<Map<string, ItemStats>> {
    const found = new Map<string, ItemStats>();
    for (const id of productIds) {
      const stats = this.items.get(id);
      if (stats) found.set(id, this.copy(stats));
    }
    return found;
  }
  async updateItem(productId: string, change: (current: ItemStats | undefined) => ItemStats): Promise<ItemStats> {
    const current = this.items.get(productId);
    const next = change(current && this.copy(current));
    this.items.set(productId, this.copy(next));
    return next;
  }
  async getCategories(categories: readonly string[]): Promise<Map<string, CategoryPopularity>> {
    const found = new Map<string, CategoryPopularity>();
    for (const category of categories) {
      const board = this.categories.get(category);
      if (board) found.set(category, this.copy(board));
    }
    return found;
  }
  async updateCategory(category: string, change: (current: CategoryPopularity | undefined) => CategoryPopularity): Promise<CategoryPopularity> {
    const current = this.categories.get(category);
    const next = change(current && this.copy(current));
    this.categories.set(category, this.copy(next));
    return next;
  }
}

export class InMemoryCatalogue implements Catalogue {
  private readonly byId = new Map<string, Product>();
  constructor(products: readonly Product[] = []) {
    for (const p of products) this.byId.set(p.id, { ...p });
  }
  async products(productIds: readonly string[]): Promise<Map<string, Product>> {
    const found = new Map<string, Product>();
    for (const id of productIds) {
      const product = this.byId.get(id);
      if (product) found.set(id, { ...product });
    }
    return found;
  }
  async productsInCategory(category: string): Promise<Product[]> {
    return [...this.byId.values()].filter((p) => p.category === category).map((p) => ({ ...p }));
  }
}

/** A clock the test moves by hand. */
export class ManualClock implements Clock {
  constructor(private current: number) {}
  now(): number {
    return this.current;
  }
  set(at: number): void {
    this.current = at;
  }
  advance(ms: number): void {
    this.current += ms;
  }
}

/** All four ports in memory, wired into one bundle. */
export function inMemoryPorts(products: readonly Product[], startAt: number, options: { copy?: boolean } = {}) {
  return { profiles: new InMemoryProfiles(options), itemStats: new InMemoryItemStats(options), catalogue: new InMemoryCatalogue(products), clock: new ManualClock(startAt) };
}
