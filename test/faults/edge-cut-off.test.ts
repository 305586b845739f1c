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
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import { encodeRule, openRuleBucket, ruleKey } from '../../hub/src/rules/index.js';
import { EVENTS_STREAM, type WireEvent } from '../../shared/wire.js';
import { startAnalyticsHub, type AnalyticsHub } from '../support/analytics-hub.js';
import { testStack } from '../support/env.js';
import { storeTimesObserver } from '../support/nats-fault-run.js';
import { agentPorts, startAgent, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { assertExactlyOnce, waitFor } from '../support/questdb.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { assertWindowsEqual, countAndSumRule, offlineWindowValues } from '../support/window-check.js';

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
let agentMessages: Awaited<ReturnType<typeof storeTimesObserver>>;

before(async () => {
  nc = await connect({ servers: stack.natsUrls });
  const jsm = await jetstreamManager(nc);
  // Before any hub ran (this file alone on a fresh stack) there is no stream yet: the default window then.
  originalWindow = await jsm.streams.info(EVENTS_STREAM).then((i) => i.config.duplicate_window, () => nanos(120_000));
  await (await openRuleBucket(nc)).put(ruleKey(rule.name), encodeRule(rule));
  hub = await startAnalyticsHub('cut', run, { HUB_STREAMS__DUPLICATE_WINDOW_MS: String(DUPLICATE_WINDOW_MS), HUB_ANALYTICS__CHECKPOINTINTERVALMS: '500' });
  assert.equal((await jsm.streams.info(EVENTS_STREAM)).config.duplicate_window, nanos(DUPLICATE_WINDOW_MS), 'the hub set the short window');
  // An observer of this agent's messages, to count the batches JetStream stored twice.
  agentMessages = await storeTimesObserver(nc, agentId);
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
    if (originalWindow !== undefined) await jsm.streams.update(EVENTS_STREAM, { duplicate_window: originalWindow }).catch(() => undefined);
    await (await openRuleBucket(nc)).delete(ruleKey(rule.name)).catch(() => undefined);
    await nc.close();
  }
});

/** Outbox rows of the agent, from its /healthz. */
async function outboxRows(): Promise<number> {
  return ((await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { outbox: { rows: number } }).outbox.rows;
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
  // Batches of this agent stored more than once in EVENTS (same range and partition).
  const storedTwice = async (): Promise<number> => {
    const stored = new Map<string, number>();
    for (const { batch } of (await agentMessages()).inStreamOrder) {
      const key = `${batch.first}-${batch.last}:${batch.partition}`;
      stored.set(key, (stored.get(key) ?? 0) + 1);
    }
    return [...stored.values()].filter((n) => n > 1).length;
  };
  // The fault needs batches in flight when the replies start to vanish; about one run in four had none then, so the
  // fault is played again (with new events) when the first round stored nothing twice.
  let twice = 0;
  for (let round = 1; round <= 2 && twice === 0; round++) {
    await sendFor(3_000);
    // The worst moment: batches reach the server and are stored, their acknowledgements are lost ...
    for (const p of proxies) p.dropReplies();
    await sendFor(1_500);
    // ... then the link is gone, for three duplicate windows.
    for (const p of proxies) p.cut();
    const cutAt = Date.now();
    await sendFor(CUT_MS);
    const outbox = await outboxRows();
    assert.ok(outbox > 0, `events waited in the outbox during the cut (${outbox})`);
    for (const p of proxies) p.heal();
    const healedAt = Date.now();
    await sendFor(3_000);
    await waitFor(outboxRows, (rows) => rows === 0, 60_000, 250);
    const drainedMs = Date.now() - healedAt;
    twice = await storedTwice();
    process.stderr.write(
      `[edge-cut] round ${round}: ${accepted.size} events accepted; cut ${((healedAt - cutAt) / 1000).toFixed(1)} s (window ${DUPLICATE_WINDOW_MS / 1000} s); ` +
        `outbox of ${outbox} drained ${(drainedMs / 1000).toFixed(1)} s after the link came back; ${twice} batches stored twice by JetStream\n`,
    );
  }
  assert.ok(twice > 0, 'the scenario happened: some batches were stored a second time (acks lost, resent past the window)');

  // Raw rows: each accepted event exactly once.
  await assertExactlyOnce(stack.questdbHttp, agentId, accepted);

  // Windows: equal to an offline run over the events, each once.
  const expected = offlineWindowValues(rule, events, PARTITIONS, agentId);
  assert.ok(expected.size > devices * 5, `the offline run closes windows (${expected.size})`);
  await assertWindowsEqual(stack.questdbHttp, rule, expected);
});
