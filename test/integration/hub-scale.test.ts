/**
 * `hub scale` on the real stack under a load step: 1,000 events/s for 20 s, x4 (4,000/s) for 60 s, then 1,000/s
 * again. The supervisor must add workers during the step (the analytics partitions move to them by their leases),
 * remove them again once the load has fallen, never change twice within a cool-down, and log a reason for every
 * change. Afterwards every event is in QuestDB exactly once and the window results equal an offline run over the
 * stream (a partition that moved was neither lost nor counted twice). The timeline is printed.
 *
 * This machine has 2 cores, so more processes cannot add CPU; each worker gets a fixed capacity instead
 * (FAULT_HUB_MESSAGE_DELAY_MS: 60 ms per message, about 16 messages/s), as if each had a machine of its own. The load
 * is one message of 125 events per partition per second at the base rate (8 messages/s, half a worker) and four
 * during the step (32 messages/s: two workers' worth).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import type { ScaleStatus } from '../../hub/src/scaling/scale-supervisor.js';
import { encodeRule, openRuleBucket, ruleKey } from '../../hub/src/rules/index.js';
import type { WireEvent } from '../../shared/wire.js';
import { agentPublisher } from '../../benchmarks/lib/agent-publisher.js';
import { startProcess, type ManagedProcess } from '../../scripts/lib/processes.js';
import { testStack } from '../support/env.js';
import { storeTimesObserver } from '../support/nats-fault-run.js';
import { freePort, LOG_DIR } from '../support/processes.js';
import { query, waitFor } from '../support/questdb.js';
import { assertWindowsEqual, countAndSumRule, offlineWindowValuesOf } from '../support/window-check.js';

const stack = testStack();
const run = Date.now().toString(36);
const agentId = `scale-${run}`;
const rule = countAndSumRule(`scale-${run}`, 'temperature', { sizeMs: 1000 });
const PARTITIONS = 8;
const PER_MESSAGE = 125;
/** One message per partition per tick at the base rate, four during the step. */
const BASE_RATE = PER_MESSAGE * PARTITIONS;
const STEP_RATE = BASE_RATE * 4;
const DEVICES = 64;
const settings = {
  minWorkers: 1,
  maxWorkers: 3,
  intervalMs: 1000,
  targetLagPerWorker: 30,
  // Each worker reads ahead 10 messages of 60 ms: about 0.6 s of waiting on top of the flush interval is normal here.
  latencyHighMs: 10_000,
  latencyLowMs: 2500,
  scaleUpAfterMs: 3000,
  scaleDownAfterMs: 20_000,
  coolDownMs: 10_000,
  scaleDownCoolDownMs: 20_000,
};

let nc: NatsConnection;
let supervisor: ManagedProcess | undefined;
let supervisorPort: number;
const workerPids = new Set<number>();

before(async () => {
  nc = await connect({ servers: stack.natsUrls });
  await (await openRuleBucket(nc)).put(ruleKey(rule.name), encodeRule(rule));
});

