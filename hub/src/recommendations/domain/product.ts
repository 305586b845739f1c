/** Catalogue items and reviews: plain values, checked where they enter the domain. */

export interface Product {
  id: string;
  name: string;
  category: string;
  /** Unit price in the shop's currency. */
  price: number;
}

export interface Review {
  customerId: string;
  productId: string;
  /** Whole stars, 1 to 5. */
  rating: number;
  text: string;
  /** Epoch ms. */
  at: number;
}

export function isValidRating(rating: unknown): rating is number {
  return typeof rating === 'number' && Number.isInteger(rating) && rating >= 1 && rating <= 5;
}

/** Problems of a review, empty when it is valid. */
export function reviewProblems(review: Review): string[] {
  const problems: string[] = [];
  if (!review.customerId) problems.push('customerId is empty');
  if (!review.productId) problems.push('productId is empty');
  if (!isValidRating(review.rating)) problems.push(`rating must be a whole number from 1 to 5, got ${String(review.rating)}`);
  if (typeof review.text !== 'string') problems.push('text must be a string');
  if (!Number.isFinite(review.at)) problems.push('at must be epoch ms');
  return problems;
}
