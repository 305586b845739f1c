/**
 * The edge cut off from the hub for longer than the stream's duplicate window, at the worst moment: the link first
 * loses only the replies (JetStream stores the agent's batches, the PubAcks never arrive), then goes down entirely.
 * The agent keeps accepting events into its outbox; when the link comes back it resends the batches it never saw
 * acknowledged, and since the duplicate window has passed, JetStream stores them a second time. Nothing may count
 * twice: every accepted event is in QuestDB once (rows are upserts), and the window results equal an offline run
 * over the same events (the rules skip resent batches, hub/src/analytics/resent-batch-guard.ts).
 *
 * The link is a TCP proxy per NATS node (test/support/tcp-proxy.ts); the agent uses only those addresses
 * (nats.ignoreDiscoveredServers). The hub of this test shortens the EVENTS duplicate window to 5 s (restored after).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import { encodeRule, openRuleBucket, ruleKey } from '../../hub/src/rules/index.js';
import { decodeBatch, EVENTS_STREAM, type WireEvent } from '../../shared/wire.js';
import { startAnalyticsHub, type AnalyticsHub } from '../support/analytics-hub.js';
import { testStack } from '../support/env.js';
import { agentPorts, startAgent, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { rowsPerEventId, waitFor } from '../support/questdb.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { countAndSumRule, offlineWindowValues, storedWindowValues } from '../support/window-check.js';

const stack = testStack();
const run = Date.now().toString(36);
const agentId = `cut-${run}`;
const metric = `cut_${run}`;
const rule = countAndSumRule(`cut-count-${run}`, metric);
const PARTITIONS = 8;
const DUPLICATE_WINDOW_MS = 5_000;
const CUT_MS = 15_000;

let nc: NatsConnection;
let hub: AnalyticsHub;
let agent: ManagedProcess;
let ports: AgentPorts;
let proxies: TcpProxy[] = [];
let originalWindow: number | undefined;

before(async () => {
  nc = await connect({ servers: stack.natsUrls });
  const jsm = await jetstreamManager(nc);
  // Before any hub ran (this file alone on a fresh stack) there is no stream yet: the default window then.
  originalWindow = await jsm.streams.info(EVENTS_STREAM).then((i) => i.config.duplicate_window, () => nanos(120_000));
  await (await openRuleBucket(nc)).put(ruleKey(rule.name), encodeRule(rule));
  hub = await startAnalyticsHub('cut', run, { HUB_STREAMS__DUPLICATE_WINDOW_MS: String(DUPLICATE_WINDOW_MS), HUB_ANALYTICS__CHECKPOINTINTERVALMS: '500' });
  assert.equal((await jsm.streams.info(EVENTS_STREAM)).config.duplicate_window, nanos(DUPLICATE_WINDOW_MS), 'the hub set the short window');
  // An observer of this agent's messages: under interest retention the stream keeps them until it acked them too.
  await jsm.consumers.add(EVENTS_STREAM, {
    durable_name: `observer-${agentId}`,
    filter_subject: `events.${agentId}.>`,
    ack_policy: AckPolicy.All,
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: nanos(300_000),
  });
  proxies = await Promise.all(stack.natsUrls.map((url) => TcpProxy.start({ host: new URL(url).hostname, port: Number(new URL(url).port) })));
  ports = await agentPorts();
  agent = await startAgent(agentId, proxies.map((p) => `nats://127.0.0.1:${p.port}`), ports, mkdtempSync(join(tmpdir(), 'agent-')), {
    EDGE_NATS__IGNORE_DISCOVERED_SERVERS: 'true',
    EDGE_PARTITIONS: String(PARTITIONS),
  });
});

after(async () => {
  await agent?.stop();
  await hub?.process.stop();
  for (const p of proxies) await p.close();
  if (nc) {
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.delete(EVENTS_STREAM, `observer-${agentId}`).catch(() => undefined);
    if (originalWindow !== undefined) await jsm.streams.update(EVENTS_STREAM, { duplicate_window: originalWindow }).catch(() => undefined);
    await (await openRuleBucket(nc)).delete(ruleKey(rule.name)).catch(() => undefined);
    await nc.close();
  }
});

/** Batches of this agent stored more than once in EVENTS (same range and partition), from the observer. */
async function storedTwice(): Promise<number> {
  const consumer = await jetstream(nc).consumers.get(EVENTS_STREAM, `observer-${agentId}`);
  const seen = new Map<string, number>();
  for (;;) {
    const batch = await consumer.fetch({ max_messages: 1000, expires: 2000 });
    let last: { ack(): void } | undefined;
    for await (const message of batch) {
      const { first, last: end, partition } = decodeBatch(message.data);
      const key = `${first}-${end}:${partition}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      last = message;
    }
    if (!last) break;
    last.ack();
  }
  return [...seen.values()].filter((n) => n > 1).length;
}

test('edge cut off longer than the duplicate window, acks lost: resent batches count once in rows and windows', async () => {
  const base = Math.ceil(Date.now() / 10_000) * 10_000 + 10_000;
  const devices = 16;
  const events: WireEvent[] = [];
  const accepted = new Set<string>();
  const send = async (step: number): Promise<void> => {
    const lines: string[] = [];
    const batch: WireEvent[] = [];
    for (let d = 0; d < devices; d++) {
      const timestamp = base + step * 1000 + d;
      const body = { event_id: `${agentId}-${step}-${d}`, device_id: `${agentId}-d${d}`, timestamp, metric, value: (step * 7 + d) % 13 };
      lines.push(JSON.stringify({ type: 'device.telemetry', ...body }));
      batch.push({ id: body.event_id, type: 'device.telemetry', sv: 1, key: body.device_id, ts: timestamp * 1000, its: 0, src: 'http', body });
    }
    const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') });
    assert.equal(response.status, 200, 'the agent accepts while cut off (outbox)');
    events.push(...batch);
    for (const e of batch) accepted.add(e.id);
  };

  let step = 0;
  const sendFor = async (ms: number): Promise<void> => {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      await send(step++);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await sendFor(3_000);
  // The worst moment: batches reach the server and are stored, their acknowledgements are lost ...
  for (const p of proxies) p.dropReplies();
  await sendFor(1_500);
  // ... then the link is gone, for three duplicate windows.
  for (const p of proxies) p.cut();
  const cutAt = Date.now();
  await sendFor(CUT_MS);
  const outbox = ((await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { outbox: { rows: number } }).outbox.rows;
  assert.ok(outbox > 0, `events waited in the outbox during the cut (${outbox})`);
  for (const p of proxies) p.heal();
  const healedAt = Date.now();
  await sendFor(3_000);
  await waitFor(
    async () => ((await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { outbox: { rows: number } }).outbox.rows,
    (rows) => rows === 0,
    60_000,
    250,
  );
  const drainedMs = Date.now() - healedAt;

  const twice = await storedTwice();
  process.stderr.write(
    `[edge-cut] ${accepted.size} events accepted; cut ${((healedAt - cutAt) / 1000).toFixed(1)} s (window ${DUPLICATE_WINDOW_MS / 1000} s); ` +
      `outbox of ${outbox} drained ${(drainedMs / 1000).toFixed(1)} s after the link came back; ${twice} batches stored twice by JetStream\n`,
  );
  assert.ok(twice > 0, 'the scenario happened: some batches were stored a second time (acks lost, resent past the window)');

  // Raw rows: each accepted event exactly once.
  const rows = await waitFor(() => rowsPerEventId(stack.questdbHttp, 'device_telemetry', agentId), (r) => [...accepted].every((id) => r.has(id)), 60_000, 500);
  const missing = [...accepted].filter((id) => !rows.has(id));
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} accepted events missing`);
  assert.deepEqual([...rows].filter(([, n]) => n !== 1).slice(0, 5), [], 'no event stored twice');

  // Windows: equal to an offline run over the events, each once.
  const expected = offlineWindowValues(rule, events, PARTITIONS, agentId);
  assert.ok(expected.size > devices * 5, `the offline run closes windows (${expected.size})`);
  const got = await waitFor(() => storedWindowValues(stack.questdbHttp, rule.name, ['n', 'total']), (m) => [...expected.keys()].every((k) => m.has(k)), 60_000, 500);
  const wrong = [...expected].filter(([k, v]) => got.get(k) !== v);
  assert.deepEqual(wrong.slice(0, 5).map(([k, v]) => `${k}: expected ${v}, got ${got.get(k)}`), [], `${wrong.length} of ${expected.size} window values differ from the offline run`);
});
