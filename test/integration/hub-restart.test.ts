/**
 * A hub worker killed with SIGKILL mid-stream and started again: JetStream redelivers what it had not acked,
 * QuestDB's dedup keys absorb what it had written but not acked. Nothing lost, nothing doubled.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testStack } from '../support/env.js';
import { agentPorts, startAgent, startHub, type AgentPorts, type ManagedProcess } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';

const stack = testStack();
const agentId = `hubkill-${Date.now().toString(36)}`;
let agent: ManagedProcess;
let ports: AgentPorts;
const hubs: ManagedProcess[] = [];

before(async () => {
  ports = await agentPorts();
  agent = await startAgent(agentId, stack.natsUrls, ports, mkdtempSync(join(tmpdir(), 'agent-')));
});

after(async () => {
  await agent?.stop();
  for (const hub of hubs) await hub.stop();
});

test('killing the hub worker mid-stream loses nothing and doubles nothing', async () => {
  hubs.push(await startHub('kill-1', stack.natsUrls, stack.questdbHttp));
  const base = Date.now() - 3_600_000;
  const batches = 60;
  const perBatch = 250;
  let sent = 0;
  const send = async (b: number) => {
    const events = Array.from({ length: perBatch }, (_, i) => ({
      event_id: `${agentId}-${b}-${i}`,
      device_id: `dev-${i % 50}`,
      timestamp: base + b * perBatch + i,
      metric: 'pressure',
      value: i,
    }));
    const body = events.map((e) => JSON.stringify({ type: 'device.telemetry', ...e })).join('\n');
    const response = await fetch(`http://127.0.0.1:${ports.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    assert.equal(response.status, 200);
    sent += perBatch;
  };
  for (let b = 0; b < batches; b++) {
    await send(b);
    if (b === 20) {
      // Let the hub get some rows in, then kill it without warning.
      await waitFor(() => countRows(), (n) => n > 0, 10000, 50);
      await hubs[0]!.kill();
    }
    if (b === 35) hubs.push(await startHub('kill-2', stack.natsUrls, stack.questdbHttp));
    await new Promise((r) => setTimeout(r, 50));
  }
  const total = await waitFor(() => countRows(), (n) => n >= sent, 60000);
  assert.equal(total, sent, 'every acknowledged event is in QuestDB');
  const [distinct] = await query<{ n: number }>(stack.questdbHttp, `select count_distinct(event_id) n from device_telemetry where agent_id = '${agentId}'`);
  assert.equal(Number(distinct!.n), sent, 'no event is stored twice');
});

async function countRows(): Promise<number> {
  const [row] = await query<{ n: number }>(stack.questdbHttp, `select count() n from device_telemetry where agent_id = '${agentId}'`);
  return Number(row?.n ?? 0);
}
