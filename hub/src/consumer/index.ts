export type { BatchSource, Inbound } from './consumer.js';
export { JetStreamBatchSource, ensureDurableConsumer, desiredConsumerConfig } from './jetstream-consumer.js';
export type { DurableConsumerOptions, JetStreamBatchSourceOptions } from './jetstream-consumer.js';
