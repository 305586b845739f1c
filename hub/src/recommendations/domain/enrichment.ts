/** Columns added to a shop event's row: what the catalogue and the customer's profile say about it. Pure. */
import { segmentOf, type CustomerProfile, type Segment } from './customer-profile.js';
import type { Interaction } from './interaction.js';
import type { RecommendationPolicy } from './policy.js';
import type { Product } from './product.js';

export interface Enrichment {
  /** Null when the item is not in the catalogue (or the event has no item). */
  category: string | null;
  /** Price the event carries, else the catalogue's; null when neither has one. */
  price: number | null;
  /** The customer's segment at the event's time; 'new' when there is no profile yet. */
  segment: Segment;
}

export function enrich(interaction: Interaction, product: Product | undefined, profile: CustomerProfile | undefined, policy: RecommendationPolicy): Enrichment {
  return {
    category: product?.category ?? null,
    price: interaction.price ?? product?.price ?? null,
    segment: profile ? segmentOf(profile, interaction.at, policy) : 'new',
  };
}
