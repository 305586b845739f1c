/**
 * Events of a schema version the running hub did not map at start, on the real stack (3 NATS nodes, QuestDB, the hub
 * as a process). Another hub publishes the version into the registry (KV `schemas`) after this hub started, as
 * happens when agents learn it from the registry before every hub does:
 * - the hub looks the version up when its first event arrives (watch off), adds the column, writes the event;
 * - an event of a type that exists nowhere, and one of a version the hub refuses as incompatible, land in the DLQ
 *   stream with their reason and the hub's name; a redelivered batch stores neither a second row nor a second dead
 *   letter; every message is acked, none is left pending;
 * - with the watch on (the default), a version published while the hub runs is mapped, column included, before
 *   any of its events arrives.
 * Schemas live in a temp folder with type names of this run; batches are published directly on events.<agent>.<p>.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { pino } from 'pino';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import { loadCompatModes } from '../../shared/schema-compat.js';
import { encodeSchemaValue, schemaKey } from '../../shared/schema-registry.js';
import { DLQ_STREAM, EVENTS_STREAM, encodeBatch, eventSubject, type WireEvent } from '../../shared/wire.js';
import { openSchemaBucket, publishSchemas } from '../../hub/src/schema-publisher.js';
import { decodeHubDeadLetter, type HubDeadLetterRecord } from '../../hub/src/sinks/dead-letter-sink.js';
import { testStack } from '../support/env.js';
import { startHub, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const runId = Date.now().toString(36);
const agentId = `miss-${runId}`;
const hubName = `hub-miss-${runId}`;
const reading = `m${runId}.reading`;
const readingTable = `m${runId}_readings`;
const status = `m${runId}.status`;
const statusTable = `m${runId}_status`;
const nowhere = `nowhere${runId}.thing`;
const silent = pino({ level: 'silent' });

const root = mkdtempSync(join(tmpdir(), 'hub-schema-miss-'));
const hubSchemas = join(root, 'hub-schemas');
/** The other hub's folder: the same types plus the versions it publishes while ours runs. */
const otherSchemas = join(root, 'other-hub-schemas');

let nc: NatsConnection;
let js: JetStreamClient;
let kv: KV;
let hub: ManagedProcess | undefined;
let batchNumber = 0;

function schema(type: string, table: string, version: number, change: (s: Record<string, any>) => void = () => undefined): object {
  const s: Record<string, any> = {
    $id: `${type}/v${version}`,
    type: 'object',
    required: ['sensor_id', 'value'],
    additionalProperties: false,
    properties: {
      type: { const: type },
      schema_version: { const: version },
      event_id: { type: 'string', minLength: 1 },
      sensor_id: { type: 'string', minLength: 1 },
      timestamp: { type: 'integer', minimum: 0 },
      value: { type: 'number' },
    },
    'x-partition-key': 'sensor_id',
    'x-questdb': {
      table,
      columns: [
        { name: 'sensor_id', field: 'sensor_id', type: 'SYMBOL' },
        { name: 'value', field: 'value', type: 'DOUBLE' },
      ],
    },
  };
  change(s);
  return s;
}

/** v2 adds an optional `quality` (a new LONG column): backward compatible. */
const addQuality = (s: Record<string, any>): void => {
  s.properties.quality = { type: 'integer', minimum: 0 };
  s['x-questdb'].columns.push({ name: 'quality', field: 'quality', type: 'LONG' });
};
/** ...and required: not backward compatible with v2. */
const requireQuality = (s: Record<string, any>): void => {
  addQuality(s);
  s.required.push('quality');
};

function writeSchema(dir: string, type: string, version: number, document: object): void {
  mkdirSync(join(dir, type), { recursive: true });
  writeFileSync(join(dir, type, `v${version}.json`), JSON.stringify(document, null, 2));
}

/** What another hub does at its start: publish its folder's compatible versions into the registry. */
async function otherHubPublishes(): Promise<void> {
  await publishSchemas(kv, loadSchemaCatalog(otherSchemas), loadCompatModes(otherSchemas), silent);
}

const baseTs = (Date.now() - 60_000) * 1000;
function wireEvent(id: string, type: string, sv: number, body: Record<string, unknown>, n = 0): WireEvent {
  return { id: `${runId}-${id}`, type, sv, key: 's1', ts: baseTs + n, its: baseTs + n + 500, src: 'test', body: { sensor_id: 's1', value: 1.5, ...body } };
}

/** Publishes one batch as an agent would (msgpack, Nats-Msg-Id); returns the message id. */
async function publishBatch(events: WireEvent[], msgID = `${agentId}:${++batchNumber}-${batchNumber}:0`): Promise<string> {
  const batch = { v: 1 as const, agent: agentId, partition: 0, first: batchNumber, last: batchNumber, events };
  const ack = await js.publish(eventSubject(agentId, 0), encodeBatch(batch), { msgID });
  assert.equal(ack.stream, EVENTS_STREAM);
  return msgID;
}

