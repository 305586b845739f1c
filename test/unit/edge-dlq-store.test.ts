import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Packr } from 'msgpackr';
import { pino } from 'pino';
import { loadSchemaCatalog, type SchemaDocument } from '../../shared/schema-catalog.js';
import { decodeEvent } from '../../shared/wire.js';
import type { DeadLetter } from '../../edge-agent/src/buffer/outbox.js';
import { SqliteOutbox } from '../../edge-agent/src/buffer/sqlite-outbox.js';
import {
  DeadLetterForwarder,
  type DeadLetterForwarderOptions,
} from '../../edge-agent/src/buffer/jetstream-dead-letter-forwarder.js';
import { decodeDeadLetters } from '../../shared/dead-letter-records.js';
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
  outbox.markForwarded(1, 2);
  outbox.markForwarded(1, 1); // again: no effect
  assert.deepEqual(outbox.unforwarded(10).map((l) => l.id), [3]);
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
  outbox.markForwarded(3, 5);
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

test('the in-memory unforwarded dead letters always agree with the table (appends, forwarding, bound, other processes, overflow, restart)', () => {
  const path = dbPath();
  const small = (p: string) =>
    new SqliteOutbox({ path: p, maxBytes: 1 << 20, fullPolicy: 'reject', synchronous: 'normal', deadLetters: { maxRows: 60, maxBytes: 1 << 20 }, now: () => 1000, unforwardedCacheBytes: 2000 });
  let outbox = small(path);
  const raw = new Database(path, { readonly: true });
  const fromTable = (limit: number) =>
    (raw.prepare('SELECT id FROM dead_letters WHERE forwarded_at IS NULL ORDER BY id LIMIT ?').all(limit) as { id: number }[]).map((r) => r.id);
  let seed = 7;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let step = 0; step < 400; step++) {
    const op = random(10);
    if (op < 4) outbox.append([], Array.from({ length: 1 + random(6) }, (_, i) => letter(step * 10 + i, 1 + random(150))));
    else if (op < 8) {
      const batch = outbox.unforwarded(1 + random(10));
      if (batch.length > 0) outbox.markForwarded(batch[0]!.id, batch[batch.length - 1]!.id);
    } else if (op === 8 && random(2) === 0) {
      const other = small(path); // the edge-dlq CLI: redrive one
      const some = other.readDeadLetters({ limit: 1 });
      if (some.length > 0) other.redrive([{ id: some[0]!.id, events: [] }]);
      other.close();
      outbox.syncExternalChanges();
    } else if (op === 9 && random(3) === 0) {
      outbox.close();
      outbox = small(path);
    }
    const limit = 1 + random(20);
    assert.deepEqual(outbox.unforwarded(limit).map((l) => l.id), fromTable(limit), `step ${step}`);
    const ids = fromTable(1000);
    if (ids.length > 2) {
      const [first, last] = [ids[1]!, ids[ids.length - 1]!];
      assert.deepEqual(outbox.unforwardedBetween(first, last).map((l) => l.id), ids.slice(1), `step ${step}: between`);
    }
    assert.equal(outbox.deadLetterStats().unforwarded, fromTable(1000).length);
  }
  raw.close();
  outbox.close();
});

// --- forwarding ------------------------------------------------------------------------------------------------

const forwarderOptions: DeadLetterForwarderOptions = {
  agentId: 'gw-1',
  forward: true,
  batchSize: 10,
  maxBatchBytes: 1 << 20,
  intervalMs: 10,
  maxPayloadBytes: 16,
  publishTimeoutMs: 100,
  retryInitialMs: 10,
  retryMaxMs: 20,
};

interface Sent {
  subject: string;
  msgID: string;
  data: Uint8Array;
}

/** A JetStream stand-in that records what is published, and fails the publishes `fail` says. */
function fakeJetStream(fail: (sent: Sent) => boolean = () => false) {
  const sent: Sent[] = [];
  const stored = new Set<string>();
  return {
    sent,
    js: {
      publish: async (subject: string, data: Uint8Array, options: { msgID: string }) => {
        const message = { subject, msgID: options.msgID, data };
        sent.push(message);
        if (fail(message)) throw new Error('no responders');
        const duplicate = stored.has(options.msgID);
        stored.add(options.msgID);
        return { duplicate } as never;
      },
    },
  };
}

