/**
 * The recommendation domain: plain values and functions, no I/O; time is always passed in. State records (profiles,
 * item statistics, boards) are updated in place by their one owner; everything else is pure.
 */
export * from './applied-events.js';
export * from './customer-profile.js';
export * from './decay.js';
export * from './enrichment.js';
export * from './interaction.js';
export * from './item-stats.js';
export * from './policy.js';
export * from './product.js';
export * from './recommendation-service.js';
