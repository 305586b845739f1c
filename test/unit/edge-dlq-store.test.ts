import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { loadSchemaCatalog, type SchemaDocument } from '../../shared/schema-catalog.js';
import { decodeEvent } from '../../shared/wire.js';
import type { DeadLetter } from '../../edge-agent/src/buffer/outbox.js';
import { SqliteOutbox } from '../../edge-agent/src/buffer/sqlite-outbox.js';
import {
  decodeDeadLetter,
  DeadLetterForwarder,
  type DeadLetterForwarderOptions,
} from '../../edge-agent/src/buffer/jetstream-dead-letter-forwarder.js';
import { OutboxFullError } from '../../edge-agent/src/errors.js';
import { EventValidator } from '../../edge-agent/src/validation/event-validator.js';
import { Redriver, asText, hexDump } from '../../edge-agent/src/cli/dead-letters.js';

const log = pino({ level: 'silent' });
const dbPath = () => join(mkdtempSync(join(tmpdir(), 'dlq-')), 'outbox.db');
const open = (path: string, bound = { maxRows: 1000, maxBytes: 1 << 20 }, maxBytes = 1 << 20) =>
  new SqliteOutbox({ path, maxBytes, fullPolicy: 'reject', synchronous: 'normal', deadLetters: bound, now: () => 1000 });
const letter = (i: number, size = 10, extra: Partial<DeadLetter> = {}): DeadLetter => ({
  source: 'http',
  code: 'EDGE_ERR_SCHEMA_INVALID',
  reason: `bad ${i}`,
  origin: '/v1/events',
  payload: Buffer.alloc(size, 0x61),
  ...extra,
});

test('dead letters are marked forwarded, and listed newest first', () => {
  const outbox = open(dbPath());
  outbox.append([], [letter(1), letter(2), letter(3, 10, { code: 'EDGE_ERR_MALFORMED_JSON' })]);
  assert.deepEqual(outbox.unforwarded(10).map((l) => l.id), [1, 2, 3]);
  outbox.markForwarded([1, 3]);
  outbox.markForwarded([1]); // again: no effect
  assert.deepEqual(outbox.unforwarded(10).map((l) => l.id), [2]);
  assert.equal(outbox.getDeadLetter(1)!.forwardedAt, 1000);
  assert.deepEqual(outbox.listDeadLetters({ limit: 10 }).map((l) => l.id), [3, 2, 1]);
  assert.deepEqual(outbox.listDeadLetters({ limit: 10, code: 'EDGE_ERR_MALFORMED_JSON' }).map((l) => l.id), [3]);
  assert.deepEqual(outbox.readDeadLetters({ afterId: 1, limit: 10 }).map((l) => l.id), [2, 3]);
  const stats = outbox.deadLetterStats();
  assert.deepEqual({ rows: stats.rows, bytes: stats.bytes, unforwarded: stats.unforwarded }, { rows: 3, bytes: 30, unforwarded: 1 });
  outbox.close();
});