test('forwarding: one message per batch on dlq.<agent> with id <agent>:dlq:<first>-<last>; marked only after its PubAck', async () => {
  const outbox = open(dbPath());
  outbox.append([], [letter(1), letter(2, 40), letter(3)]);
  let failing = true;
  const { sent, js } = fakeJetStream(() => failing);
  const forwarder = new DeadLetterForwarder(outbox, forwarderOptions, log);
  assert.equal(await forwarder.forwardOnce(), 0, 'nothing is sent before the hub connection');
  forwarder.connect(js as never);
  await assert.rejects(forwarder.forwardOnce(), /no responders/);
  assert.deepEqual(outbox.unforwarded(10).map((l) => l.id), [1, 2, 3], 'nothing is marked without a PubAck');
  assert.deepEqual(outbox.deadLetterClaim(), { first: 1, last: 3 });

  // More dead letters arrive before the retry: the retry still sends exactly the claimed batch.
  outbox.append([], [letter(4)]);
  failing = false;
  assert.equal(await forwarder.forwardOnce(), 3);
  assert.deepEqual(sent.map((s) => [s.subject, s.msgID]), [['dlq.gw-1', 'gw-1:dlq:1-3'], ['dlq.gw-1', 'gw-1:dlq:1-3']]);
  assert.equal(outbox.deadLetterClaim(), undefined, 'the claim is cleared with the PubAck');
  assert.deepEqual(outbox.unforwarded(10).map((l) => l.id), [4]);
  assert.deepEqual(forwarder.stats, { forwarded: 3, batches: 1, duplicates: 0, errors: 0 });

  const records = decodeDeadLetters(sent[1]!.data);
  assert.deepEqual(
    records.map((r) => ({ ...r, payload: Buffer.from(r.payload).toString() }))[1],
    { agent: 'gw-1', id: 2, at: 1000, source: 'http', code: 'EDGE_ERR_SCHEMA_INVALID', reason: 'bad 2', origin: '/v1/events', payload: 'a'.repeat(16), bytes: 40, truncated: true },
  );
  assert.deepEqual(records.map((r) => r.id), [1, 2, 3]);
  assert.equal(outbox.getDeadLetter(2)!.payload.byteLength, 40, 'the local copy stays whole');

  assert.equal(await forwarder.forwardOnce(), 1);
  assert.equal(sent.at(-1)!.msgID, 'gw-1:dlq:4-4');
  outbox.close();
});

test('forwarding: a batch whose PubAck was lost is sent again with the same id after a restart, and stored once', async () => {
  const path = dbPath();
  let outbox = open(path);
  outbox.append([], [letter(1), letter(2)]);
  // The server stores the first batch, but its PubAck is lost.
  const sent: string[] = [];
  const stored: string[] = [];
  const server = {
    publish: async (_subject: string, _data: Uint8Array, options: { msgID: string }) => {
      sent.push(options.msgID);
      const duplicate = stored.includes(options.msgID);
      if (!duplicate) stored.push(options.msgID);
      if (sent.length === 1) throw new Error('timeout');
      return { duplicate } as never;
    },
  };
  let forwarder = new DeadLetterForwarder(outbox, forwarderOptions, log);
  forwarder.connect(server as never);
  await assert.rejects(forwarder.forwardOnce());
  outbox.close();

  outbox = open(path);
  outbox.append([], [letter(3)]);
  forwarder = new DeadLetterForwarder(outbox, forwarderOptions, log);
  forwarder.connect(server as never);
  assert.equal(await forwarder.forwardOnce(), 2);
  assert.equal(forwarder.stats.duplicates, 2, 'JetStream reports the resent batch as a duplicate');
  assert.equal(await forwarder.forwardOnce(), 1);
  assert.deepEqual(sent, ['gw-1:dlq:1-2', 'gw-1:dlq:1-2', 'gw-1:dlq:3-3']);
  assert.deepEqual(stored, ['gw-1:dlq:1-2', 'gw-1:dlq:3-3'], 'each dead letter stored once');
  outbox.close();
});

test('forwarding: batches are bounded by count and bytes; a claim emptied by the table bound is replaced', async () => {
  const outbox = open(dbPath(), { maxRows: 1000, maxBytes: 1 << 20 });
  outbox.append([], Array.from({ length: 7 }, (_, i) => letter(i + 1, 3000)));
  const { sent, js } = fakeJetStream();
  // 3 per batch by count; by bytes, 16 payload bytes + 1024 per entry: 2 fit in 2100.
  const forwarder = new DeadLetterForwarder(outbox, { ...forwarderOptions, batchSize: 3, maxBatchBytes: 2100 }, log);
  forwarder.connect(js as never);
  while ((await forwarder.forwardOnce()) > 0);
  assert.deepEqual(sent.map((s) => s.msgID), ['gw-1:dlq:1-2', 'gw-1:dlq:3-4', 'gw-1:dlq:5-6', 'gw-1:dlq:7-7']);

  outbox.append([], [letter(8), letter(9)]);
  outbox.claimDeadLetters(100, 120);
  assert.equal(await forwarder.forwardOnce(), 2, 'nothing is left of the claim: the next batch is claimed');
  assert.equal(sent.at(-1)!.msgID, 'gw-1:dlq:8-9');
  outbox.close();
});

test('the DLQ stream\'s readers decode batches and the single records of older agents', () => {
  const v1 = new Packr({ useRecords: false, moreTypes: false }).pack({ v: 1, agent: 'old', id: 7, at: 1, source: 'mqtt', code: 'X', reason: 'r', payload: Buffer.from('p'), bytes: 1 });
  assert.deepEqual(decodeDeadLetters(v1).map((r) => [r.agent, r.id]), [['old', 7]]);
  assert.throws(() => decodeDeadLetters(new Packr().pack({ v: 3 })), /version 1 or 2/);
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