/** Every hub dead letter of the schema path in the DLQ stream so far (late events of the analytics rules aside). */
async function hubDeadLetters(): Promise<HubDeadLetterRecord[]> {
  const consumer = await js.consumers.get(DLQ_STREAM, { filter_subjects: ['dlq.hub.unknown_schema', 'dlq.hub.schema_incompatible', 'dlq.hub.invalid_event'] });
  const pending = (await consumer.info()).num_pending;
  const records: HubDeadLetterRecord[] = [];
  if (pending === 0) return records;
  for await (const message of await consumer.fetch({ max_messages: pending, expires: 2000 })) {
    records.push(decodeHubDeadLetter(message.data));
    if (records.length >= pending) break;
  }
  return records;
}

async function metric(line: RegExp): Promise<number> {
  const text = await (await fetch(hub!.healthUrl.replace('/healthz', '/metrics'))).text();
  const found = text.split('\n').find((l) => line.test(l));
  return found ? Number(found.split(' ').pop()) : 0;
}

/** Nothing delivered and unacked, nothing waiting: every message was acked by the hub. */
async function consumerDrained(): Promise<{ pending: number; ackPending: number }> {
  const info = await (await jetstreamManager(nc)).consumers.info(EVENTS_STREAM, 'hub-raw');
  return { pending: info.num_pending, ackPending: info.num_ack_pending };
}

async function startOurHub(extraEnv: Record<string, string> = {}): Promise<void> {
  await hub?.stop();
  hub = await startHub(`miss-${runId}`, stack.natsUrls, stack.questdbHttp, {
    HUB_SCHEMASDIR: hubSchemas,
    HUB_NATS__NAME: hubName,
    HUB_SINK__FLUSHINTERVALMS: '50',
    ...extraEnv,
  });
}

before(async () => {
  for (const dir of [hubSchemas, otherSchemas]) {
    writeSchema(dir, reading, 1, schema(reading, readingTable, 1));
    writeSchema(dir, status, 1, schema(status, statusTable, 1));
  }
  nc = await connect({ servers: stack.natsUrls });
  js = jetstream(nc);
  // The safety net alone first: without the watch, only the lookup on the first event can map the new version.
  await startOurHub({ HUB_SCHEMAREGISTRY__WATCH: 'false' });
  kv = await openSchemaBucket(js, 'schemas', 3);
});

after(async () => {
  await hub?.stop();
  await nc?.close();
});

