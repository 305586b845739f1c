/** The recommendation application layer: use cases over ports; infrastructure implements the ports. */
export * from './in-memory-ports.js';
export * from './ports.js';
export * from './results.js';
export * from './use-cases.js';
