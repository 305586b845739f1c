/**
 * Exponential decay computed lazily: a decayed quantity is stored as (value, asOf) and only brought forward when it is
 * read or added to, with the time passed in. Nothing runs on a timer, so a stored profile never goes stale in the
 * store, and a replay with the same event times reproduces the same numbers.
 */

export interface DecayedValue {
  /** The value as it stood at `asOf`. */
  value: number;
  /** Epoch ms the value refers to. */
  asOf: number;
}

export const ZERO_DECAYED: DecayedValue = Object.freeze({ value: 0, asOf: 0 });

/** 2^(-elapsed / halfLife); elapsed <= 0 gives 1 (a read "before" asOf does not grow the value). */
export function decayFactor(elapsedMs: number, halfLifeMs: number): number {
  if (elapsedMs <= 0) return 1;
  return Math.pow(2, -elapsedMs / halfLifeMs);
}

/** The value at `now`. */
export function decayedAt(decayed: DecayedValue, now: number, halfLifeMs: number): number {
  return decayed.value * decayFactor(now - decayed.asOf, halfLifeMs);
}

/**
 * Adds `amount` happening at `at`. An amount older than `asOf` (an out-of-order event) is decayed to `asOf` instead
 * of moving `asOf` back, so the result is the same whatever order the amounts arrive in (up to rounding).
 */
export function addDecayed(decayed: DecayedValue, amount: number, at: number, halfLifeMs: number): DecayedValue {
  if (decayed.value === 0 && decayed.asOf === 0) return { value: amount, asOf: at };
  if (at >= decayed.asOf) return { value: decayedAt(decayed, at, halfLifeMs) + amount, asOf: at };
  return { value: decayed.value + amount * decayFactor(decayed.asOf - at, halfLifeMs), asOf: decayed.asOf };
}