describe('events of a schema version the hub did not map at start', () => {
  const batchEvents = (): WireEvent[] => [
    wireEvent('v2', reading, 2, { quality: 42 }, 1),
    wireEvent('v1', reading, 1, {}, 2),
    wireEvent('lost', nowhere, 1, { anything: true }, 3),
  ];

  test('a version another hub published after start is looked up, its column added, its event written; an unknown type goes to the DLQ', async () => {
    writeSchema(otherSchemas, reading, 2, schema(reading, readingTable, 2, addQuality));
    await otherHubPublishes();
    // A direct get may be answered by a replica that has not applied the put yet: read until it has.
    assert.ok(await waitFor(() => kv.get(schemaKey(reading, 2)), (entry) => entry !== null, 5000, 100), 'v2 is in the registry');

    await publishBatch(batchEvents());

    const rows = await waitFor(
      () => query<{ event_id: string; schema_version: number; quality: number | null; agent_id: string }>(
        stack.questdbHttp,
        `select event_id, schema_version, quality, agent_id from ${readingTable} order by event_id`,
      ),
      (r) => (r?.length ?? 0) >= 2,
      30000,
    );
    assert.deepEqual(
      rows.map((r) => [r.event_id, Number(r.schema_version), r.quality, r.agent_id]),
      [
        [`${runId}-v1`, 1, null, agentId],
        [`${runId}-v2`, 2, 42, agentId],
      ],
    );

    const letters = await waitFor(hubDeadLetters, (r) => (r ?? []).some((d) => d.eventId === `${runId}-lost`), 15000);
    const lost = letters.find((d) => d.eventId === `${runId}-lost`);
    assert.ok(lost, `DLQ holds ${JSON.stringify(letters.map((d) => d.eventId))}`);
    assert.deepEqual(
      [lost.reason, lost.code, lost.hub, lost.agent, lost.eventType, lost.version, lost.index],
      ['unknown_schema', 'HUB_ERR_UNKNOWN_SCHEMA', hubName, agentId, nowhere, 1, 2],
    );
    assert.match(lost.detail, new RegExp(`no schema ${nowhere.replace('.', '\\.')} v1 in the registry bucket "schemas"`));
    assert.deepEqual((lost.event as WireEvent).body, { sensor_id: 's1', value: 1.5, anything: true }, 'the whole event is kept');

    const drained = await waitFor(consumerDrained, (c) => c?.pending === 0 && c?.ackPending === 0, 15000);
    assert.deepEqual(drained, { pending: 0, ackPending: 0 }, 'the message was acked');
    assert.equal(await metric(/^hub_schema_versions_learned_total\{via="lookup"\}/), 1);
    assert.equal(await metric(/^hub_events_dead_lettered_total\{reason="unknown_schema"\}/), 1);
  });

  test('a redelivered batch adds neither a row nor a dead letter', async () => {
    const acked = await metric(/^hub_messages_acked_total /);
    // The same events under another message id, as after JetStream's duplicate window: the hub processes them again.
    await publishBatch(batchEvents(), `${agentId}:again`);
    await waitFor(() => metric(/^hub_messages_acked_total /), (n) => (n ?? 0) > acked, 15000);
    await waitFor(consumerDrained, (c) => c?.pending === 0 && c?.ackPending === 0, 15000);
    const counts = await query<{ event_id: string; n: number }>(stack.questdbHttp, `select event_id, count() n from ${readingTable} group by event_id order by event_id`);
    assert.deepEqual(counts.map((c) => [c.event_id, Number(c.n)]), [[`${runId}-v1`, 1], [`${runId}-v2`, 1]]);
    const letters = (await hubDeadLetters()).filter((d) => d.eventId === `${runId}-lost`);
    assert.equal(letters.length, 1, 'same Nats-Msg-Id: the DLQ stream kept one');
  });

  test('an event of a version the hub refuses as incompatible goes to the DLQ with the reason', async () => {
    // A hub whose compat mode for the type is `none` could publish this v3; ours checks it as at start (backward).
    await kv.create(schemaKey(reading, 3), encodeSchemaValue({ type: reading, version: 3, schema: schema(reading, readingTable, 3, requireQuality) as never }));
    await publishBatch([wireEvent('v3', reading, 3, { quality: 7 }, 4)]);

    const letters = await waitFor(hubDeadLetters, (r) => (r ?? []).some((d) => d.eventId === `${runId}-v3`), 15000);
    const refused = letters.find((d) => d.eventId === `${runId}-v3`)!;
    assert.deepEqual([refused.reason, refused.code, refused.hub], ['schema_incompatible', 'HUB_ERR_SCHEMA_INCOMPATIBLE', hubName]);
    assert.match(refused.detail, /v3: field "quality" became required \(breaks backward\)/);
    await waitFor(consumerDrained, (c) => c?.pending === 0 && c?.ackPending === 0, 15000);
    const rows = await query<{ n: number }>(stack.questdbHttp, `select count() n from ${readingTable} where event_id = '${runId}-v3'`);
    assert.equal(Number(rows[0]!.n), 0);
    assert.equal(await metric(/^hub_events_dead_lettered_total\{reason="schema_incompatible"\}/), 1);
  });

  test('with the watch on, a version published while the hub runs is mapped, column included, before its first event', async () => {
    await startOurHub(); // watch: true, the default
    writeSchema(otherSchemas, status, 2, schema(status, statusTable, 2, addQuality));
    await otherHubPublishes();

    await waitFor(() => metric(/^hub_schema_versions_learned_total\{via="watch"\}/), (n) => (n ?? 0) >= 1, 15000);
    // On a WAL table an ALTER is applied asynchronously: SHOW COLUMNS may lag it by a moment.
    const columns = await waitFor(
      () => query<{ column: string; type: string }>(stack.questdbHttp, `show columns from ${statusTable}`),
      (list) => list.some((c) => c.column === 'quality'),
      15000,
    );
    assert.ok(columns.some((c) => c.column === 'quality' && c.type === 'LONG'), `columns: ${columns.map((c) => c.column).join(', ')}`);

    await publishBatch([wireEvent('s2', status, 2, { quality: 5 }, 5)]);
    const rows = await waitFor(
      () => query<{ event_id: string; quality: number }>(stack.questdbHttp, `select event_id, quality from ${statusTable}`),
      (r) => (r?.length ?? 0) >= 1,
      30000,
    );
    assert.deepEqual(rows, [{ event_id: `${runId}-s2`, quality: 5 }]);
    assert.equal(await metric(/^hub_schema_lookups_total/), 0, 'no lookup was needed');
    await waitFor(consumerDrained, (c) => c?.pending === 0 && c?.ackPending === 0, 15000);
  });
});
