/** Every source the agent can run, registered explicitly (one line each). */
import { createHttpSource } from './http-source.js';
import { createMqttSource } from './mqtt-source.js';

export const sources = {
  mqtt: createMqttSource,
  http: createHttpSource,
} as const;

export type SourceName = keyof typeof sources;
export type { Source, SourceDeps, SourceFactory } from './source.js';
