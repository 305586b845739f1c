/**
 * Packs encoded events into outbox records: one record per partition holding a run of its events (a msgpack
 * sequence), cut at `maxEvents` or `maxBytes`. The publisher concatenates records of a partition into one
 * JetStream message, so a record must stay well below the message size limit (max_payload, 4 MB in our config).
 * Order within a partition is kept; records of different partitions are independent streams at the hub.
 */
import type { OutboxEvent } from './outbox.js';

export interface RecordLimits {
  maxEvents: number;
  maxBytes: number;
}

/** 1000 events or 256 KB per record: large enough that SQLite's per-row cost vanishes, small enough to batch. */
export const DEFAULT_RECORD_LIMITS: RecordLimits = { maxEvents: 1000, maxBytes: 256 * 1024 };

interface OpenRecord {
  partition: number;
  parts: Uint8Array[];
  count: number;
  bytes: number;
}

export function packRecords(events: OutboxEvent[], limits: RecordLimits = DEFAULT_RECORD_LIMITS): OutboxEvent[] {
  if (events.length <= 1) return events;
  // Records in the order their first event arrived, and the one still open per partition.
  const records: OpenRecord[] = [];
  const open = new Map<number, OpenRecord>();
  for (const event of events) {
    const count = event.count ?? 1;
    let record = open.get(event.partition);
    if (!record || record.count + count > limits.maxEvents || record.bytes + event.data.byteLength > limits.maxBytes) {
      record = { partition: event.partition, parts: [], count: 0, bytes: 0 };
      open.set(event.partition, record);
      records.push(record);
    }
    record.parts.push(event.data);
    record.count += count;
    record.bytes += event.data.byteLength;
  }
  return records.map(({ partition, parts, count, bytes }) => ({
    partition,
    data: parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes),
    ...(count === 1 ? {} : { count }),
  }));
}
