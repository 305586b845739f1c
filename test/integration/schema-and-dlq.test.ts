/**
 * Schema evolution and dead letters on the real stack (3 NATS nodes, QuestDB, hub and agent as processes):
 * - a v2 schema published through the hub's registry (KV) reaches the running agent: v2 events are accepted without
 *   a restart, v1 events still are, and the hub maps v2's new column;
 * - an incompatible v3 is refused by `npm run schemas -- check` and by the hub (not published, so the agent never
 *   accepts it);
 * - refused events reach the hub's DLQ stream with their reason, and are marked forwarded in the agent;
 * - a dead letter refused before v2 existed is redriven with edge-dlq and lands in QuestDB exactly once.
 * Test schemas live in temp folders with a type name of this run, so the repo's schemas/ stay untouched.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { REPO_ROOT } from '../../scripts/lib/runtime.js';
import { deadLetterSubject, DLQ_STREAM } from '../../shared/wire.js';
import { decodeDeadLetters, type DeadLetterRecord } from '../../shared/dead-letter-records.js';
import { testStack } from '../support/env.js';
import { agentPorts, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const run = promisify(execFile);
const stack = testStack();
const runId = Date.now().toString(36);
const agentId = `schema-${runId}`;
const type = `t${runId}.reading`;
const table = `t${runId}_readings`;
const now = Date.now();

const root = mkdtempSync(join(tmpdir(), 'schema-dlq-'));
const hubSchemas = join(root, 'hub-schemas');
const agentSchemas = join(root, 'agent-schemas');
const dataDir = join(root, 'agent-data');
const agentEnv = { EDGE_SCHEMASDIR: agentSchemas, EDGE_DEADLETTERS__FORWARDINTERVALMS: '200', EDGE_SCHEMAREGISTRY__RETRYMS: '500' };
const hubEnv = { HUB_SCHEMASDIR: hubSchemas, HUB_SINK__FLUSHINTERVALMS: '50' };

let hub: ManagedProcess | undefined;
let agent: ManagedProcess;
let ports: AgentPorts;
let nc: NatsConnection;

function schema(version: number, change: (s: Record<string, any>) => void = () => undefined): object {
  const s: Record<string, any> = {
    $id: `${type}/v${version}`,
    type: 'object',
    required: ['sensor_id', 'timestamp', 'value'],
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

/** v2 adds an optional `quality` (a new column); v3 makes it required, which breaks backward compatibility. */
const v2 = (s: Record<string, any>) => {
  s.properties.quality = { type: 'integer', minimum: 0 };
  s['x-questdb'].columns.push({ name: 'quality', field: 'quality', type: 'LONG' });
};
const v3 = (s: Record<string, any>) => {
  v2(s);
  s.required.push('quality');
};

function writeSchema(dir: string, version: number, document: object): void {
  mkdirSync(join(dir, type), { recursive: true });
  writeFileSync(join(dir, type, `v${version}.json`), JSON.stringify(document, null, 2));
}

async function restartHub(): Promise<void> {
  await hub?.stop();
  hub = await startHub(`schema-${runId}`, stack.natsUrls, stack.questdbHttp, hubEnv);
}

function reading(id: string, version: number | undefined, extra: Record<string, unknown> = {}) {
  return { type, event_id: `${runId}-${id}`, sensor_id: 's1', timestamp: now - 10000, value: 1.5, ...(version ? { schema_version: version } : {}), ...extra };
}

async function post(events: object[]): Promise<{ status: number; body: { accepted: number; rejected: Array<{ code: string; reason: string }> } }> {
  const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', body: JSON.stringify(events) });
  return { status: response.status, body: (await response.json()) as never };
}