after(async () => {
  await supervisor?.stop(90_000);
  // A supervisor that died would leave its workers: none may outlive the test.
  for (const pid of workerPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await (await openRuleBucket(nc)).delete(ruleKey(rule.name)).catch(() => undefined);
  await nc.close();
});

async function scaleStatus(): Promise<ScaleStatus> {
  const status = (await (await fetch(`http://127.0.0.1:${supervisorPort}/status`)).json()) as ScaleStatus;
  for (const w of status.workers) if (w.pid) workerPids.add(w.pid);
  return status;
}

async function ownedBy(port: number): Promise<number> {
  try {
    const health = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { analytics?: { owned: number[] } };
    return health.analytics?.owned.length ?? 0;
  } catch {
    return 0;
  }
}

test('a load step adds hub workers, partitions move without loss or double counting, and the workers go again', async () => {
  supervisorPort = await freePort();
  const firstWorkerPort = await freePort();
  const env: Record<string, string> = {
    HUB_NATS__SERVERS: JSON.stringify(stack.natsUrls),
    HUB_QUESTDB__HTTPURL: stack.questdbHttp,
    HUB_ANALYTICS__LEASES_BUCKET: `leases-${run}`,
    HUB_ANALYTICS__STATE_BUCKET: `state-${run}`,
    HUB_ANALYTICS__FRESH_START: 'new',
    HUB_ANALYTICS__CHECKPOINT_INTERVAL_MS: '500',
    // A small read-ahead: a worker of fixed capacity must not sit on messages the others could take.
    HUB_CONSUMER__PULL_MAX_MESSAGES: '10',
    HUB_SCALING__FIRST_WORKER_PORT: String(firstWorkerPort),
    HUB_SCALING__HTTP_PORT: String(supervisorPort),
    FAULT_HUB_MESSAGE_DELAY_MS: '60',
  };
  for (const [key, value] of Object.entries(settings)) env[`HUB_SCALING__${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`] = String(value);
  supervisor = await startProcess({
    name: `hub-scale-${run}`,
    script: 'bin/hub.js',
    args: ['scale'],
    logDir: LOG_DIR,
    healthUrl: `http://127.0.0.1:${supervisorPort}/status`,
    timeoutMs: 60_000,
    env,
  });
  // Worker 0 holds every partition before the first event, so the fresh state covers exactly this run.
  await waitFor(() => ownedBy(firstWorkerPort), (n) => n === PARTITIONS, 90_000, 250);
  // Messages earlier tests left for the shared raw durable are a lag of their own, which may already have added
  // workers: the step starts from one worker and no lag, so that what it adds is its own doing.
  const settled = await waitFor(scaleStatus, (s) => s.workers.length === 1 && s.last !== undefined && s.last.lag.lag <= 2, 150_000, 1000);
  assert.equal(settled.workers.length, 1, 'one worker and no lag before the load');
  const changesBefore = settled.changes.length;

  const observe = await storeTimesObserver(nc, agentId);
  // As the agent forwards: one message per partition per call (at most 1,000 events per call, so never split), a
  // deterministic id, and a publish that timed out on a loaded machine sent again with the same id.
  const publish = agentPublisher(jetstream(nc, { timeout: 10_000 }), { agentId, partitions: PARTITIONS, perBatch: BASE_RATE, attempts: 10 });
  const started = Date.now();
  const at = () => (Date.now() - started) / 1000;
  let sent = 0;
  let rate = BASE_RATE;
  let phase = 'base';
  const timeline: string[] = [];
  const samples: Array<{ t: number; phase: string; workers: number; target: number }> = [];
  let loadRunning = true;
  let loadError: unknown;
  const load = (async () => {
    // One tick per second: `rate` events over DEVICES devices, spread evenly over the partitions by the publisher.
    for (let tick = 0; loadRunning; tick++) {
      const nowMs = Date.now();
      // The phase may change while this tick publishes: its size is fixed here.
      const tickRate = rate;
      const events: WireEvent[] = [];
      for (let i = 0; i < tickRate; i++) {
        const n = sent + i;
        const device = `${agentId}-d${n % DEVICES}`;
        const body = { event_id: `${agentId}-${n}`, device_id: device, timestamp: nowMs, metric: 'temperature', value: n % 70 };
        events.push({ id: body.event_id, type: 'device.telemetry', sv: 1, key: device, ts: nowMs * 1000, its: nowMs * 1000, src: 'test', body });
      }
      for (let i = 0; i < events.length; i += BASE_RATE) await publish(events.slice(i, i + BASE_RATE));
      sent += tickRate;
      await new Promise((r) => setTimeout(r, Math.max(0, started + (tick + 1) * 1000 - Date.now())));
    }
  })().catch((error: unknown) => {
    loadError = error;
  });
  const sampler = setInterval(() => {
    void scaleStatus().then(
      (s) => {
        samples.push({ t: at(), phase, workers: s.workers.filter((w) => !w.stopping).length, target: s.target });
        const last = s.last;
        if (last) timeline.push(`${at().toFixed(0).padStart(4)} s  ${phase.padEnd(5)} workers ${s.workers.length} lag raw ${last.lag.raw} analytics ${last.lag.analytics} p95 ${last.latencyP95Ms === undefined ? '-' : Math.round(last.latencyP95Ms)} ms: ${last.decision}`);
      },
      () => undefined,
    );
  }, 2000);

  let final: ScaleStatus | undefined;
  const report = (status: ScaleStatus): void => {
    process.stderr.write(`[hub-scale] ${sent} events sent; the step began at 20 s; changes:\n`);
    for (const c of status.changes) {
      process.stderr.write(`  ${((Date.parse(c.at) - started) / 1000).toFixed(0).padStart(4)} s  ${c.from} -> ${c.to}  ${c.reason}\n`);
    }
    process.stderr.write(`[hub-scale] timeline (every 2 s):\n${timeline.map((l) => `  ${l}`).join('\n')}\n`);
  };
  try {
    await new Promise((r) => setTimeout(r, 20_000));
    phase = 'step';
    rate = STEP_RATE;
    const stepAt = Date.now();
    await new Promise((r) => setTimeout(r, 60_000));
    phase = 'after';
    rate = BASE_RATE;
    const fellAt = Date.now();
    // Back to the minimum while the base load goes on: the load fell, so the workers go.
    final = await waitFor(scaleStatus, (s) => s.target === settings.minWorkers && s.workers.length === settings.minWorkers && s.changes.slice(changesBefore).some((c) => c.direction === 'down'), 150_000, 1000).catch(
      async () => scaleStatus(),
    );
    final = { ...final, changes: final.changes.slice(changesBefore) };
    report(final);
    assert.equal(final.workers.length, settings.minWorkers, 'back to the minimum after the load fell');
    const ups = final.changes.filter((c) => c.direction === 'up' && Date.parse(c.at) >= stepAt);
    assert.ok(ups.length > 0, 'workers were added during the step');
    assert.ok(Math.max(...final.changes.map((c) => c.to)) >= 2, 'the step needed at least two workers');
    assert.ok(
      final.changes.some((c) => c.direction === 'down' && Date.parse(c.at) >= fellAt),
      'workers were removed after the load fell',
    );
    assert.ok(samples.some((s) => s.phase === 'step' && s.workers >= 2), 'a second worker ran during the step');
    // Never two changes within the cool-down (scale-ups) or the down cool-down.
    for (let i = 1; i < final.changes.length; i++) {
      const c = final.changes[i]!;
      const gap = Date.parse(c.at) - Date.parse(final.changes[i - 1]!.at);
      assert.ok(gap >= (c.direction === 'up' ? settings.coolDownMs : settings.scaleDownCoolDownMs) - 1000, `change ${i} came ${gap} ms after the one before`);
    }
    for (const c of final.changes) assert.ok(c.reason.length > 10, `every change says why: ${JSON.stringify(c)}`);
  } finally {
    loadRunning = false;
    await load;
    clearInterval(sampler);
  }
  assert.equal(loadError, undefined, 'every message of the load was stored');
  assert.ok(final);
  // Nothing lost, nothing twice: every event once in device_telemetry ...
  const counts = await waitFor(
    async () => (await query<{ n: number; ids: number }>(stack.questdbHttp, `select count() n, count_distinct(event_id) ids from device_telemetry where agent_id = '${agentId}'`))[0],
    (row) => Number(row?.ids) >= sent,
    120_000,
    1000,
  );
  assert.equal(Number(counts?.ids), sent, 'every event sent is in QuestDB');
  assert.equal(Number(counts?.n), sent, 'and none twice');
  // ... and the windows, computed by whichever worker held each partition at the time, equal an offline run.
  const { inStreamOrder } = await observe();
  const expected = offlineWindowValuesOf(rule, inStreamOrder);
  assert.ok(expected.size / 2 >= 1000, `the offline run closes windows (${expected.size / 2})`);
  await assertWindowsEqual(stack.questdbHttp, rule, expected, { exhaustive: true });
  process.stderr.write(`[hub-scale] ${sent} events once each; ${expected.size / 2} windows equal the offline run over the stream\n`);
});
