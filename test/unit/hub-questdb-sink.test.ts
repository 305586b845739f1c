/** QuestDbSink's buffering and retry behaviour, with a stand-in for IlpHttpWriter. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import type { SchemaVersion } from '../../shared/schema-catalog.js';
import type { EventBatch, WireEvent } from '../../shared/wire.js';
import { QuestDbSink, type IlpSender } from '../../hub/src/sinks/questdb-sink.js';
import { RowMappings } from '../../hub/src/sinks/questdb-rows.js';

/** Like IlpHttpWriter: rows accumulate in a buffer; a failed flush keeps its rows and sends them first next time. */
class RecordingSender implements IlpSender {
  sent: string[][] = [];
  failNext = 0;
  refuse: string | undefined;
  private buffer: string[] = [];
  private unsent: string[] = [];
  private row = '';
  private inFlight: (() => void) | undefined;
  holdNextFlush = false;

  table(name: string): void {
    this.row = name;
  }
  symbol(name: string, value: string): void {
    this.row += `,${name}=${value}`;
  }
  stringColumn(name: string, value: string): void {
    if (value === this.refuse) throw new Error('refused value');
    this.row += ` ${name}="${value}"`;
  }
  floatColumn(name: string, value: number): void {
    this.row += ` ${name}=${value}`;
  }
  intColumn(name: string, value: number): void {
    this.row += ` ${name}=${value}i`;
  }
  booleanColumn(name: string, value: boolean): void {
    this.row += ` ${name}=${value}`;
  }
  timestampColumn(): void {}
  async at(ts: number): Promise<void> {
    this.buffer.push(`${this.row} ${ts}`);
    this.row = '';
  }
  abortRow(): void {
    this.row = '';
  }
  async flush(): Promise<boolean> {
    const data = [...this.unsent.splice(0), ...this.buffer.splice(0)];
    if (this.holdNextFlush) {
      this.holdNextFlush = false;
      await new Promise<void>((resolve) => (this.inFlight = resolve));
    }
    if (this.failNext > 0) {
      this.failNext--;
      this.unsent = data;
      throw new Error('connect ECONNREFUSED');
    }
    this.sent.push(data);
    return data.length > 0;
  }
  release(): void {
    this.inFlight?.();
  }
  reset(): void {
    this.buffer = [];
    this.unsent = [];
    this.row = '';
  }
  async close(): Promise<void> {}
}

const telemetry: SchemaVersion = {
  type: 'device.telemetry',
  version: 1,
  schema: {
    $id: 'device.telemetry/v1',
    'x-partition-key': 'device_id',
    'x-questdb': {
      table: 'device_telemetry',
      columns: [
        { name: 'device_id', field: 'device_id', type: 'SYMBOL' },
        { name: 'value', field: 'value', type: 'DOUBLE' },
      ],
    },
  },
};

function batch(...ids: string[]): EventBatch {
  const events: WireEvent[] = ids.map((id, i) => ({
    id,
    type: id.startsWith('x') ? 'unknown.type' : 'device.telemetry',
    sv: 1,
    key: 'd1',
    ts: 1000 + i,
    its: 2000,
    src: 'mqtt',
    body: { device_id: 'd1', value: i },
  }));
  return { v: 1, agent: 'a1', partition: 0, first: 1, last: ids.length, events };
}

function setup() {
  const sender = new RecordingSender();
  const sink = new QuestDbSink(
    sender,
    { ping: async () => undefined },
    { mappings: new RowMappings([telemetry]), nowMicros: () => 5000, log: pino({ level: 'silent' }) },
  );
  return { sender, sink };
}

const ids = (rows: string[] | undefined): string[] => (rows ?? []).map((r) => /event_id="([^"]+)"/.exec(r)?.[1] ?? '?');

test('keeps the rows of a failed flush and sends them again with the next one', async () => {
  const { sender, sink } = setup();
  sink.write(batch('e1', 'e2'));
  sender.failNext = 1;
  await assert.rejects(sink.flush(), (error: Error & { code?: string }) => error.code === 'HUB_ERR_FLUSH_FAILED');
  assert.equal(sink.bufferedRows, 2);
  sink.write(batch('e3'));
  assert.deepEqual(await sink.flush(), { rows: 3 });
  assert.deepEqual(ids(sender.sent[0]), ['e1', 'e2', 'e3']);
  assert.equal(sink.bufferedRows, 0);
});

test('rows written while a flush is in flight are not confirmed by it and go with the next', async () => {
  const { sender, sink } = setup();
  sink.write(batch('e1'));
  sender.holdNextFlush = true;
  const first = sink.flush();
  sink.write(batch('e2'));
  sender.release();
  assert.deepEqual(await first, { rows: 1 });
  assert.equal(sink.bufferedRows, 1);
  assert.deepEqual(await sink.flush(), { rows: 1 });
  assert.deepEqual(sender.sent.map(ids), [['e1'], ['e2']]);
});

test('skips events whose type/version has no schema and writes the others', async () => {
  const { sender, sink } = setup();
  const result = sink.write(batch('e1', 'x1', 'e2'));
  assert.equal(result.rows, 2);
  assert.deepEqual(result.skipped, [{ type: 'unknown_schema', eventType: 'unknown.type', version: 1, id: 'x1' }]);
  await sink.flush();
  assert.deepEqual(ids(sender.sent[0]), ['e1', 'e2']);
});

test('an event whose row the writer refuses is skipped with the reason (for the DLQ); the others are written', async () => {
  const { sender, sink } = setup();
  sender.refuse = 'bad';
  const result = sink.write(batch('e1', 'bad', 'e2'));
  assert.equal(result.rows, 2);
  assert.deepEqual(result.skippedAt, [1]);
  assert.deepEqual(result.skipped, [{ type: 'invalid_event', id: 'bad', reason: 'cannot be written to device_telemetry: refused value' }]);
  assert.equal(sink.bufferedRows, 2);
  assert.deepEqual(await sink.flush(), { rows: 2 });
  assert.deepEqual(ids(sender.sent[0]), ['e1', 'e2']);
});

test('discard() drops every buffered row', async () => {
  const { sender, sink } = setup();
  sink.write(batch('e1', 'e2'));
  assert.equal(sink.discard(), 2);
  assert.deepEqual(await sink.flush(), { rows: 0 });
  assert.deepEqual(sender.sent, []);
});