test('over the row bound, forwarded dead letters go first (down to 90%), then the oldest, counted as dropped', () => {
  const outbox = open(dbPath(), { maxRows: 10, maxBytes: 1 << 20 });
  outbox.append([], Array.from({ length: 10 }, (_, i) => letter(i)));
  outbox.markForwarded([3, 4, 5]);
  outbox.append([], [letter(10)]); // 11 rows: forwarded ones pruned oldest first down to 9
  assert.deepEqual(outbox.readDeadLetters({ limit: 100 }).map((l) => l.id), [1, 2, 5, 6, 7, 8, 9, 10, 11]);
  assert.deepEqual({ dropped: outbox.deadLetterStats().dropped, pruned: outbox.deadLetterStats().pruned }, { dropped: 0, pruned: 2 });
  outbox.append([], [letter(11), letter(12), letter(13)]); // 12 rows: forwarded 5 goes, then the oldest unforwarded (1)
  assert.deepEqual(outbox.readDeadLetters({ limit: 100 }).map((l) => l.id), [2, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
  const stats = outbox.deadLetterStats();
  assert.deepEqual({ rows: stats.rows, unforwarded: stats.unforwarded, dropped: stats.dropped, pruned: stats.pruned }, { rows: 10, unforwarded: 10, dropped: 1, pruned: 3 });
  outbox.close();
});

test('over the byte bound, the oldest dead letters are dropped until the payloads fit', () => {
  const outbox = open(dbPath(), { maxRows: 1000, maxBytes: 2048 });
  outbox.append([], [letter(1, 1000), letter(2, 1000)]);
  outbox.append([], [letter(3, 500)]);
  assert.deepEqual(outbox.readDeadLetters({ limit: 10 }).map((l) => l.id), [2, 3]);
  assert.deepEqual({ bytes: outbox.deadLetterStats().bytes, dropped: outbox.deadLetterStats().dropped }, { bytes: 1500, dropped: 1 });
  outbox.close();
});

test('counters survive a restart and the forwarded column is added to an older file', () => {
  const path = dbPath();
  const old = new Database(path);
  old.exec(`CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, source TEXT NOT NULL,
    code TEXT NOT NULL, reason TEXT NOT NULL, origin TEXT, payload BLOB NOT NULL)`);
  old.prepare("INSERT INTO dead_letters (at, source, code, reason, origin, payload) VALUES (1, 'mqtt', 'X', 'r', 't', x'6162')").run();
  old.close();
  const outbox = open(path);
  assert.deepEqual(outbox.unforwarded(10).map((l) => [l.id, l.source, l.bytes]), [[1, 'mqtt', 2]]);
  assert.equal(outbox.deadLetterStats().unforwarded, 1);
  outbox.close();
});

test('another process\'s commit (the CLI) is noticed, and the counters re-read', () => {
  const path = dbPath();
  const agent = open(path);
  agent.append([], [letter(1)]);
  assert.equal(agent.syncExternalChanges(), false, 'own commits do not count');
  const cli = open(path);
  cli.redrive([{ id: 1, events: [{ partition: 0, data: Buffer.from('event') }] }]);
  cli.close();
  assert.equal(agent.syncExternalChanges(), true);
  assert.equal(agent.syncExternalChanges(), false);
  assert.deepEqual({ rows: agent.stats().rows, bytes: agent.stats().bytes, deadLetters: agent.stats().deadLetters }, { rows: 1, bytes: 5, deadLetters: 0 });
  assert.deepEqual(agent.readAfter(0, 10, 1 << 20).map((r) => Buffer.from(r.data).toString()), ['event']);
  agent.close();
});

test('redrive moves a dead letter into the outbox in one transaction, skips one deleted meanwhile, and never overfills', () => {
  const outbox = open(dbPath(), undefined, 2048);
  outbox.append([], [letter(1), letter(2)]);
  assert.deepEqual(outbox.redrive([{ id: 1, events: [{ partition: 1, data: Buffer.alloc(100) }] }, { id: 9, events: [{ partition: 1, data: Buffer.alloc(100) }] }]), [1]);
  assert.deepEqual({ rows: outbox.stats().rows, deadLetters: outbox.stats().deadLetters }, { rows: 1, deadLetters: 1 });
  assert.throws(() => outbox.redrive([{ id: 2, events: [{ partition: 1, data: Buffer.alloc(4000) }] }]), OutboxFullError);
  assert.ok(outbox.getDeadLetter(2), 'a redrive that does not fit leaves the dead letter');
  outbox.close();
});

// --- forwarding ------------------------------------------------------------------------------------------------

const forwarderOptions: DeadLetterForwarderOptions = {
  agentId: 'gw-1',
  forward: true,
  batchSize: 10,
  intervalMs: 10,
  maxPayloadBytes: 16,
  publishTimeoutMs: 100,
  retryInitialMs: 10,
  retryMaxMs: 20,
};

test('forwarding: one message per dead letter on dlq.<agent> with id <agent>:dlq:<id>; marked only after its PubAck', async () => {
  const outbox = open(dbPath());
  outbox.append([], [letter(1), letter(2, 40), letter(3)]);
  const sent: Array<{ subject: string; msgID: string; data: Uint8Array }> = [];
  const js = {
    publish: async (subject: string, data: Uint8Array, options: { msgID: string }) => {
      sent.push({ subject, msgID: options.msgID, data });
      if (options.msgID === 'gw-1:dlq:3') throw new Error('no responders');
      return { duplicate: false } as never;
    },
  };
  const forwarder = new DeadLetterForwarder(outbox, forwarderOptions, log);
  assert.equal(await forwarder.forwardOnce(), 0, 'nothing is sent before the hub connection');
  forwarder.connect(js as never);
  await assert.rejects(forwarder.forwardOnce(), /no responders/);
  assert.deepEqual(sent.map((s) => [s.subject, s.msgID]), [['dlq.gw-1', 'gw-1:dlq:1'], ['dlq.gw-1', 'gw-1:dlq:2'], ['dlq.gw-1', 'gw-1:dlq:3']]);
  assert.deepEqual(outbox.unforwarded(10).map((l) => l.id), [3], 'the one without PubAck stays unforwarded');
  assert.equal(forwarder.stats.forwarded, 2);
  const record = decodeDeadLetter(sent[1]!.data);
  assert.deepEqual(
    { ...record, payload: Buffer.from(record.payload).toString() },
    { v: 1, agent: 'gw-1', id: 2, at: 1000, source: 'http', code: 'EDGE_ERR_SCHEMA_INVALID', reason: 'bad 2', origin: '/v1/events', payload: 'a'.repeat(16), bytes: 40, truncated: true },
  );
  assert.equal(outbox.getDeadLetter(2)!.payload.byteLength, 40, 'the local copy stays whole');
  outbox.close();
});

test('forwarding loop retries until acknowledged, and wakes the publisher after an external change', async () => {
  const path = dbPath();
  const outbox = open(path);
  outbox.append([], [letter(1)]);
  let failures = 2;
  const js = {
    publish: async () => {
      if (failures-- > 0) throw new Error('timeout');
      return { duplicate: true } as never;
    },
  };
  let woken = 0;
  const forwarder = new DeadLetterForwarder(outbox, forwarderOptions, log, () => woken++);
  forwarder.connect(js as never);
  forwarder.start();
  const other = open(path);
  other.append([{ partition: 0, data: Buffer.from('x') }], []);
  other.close();
  for (let i = 0; i < 100 && (outbox.unforwarded(1).length > 0 || woken === 0); i++) await new Promise((r) => setTimeout(r, 10));
  await forwarder.stop(1000);
  assert.deepEqual(outbox.unforwarded(10), []);
  assert.deepEqual({ errors: forwarder.stats.errors, duplicates: forwarder.stats.duplicates }, { errors: 2, duplicates: 1 });
  assert.equal(woken, 1);
  outbox.close();
});

// --- redrive (edge-dlq) -----------------------------------------------------------------------------------------

const catalog = loadSchemaCatalog();
const config = {
  partitions: 8,
  sources: {
    mqtt: { routes: [{ pattern: 'devices/+/telemetry', type: 'device.telemetry', keyLevel: 1 }] },
    http: { defaultType: 'app.event' },
  },
} as never;
const reading = (extra: Record<string, unknown> = {}) => ({ event_id: 'r1', device_id: 'd1', timestamp: 1700000000000, metric: 'temp', value: 1, ...extra });

test('redrive: what passes the current schemas moves, the rest stays with its current reason', () => {
  const outbox = open(dbPath());
  outbox.append([], [
    letter(1, 0, { source: 'mqtt', origin: 'devices/d1/telemetry', payload: Buffer.from(JSON.stringify(reading({ quality: 5 }))) }),
    letter(2, 0, { source: 'mqtt', origin: 'devices/d1/telemetry', payload: Buffer.from(JSON.stringify(reading({ value: 'hot', event_id: 'r2' }))) }),
    letter(3, 0, { source: 'mqtt', origin: 'devices/d2/telemetry', payload: Buffer.from(JSON.stringify(reading({ event_id: 'r3', quality: 1 }))) }),
    letter(4, 0, { source: 'x', defaultType: 'device.telemetry', expectedKey: 'd1', payload: Buffer.from(JSON.stringify([reading({ event_id: 'r4' }), reading({ event_id: 'r5' })])) }),
    letter(5, 0, { payload: Buffer.from('{oops') }),
  ]);
  // The fix: a device.telemetry v2 with the `quality` field.
  const v1 = catalog.find((e) => e.type === 'device.telemetry')!;
  const schema = structuredClone(v1.schema) as Record<string, any>;
  schema.$id = 'device.telemetry/v2';
  schema.properties.schema_version = { const: 2 };
  schema.properties.quality = { type: 'integer' };
  const validator = new EventValidator([...catalog, { type: 'device.telemetry', version: 2, schema: schema as SchemaDocument }]);
  const redriver = new Redriver(outbox, validator, config, () => 42);

  const dry = redriver.run({ all: true }, true);
  assert.equal(dry.filter((o) => o.status === 'redriven').length, 2);
  assert.equal(outbox.stats().rows, 0, 'a dry run moves nothing');

  const outcomes = redriver.run({ all: true }, false);
  assert.deepEqual(
    outcomes.map((o) => (o.status === 'refused' ? [o.id, o.status, o.code] : [o.id, o.status])),
    [[1, 'redriven'], [2, 'refused', 'EDGE_ERR_SCHEMA_INVALID'], [3, 'refused', 'EDGE_ERR_TOPIC_MISMATCH'], [4, 'redriven'], [5, 'refused', 'EDGE_ERR_MALFORMED_JSON']],
  );
  const events = outbox.readAfter(0, 10, 1 << 20).map((r) => decodeEvent(r.data));
  assert.deepEqual(events.map((e) => [e.id, e.type, e.sv, e.key, e.src, e.its]), [
    ['r1', 'device.telemetry', 2, 'd1', 'mqtt', 42],
    ['r4', 'device.telemetry', 2, 'd1', 'x', 42],
    ['r5', 'device.telemetry', 2, 'd1', 'x', 42],
  ]);
  assert.deepEqual(outbox.readDeadLetters({ limit: 10 }).map((l) => l.id), [2, 3, 5]);
  assert.deepEqual(redriver.run({ ids: [1] }, false), [{ id: 1, status: 'missing' }], 'a redriven dead letter is gone: it cannot be redriven twice');
  outbox.close();
});

test('show prints text payloads as text and anything else as a hex dump', () => {
  assert.equal(asText(Buffer.from('{"a":1}\n')), '{"a":1}\n');
  assert.equal(asText(Buffer.from([0xff, 0x00])), undefined);
  assert.equal(asText(Buffer.from('a\u0001b')), undefined);
  assert.equal(hexDump(Buffer.from('{"a":1}\u0000')), '00000000  7b 22 61 22 3a 31 7d 00                          |{"a":1}.|');
});
