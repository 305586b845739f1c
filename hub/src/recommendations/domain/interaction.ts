/**
 * An interaction: one shop event as the recommendation domain sees it, and the pure mapping from an app event
 * (schemas/app.event/v1.json) to it. Anything that is not a shop event maps to a "not a shop event" result rather than
 * an error, because the same stream carries every other app event too.
 */
import type { EventPosition } from './applied-events.js';
import { isValidRating } from './product.js';

export const ITEM_INTERACTION_KINDS = ['product_view', 'add_to_cart', 'purchase', 'review_submitted', 'video_play', 'video_complete'] as const;
export const INTERACTION_KINDS = [...ITEM_INTERACTION_KINDS, 'failed_login'] as const;

export type ItemInteractionKind = (typeof ITEM_INTERACTION_KINDS)[number];
export type InteractionKind = (typeof INTERACTION_KINDS)[number];

export interface Interaction {
  /** The event's id: what makes a redelivery recognisable. */
  eventId: string;
  customerId: string;
  kind: InteractionKind;
  /** The item (product or content id); present for every kind but failed_login. */
  productId?: string;
  /** Event time, epoch ms. */
  at: number;
  /** Unit price paid (purchase) or shown; falls back to the catalogue price. */
  price?: number;
  quantity?: number;
  /** 1-5, review_submitted only. */
  rating?: number;
  text?: string;
  /** Position in an ordered source, when the transport has one (see applied-events.ts). */
  position?: EventPosition;
}

/** What the mapping needs of an app event; the hub's wire event gives `id`, `ts` (convert µs to ms) and its body. */
export interface AppEventLike {
  id: string;
  user_id: string;
  event_type: string;
  /** Epoch ms, or an RFC 3339 date-time as in the app event's `timestamp`. */
  ts: number | string;
  properties?: Record<string, unknown>;
}

export type InteractionMapping =
  | { ok: true; interaction: Interaction }
  | { ok: false; reason: 'not_a_shop_event'; eventType: string }
  | { ok: false; reason: 'invalid'; problem: string };

const KIND_SET: ReadonlySet<string> = new Set(INTERACTION_KINDS);

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function nonNegative(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}

/** Maps an app event to an interaction. Video events name their item `content_id`, shop events `product_id`. */
export function interactionFromAppEvent(event: AppEventLike, position?: EventPosition): InteractionMapping {
  if (!KIND_SET.has(event.event_type)) return { ok: false, reason: 'not_a_shop_event', eventType: event.event_type };
  const kind = event.event_type as InteractionKind;
  const at = typeof event.ts === 'number' ? event.ts : Date.parse(event.ts);
  if (!Number.isFinite(at)) return { ok: false, reason: 'invalid', problem: `timestamp ${String(event.ts)} is not a time` };
  if (!event.user_id) return { ok: false, reason: 'invalid', problem: 'user_id is empty' };
  const properties = event.properties ?? {};
  const interaction: Interaction = { eventId: event.id, customerId: event.user_id, kind, at };
  if (position) interaction.position = position;
  if (kind === 'failed_login') return { ok: true, interaction };

  const productId = kind === 'video_play' || kind === 'video_complete' ? text(properties.content_id) ?? text(properties.product_id) : text(properties.product_id) ?? text(properties.content_id);
  if (!productId) return { ok: false, reason: 'invalid', problem: `${kind} without properties.${kind.startsWith('video') ? 'content_id' : 'product_id'}` };
  interaction.productId = productId;
  const price = nonNegative(properties.price);
  if (price !== undefined) interaction.price = price;
  const quantity = nonNegative(properties.quantity);
  if (quantity !== undefined) interaction.quantity = quantity;
  if (kind === 'review_submitted') {
    if (!isValidRating(properties.rating)) return { ok: false, reason: 'invalid', problem: `review rating must be a whole number from 1 to 5, got ${JSON.stringify(properties.rating)}` };
    interaction.rating = properties.rating;
    const reviewText = text(properties.text);
    if (reviewText !== undefined) interaction.text = reviewText;
  }
  return { ok: true, interaction };
}
