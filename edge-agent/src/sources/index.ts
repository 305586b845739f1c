/** Every source the agent can run, registered explicitly (one line each). */
import { createFileSource } from './file-source.js';
import { createHttpSource } from './http-source.js';
import { createMqttBridgeSource } from './mqtt-bridge-source.js';
import { createMqttSource } from './mqtt-source.js';
import { createSqlPollSource } from './sql-poll-source.js';

export const sources = {
  mqtt: createMqttSource,
  http: createHttpSource,
  mqttBridge: createMqttBridgeSource,
  file: createFileSource,
  sqlPoll: createSqlPollSource,
} as const;

export type SourceName = keyof typeof sources;
export type { Source, SourceDeps, SourceFactory } from './source.js';
