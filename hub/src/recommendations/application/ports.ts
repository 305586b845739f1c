/**
 * What the use cases need from the outside world, as small interfaces. Everything is async because the production
 * stores are NATS KV buckets; an implementation with an in-memory cache resolves reads at once.
 *
 * Writers: all events of one customer come through one partition (app events are partitioned by user_id), so a
 * profile has a single writer and a plain put is enough. Item statistics and category boards are shared by every
 * partition, so they are changed through `update(key, change)`: the store reads, applies `change`, and writes with
 * compare-and-set (KV revision), calling `change` again on a conflict. `change` may update the value it is given in
 * place and returns the value to store; it is idempotent by design (item stats carry their applied-events ledger,
 * boards are set-not-add), so calling it again is always safe.
 *
 * The use cases change what `get` returned (a profile) and then `put` it: a store that serialises values copies them
 * on the way in and out; the write side's cache hands out its own records, so the change costs no copy.
 */
import type { CategoryPopularity, CustomerProfile, ItemStats, Product } from '../domain/index.js';

export interface CustomerProfileRepository {
  get(customerId: string): Promise<CustomerProfile | undefined>;
  put(profile: CustomerProfile): Promise<void>;
}

export interface ItemStatsRepository {
  getItems(productIds: readonly string[]): Promise<Map<string, ItemStats>>;
  /** Read-modify-write of one item; `change` may run more than once. Resolves to what was stored. */
  updateItem(productId: string, change: (current: ItemStats | undefined) => ItemStats): Promise<ItemStats>;
  /** Category boards; ALL_CATEGORIES ('*') is the board of the whole shop. */
  getCategories(categories: readonly string[]): Promise<Map<string, CategoryPopularity>>;
  updateCategory(category: string, change: (current: CategoryPopularity | undefined) => CategoryPopularity): Promise<CategoryPopularity>;
}

export interface Catalogue {
  products(productIds: readonly string[]): Promise<Map<string, Product>>;
  productsInCategory(category: string): Promise<Product[]>;
}

export interface Clock {
  /** Epoch ms. */
  now(): number;
}
