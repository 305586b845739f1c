export type { FlushResult, Sink, SkippedEvent, WriteResult } from './sink.js';
export { QuestDbSink, createQuestDbSink, senderConfig } from './questdb-sink.js';
export type { QuestDbSinkOptions } from './questdb-sink.js';
export { QuestDbRest } from './questdb-rest.js';
export { RowMappings, STANDARD_COLUMNS, mapEvent, writeRow } from './questdb-rows.js';
export type { Field, IlpRowWriter, MapResult, Row, RowMapping } from './questdb-rows.js';
export { createTableSql, ensureTables, planTable, tableSpecs } from './questdb-tables.js';
export type { TableSpec } from './questdb-tables.js';