async function agentHealth(): Promise<{ schemas: { versions: string[] }; deadLetters: { rows: number; unforwarded: number; forwarded: number } }> {
  return (await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as never;
}

/** Runs bin/edge-dlq.js with the agent's config (the same EDGE_* variables the agent got). */
async function edgeDlq(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, EDGE_AGENTID: agentId, EDGE_DATADIR: dataDir, ...agentEnv };
  try {
    const { stdout, stderr } = await run(process.execPath, [join(REPO_ROOT, 'bin/edge-dlq.js'), ...args], { cwd: REPO_ROOT, env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** Every DLQ message of this agent so far. */
async function dlqRecords(): Promise<DeadLetterRecord[]> {
  const consumer = await jetstream(nc).consumers.get(DLQ_STREAM, { filter_subjects: [deadLetterSubject(agentId)] });
  const records: DeadLetterRecord[] = [];
  const pending = (await consumer.info()).num_pending;
  if (pending === 0) return records;
  let messages = 0;
  for await (const message of await consumer.fetch({ max_messages: pending, expires: 2000 })) {
    records.push(...decodeDeadLetters(message.data));
    if (++messages >= pending) break;
  }
  return records;
}

before(async () => {
  writeSchema(hubSchemas, 1, schema(1));
  writeSchema(agentSchemas, 1, schema(1));
  nc = await connect({ servers: stack.natsUrls });
  await restartHub();
  ports = await agentPorts();
  agent = await startAgent(agentId, stack.natsUrls, ports, dataDir, agentEnv);
});

after(async () => {
  await agent?.stop();
  await hub?.stop();
  await nc?.close();
});

describe('schema registry and dead letters on the real stack', () => {
  test('a v2 published by the hub is used by the running agent; v1 events keep validating', async () => {
    // Before v2 exists, a v2 event is refused (and dead-lettered: it is redriven in the last test).
    const early = await post([reading('early', 2, { quality: 7 })]);
    assert.equal(early.status, 400);
    assert.match(early.body.rejected[0]!.reason, /has no schema version 2/);

    writeSchema(hubSchemas, 2, schema(2, v2));
    await restartHub();
    const kv = await new Kvm(nc).open('schemas');
    assert.ok(await kv.get(`${type}.v2`), 'the hub published v2 into the registry');
    const health = await waitFor(agentHealth, (h) => h.schemas.versions.includes(`${type}/v2`), 15000);
    assert.ok(health.schemas.versions.includes(`${type}/v2`), 'the agent learned v2 without a restart');
    assert.equal(agent.child.exitCode, null);

    const result = await post([reading('v2', 2, { quality: 90 }), reading('v1', 1), reading('latest', undefined, { quality: 3 })]);
    assert.deepEqual({ status: result.status, rejected: result.body.rejected }, { status: 200, rejected: [] });
    const v1WithV2Field = await post([reading('v1-quality', 1, { quality: 1 })]);
    assert.equal(v1WithV2Field.status, 400, 'v1 still refuses the field v2 added');

    const rows = await waitFor(
      () => query<{ event_id: string; quality: number | null; schema_version: number }>(stack.questdbHttp, `select event_id, quality, schema_version from ${table} order by event_id`),
      (r) => r.length >= 3,
      30000,
    );
    assert.deepEqual(
      rows.map((r) => [r.event_id, r.quality, Number(r.schema_version)]),
      [[`${runId}-latest`, 3, 2], [`${runId}-v1`, null, 1], [`${runId}-v2`, 90, 2]],
    );
  });

  test('an incompatible v3 is refused by the schema check and by the hub, so the agent never accepts it', async () => {
    writeSchema(hubSchemas, 3, schema(3, v3));
    const check = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'shared/schema-cli.ts'), 'check', '--dir', hubSchemas], { cwd: REPO_ROOT }).then(
      () => ({ code: 0, stdout: '' }),
      (error: { code: number; stdout: string }) => error,
    );
    assert.equal(check.code, 1);
    assert.match(check.stdout, new RegExp(`${type.replace('.', '\\.')} v3: field "quality" became required \\(breaks backward\\)`));

    await restartHub();
    const kv = await new Kvm(nc).open('schemas');
    assert.equal(await kv.get(`${type}.v3`), null, 'v3 is not in the registry');
    const refusal = readFileSync(hub!.logFile, 'utf8')
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { msg: string; code?: string; type?: string; version?: number })
      .find((entry) => entry.type === type && entry.version === 3 && entry.code === 'HUB_ERR_SCHEMA_INCOMPATIBLE');
    assert.ok(refusal, 'the hub logged the refusal');
    assert.match(refusal.msg, /field "quality" became required \(breaks backward\)/);

    const v3Event = await post([reading('v3', 3, { quality: 1 })]);
    assert.equal(v3Event.status, 400);
    assert.match(v3Event.body.rejected[0]!.reason, /has no schema version 3/);
  });

  test('refused events reach the hub\'s DLQ stream with their reason and are marked forwarded', async () => {
    const bad = await post([reading('bad', 1, { value: 'hot' })]);
    assert.equal(bad.status, 400);
    const eventIdOf = (record: DeadLetterRecord) => (JSON.parse(Buffer.from(record.payload).toString()) as { event_id?: string }).event_id;
    const records = await waitFor(dlqRecords, (r) => r.some((d) => eventIdOf(d) === `${runId}-bad`), 15000);
    const invalid = records.find((d) => eventIdOf(d) === `${runId}-bad`);
    assert.ok(invalid, `DLQ holds ${JSON.stringify(records.map((r) => r.reason))}`);
    assert.deepEqual([invalid.agent, invalid.source, invalid.code], [agentId, 'http', 'EDGE_ERR_SCHEMA_INVALID']);
    assert.match(invalid.reason, /\/value must be number/);
    assert.ok(records.some((d) => d.code === 'EDGE_ERR_UNKNOWN_TYPE' && /schema version 2/.test(d.reason)), 'the early v2 event is in the DLQ too');
    assert.equal(new Set(records.map((r) => r.id)).size, records.length, 'each dead letter stored once');

    const health = await waitFor(agentHealth, (h) => h.deadLetters.unforwarded === 0, 10000);
    assert.equal(health.deadLetters.unforwarded, 0);
    assert.equal(health.deadLetters.rows, records.length, 'forwarded dead letters stay in the agent for inspection');
  });

  test('a dead letter redriven after the schema fix lands in QuestDB exactly once', async () => {
    const listed = await edgeDlq('list', '--json', '--code', 'EDGE_ERR_UNKNOWN_TYPE');
    assert.equal(listed.code, 0, listed.stderr);
    const letters = listed.stdout.trim().split('\n').map((line) => JSON.parse(line) as { id: number; reason: string; forwardedAt?: number });
    const early = letters.find((l) => /schema version 2/.test(l.reason));
    assert.ok(early, listed.stdout);
    assert.ok(early.forwardedAt, 'marked forwarded after the PubAck');

    const shown = await edgeDlq('show', String(early.id));
    assert.match(shown.stdout, new RegExp(`"event_id":"${runId}-early"`));

    const redriven = await edgeDlq('redrive', String(early.id));
    assert.equal(redriven.code, 0, redriven.stdout + redriven.stderr);
    assert.match(redriven.stdout, new RegExp(`#${early.id} redriven: 1 event \\(${type.replace('.', '\\.')} v2\\)`));
    const again = await edgeDlq('redrive', String(early.id));
    assert.equal(again.code, 1);
    assert.match(again.stdout, /not found/);

    const id = `${runId}-early`;
    const rows = await waitFor(() => query<{ event_id: string; quality: number }>(stack.questdbHttp, `select event_id, quality from ${table} where event_id = '${id}'`), (r) => r.length >= 1, 30000);
    assert.deepEqual(rows, [{ event_id: id, quality: 7 }]);
    await new Promise((r) => setTimeout(r, 1500));
    const later = await query<{ n: number }>(stack.questdbHttp, `select count() n from ${table} where event_id = '${id}'`);
    assert.equal(Number(later[0]!.n), 1, 'exactly once');
    assert.ok(!(await edgeDlq('list', '--json')).stdout.includes(`"id":${early.id},`), 'the dead letter left the table');
  });
});

