/**
 * Catalogue enrichment for the window and pattern rules (hub config `analytics.catalogueEnrichment`). Before a batch
 * reaches the operators, every app event about a product (`properties.product_id`, or `content_id` for videos) whose
 * id the catalogue knows gets `product: { id, name, category, price }` in its body, so a rule can filter, key and
 * aggregate by it like any body field:
 *
 *   where: { event_type: purchase, product.category: garden }     keyBy: product.category     field: product.price
 *
 * What a rule sees is the catalogue as it stands when the event is processed: a replay after a catalogue change sees
 * the new entry. The customer's segment is not added here: it comes from the profile, which changes with every event
 * and lives on the recommendations' partition owner, so a replay could not reproduce it; the rows of
 * `shop_interactions` carry it (computed in order, with the event, by that owner).
 */
import type { EventBatch } from '../../../../shared/wire.js';
import type { Product } from '../domain/index.js';

export interface ProductLookup {
  product(id: string): Product | undefined;
}

/** Enriches a batch in place; returns how many events got a product. */
export function catalogueEnricher(catalogue: ProductLookup): (batch: EventBatch) => number {
  return (batch) => {
    let enriched = 0;
    for (const event of batch.events) {
      if (event.type !== 'app.event') continue;
      const properties = event.body.properties;
      if (typeof properties !== 'object' || properties === null) continue;
      const { product_id: productId, content_id: contentId } = properties as Record<string, unknown>;
      const id = typeof productId === 'string' ? productId : typeof contentId === 'string' ? contentId : undefined;
      const product = id === undefined ? undefined : catalogue.product(id);
      if (!product) continue;
      event.body.product = { id: product.id, name: product.name, category: product.category, price: product.price };
      enriched++;
    }
    return enriched;
  };
}
