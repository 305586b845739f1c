/**
 * The product catalogue: read from a file at start (JSON array or NDJSON of `{ id, name, category, price }`) and from
 * the KV bucket `recs-catalogue` (key `p.<product>`, JSON value), which is watched, so a product added or repriced
 * there is seen by every hub at once; a KV entry wins over the file's. Products that fail the checks are logged and
 * skipped, never half-used.
 */
import { readFileSync } from 'node:fs';
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { Logger } from '../../../../shared/logger.js';
import type { Catalogue } from '../application/ports.js';
import type { Product } from '../domain/index.js';
import { idOfToken, keyToken, watchBucket } from './kv-state.js';

export function productProblems(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return ['a product must be an object'];
  const p = value as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof p.id !== 'string' || p.id.length === 0 || p.id.length > 128) problems.push('id must be a string of 1-128 characters');
  if (typeof p.name !== 'string' || p.name.length === 0) problems.push('name must be a non-empty string');
  if (typeof p.category !== 'string' || p.category.length === 0 || p.category.length > 64) problems.push('category must be a string of 1-64 characters');
  if (typeof p.price !== 'number' || !Number.isFinite(p.price) || p.price < 0) problems.push('price must be a number >= 0');
  return problems;
}

/** Products of a JSON array or NDJSON text; bad entries are returned with their problems. */
export function parseCatalogue(text: string): { products: Product[]; refused: Array<{ line: number; problems: string[] }> } {
  const trimmed = text.trim();
  const values: unknown[] = trimmed.startsWith('[') ? (JSON.parse(trimmed) as unknown[]) : trimmed.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as unknown);
  const products: Product[] = [];
  const refused: Array<{ line: number; problems: string[] }> = [];
  values.forEach((value, i) => {
    const problems = productProblems(value);
    if (problems.length > 0) refused.push({ line: i + 1, problems });
    else {
      const p = value as Product;
      products.push({ id: p.id, name: p.name, category: p.category, price: p.price });
    }
  });
  return { products, refused };
}

export const catalogueKey = (productId: string): string => `p.${keyToken(productId)}`;

export class CatalogueStore implements Catalogue {
  private readonly fromFile = new Map<string, Product>();
  private readonly fromKv = new Map<string, Product>();
  private byCategory: Map<string, Product[]> | undefined;
  private stopWatch: (() => void) | undefined;

  constructor(
    private readonly kv: KV,
    private readonly log: Logger,
  ) {}

  loadFile(path: string): number {
    const { products, refused } = parseCatalogue(readFileSync(path, 'utf8'));
    for (const r of refused) this.log.warn({ file: path, entry: r.line, problems: r.problems }, 'catalogue entry refused');
    for (const p of products) this.fromFile.set(p.id, p);
    this.byCategory = undefined;
    return products.length;
  }

  /** Watches the KV bucket; resolves once its current products are in. */
  async start(): Promise<void> {
    this.stopWatch = await watchBucket(this.kv, (entry) => this.onEntry(entry), this.log);
  }

  private onEntry(entry: KvWatchEntry): void {
    if (!entry.key.startsWith('p.')) return;
    const id = idOfToken(entry.key.slice(2));
    this.byCategory = undefined;
    if (entry.operation !== 'PUT' || entry.length === 0) {
      this.fromKv.delete(id);
      return;
    }
    let value: unknown;
    try {
      value = entry.json<unknown>();
    } catch {
      value = undefined;
    }
    const problems = productProblems(value);
    if (problems.length > 0) this.log.warn({ key: entry.key, problems }, 'catalogue entry in KV refused');
    else this.fromKv.set(id, value as Product);
  }

  stop(): void {
    this.stopWatch?.();
  }

  /** Puts products into the KV bucket (every hub sees them). */
  async publish(products: readonly Product[]): Promise<void> {
    for (const p of products) await this.kv.put(catalogueKey(p.id), JSON.stringify(p));
  }

  size(): number {
    return new Set([...this.fromFile.keys(), ...this.fromKv.keys()]).size;
  }

  /** The product with this id, the KV bucket's entry before the file's. */
  product(id: string): Product | undefined {
    return this.fromKv.get(id) ?? this.fromFile.get(id);
  }

  async products(productIds: readonly string[]): Promise<Map<string, Product>> {
    const found = new Map<string, Product>();
    for (const id of productIds) {
      const p = this.product(id);
      if (p) found.set(id, p);
    }
    return found;
  }

  async productsInCategory(category: string): Promise<Product[]> {
    if (!this.byCategory) {
      this.byCategory = new Map();
      for (const id of new Set([...this.fromFile.keys(), ...this.fromKv.keys()])) {
        const p = this.product(id)!;
        const list = this.byCategory.get(p.category) ?? [];
        list.push(p);
        this.byCategory.set(p.category, list);
      }
    }
    return this.byCategory.get(category) ?? [];
  }
}
