/** The catalogue enrichment the rules see: app events about a known product get `product`, others stay as they are. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { catalogueEnricher } from '../../hub/src/recommendations/infrastructure/catalogue-enricher.js';
import type { Product } from '../../hub/src/recommendations/domain/index.js';
import { bodyField, keyOf, matchesFilter } from '../../hub/src/operators/index.js';
import type { EventBatch, WireEvent } from '../../shared/wire.js';

const products = new Map<string, Product>([
  ['g1', { id: 'g1', name: 'Rake', category: 'garden', price: 12.5 }],
  ['v1', { id: 'v1', name: 'Trailer', category: 'video', price: 0 }],
]);
const enrich = catalogueEnricher({ product: (id) => products.get(id) });

function app(id: string, properties: Record<string, unknown> | undefined, type = 'app.event'): WireEvent {
  return { id, type, key: 'u1', ts: 1_700_000_000_000_000, body: { user_id: 'u1', event_type: 'purchase', ...(properties ? { properties } : {}) }, sv: 1, its: 0, src: 'test' } as unknown as WireEvent;
}

test('events about a known product get product: id, name, category, price; the rules read it as a body field', () => {
  const batch = { events: [app('a', { product_id: 'g1', price: 10 }), app('b', { content_id: 'v1' }), app('c', { product_id: 'unknown' }), app('d', undefined), app('e', { product_id: 'g1' }, 'sensor.reading')] } as EventBatch;
  assert.equal(enrich(batch), 2);
  const [a, b, c, d, e] = batch.events;
  assert.deepEqual(a!.body.product, { id: 'g1', name: 'Rake', category: 'garden', price: 12.5 });
  assert.equal(a!.body.properties && (a!.body.properties as { price: number }).price, 10, "the event's own fields are left as they are");
  assert.equal(bodyField(b!, 'product.category'), 'video', 'content_id counts like product_id');
  assert.equal(c!.body.product, undefined, 'an id the catalogue does not know adds nothing');
  assert.equal(d!.body.product, undefined);
  assert.equal(e!.body.product, undefined, 'only app events');
  assert.ok(matchesFilter(a!, { eventType: 'app.event', where: { 'product.category': 'garden' } }));
  assert.equal(keyOf(a!, ['product.category', 'event_type']), 'garden|purchase');
});
