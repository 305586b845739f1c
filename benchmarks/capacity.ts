/**
 * Per-unit costs for capacity planning (docs/capacity.md): CPU-seconds per 100k events of each stage, each charged to
 * the process that spends it, and memory per device and per key of window state. On a shared 2-core machine the
 * events/s of a run depend on what else runs; the CPU a process spends per event much less so.
 *
 *   agent       one edge agent (compiled) takes HTTP NDJSON (1,000 lines per request, 6 closed-loop clients) for
 *               --agent-seconds, once per --devices count; agent CPU (parse, validate, synced outbox commit, publish)
 *               and the 3 NATS nodes' CPU per 100k events, JetStream bytes per event, agent RSS per 10k devices.
 *   jetstream   --js-events published straight into an R1 and an R3 stream (500 events per message, and 100 for R3,
 *               64 in flight): the nats-server processes' CPU per 100k events, divided by the replicas.
 *   hub         a backlog of --hub-events drained by one hub process: raw path only, raw + the 7 ready rules of
 *               hub/rules, and + the data-quality rules; hub, NATS and QuestDB CPU per 100k events. The raw-only
 *               drain's QuestDB CPU is the QuestDB write cost per 100k rows.
 *   memory      in this process, without I/O: the ready rules' state for --keys distinct devices (heap after a full
 *               GC) per 100k keys; the window rule alone and all ready rules + quality.
 *
 *   npm run bench:capacity [-- --stages agent,jetstream,hub,memory] [--agent-seconds 10] [--devices 1000,10000,100000]
 *                              [--js-events 300000] [--hub-events 200000] [--keys 100000,200000]
 */
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { OperatorSet } from '../hub/src/analytics/operator-set.js';
import { readQualityRules } from '../hub/src/quality/quality-rules.js';
import { readRuleFiles } from '../hub/src/rules/kv-rule-store.js';
import type { EventBatch, WireEvent } from '../shared/wire.js';
import { ensureRuntime, REPO_ROOT } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, stackStatus, startStack } from '../scripts/lib/stack.js';
import { agentPublisher } from './lib/agent-publisher.js';
import { httpNdjsonLoad, startBenchAgent } from './lib/edge-agent-bench.js';
import { DRAIN_PARTITIONS, DRAIN_PER_BATCH, measureIdleCpu, PUBLISH_TIMEOUT_MS, runBacklogDrain, stackNatsPids, type DrainMeasurement, type HubRole } from './lib/hub-drain.js';
import { mixEvent } from './lib/hub-event-mix.js';
import { cpuSecondsOf, machineDescription, sampleProcess, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({
  options: {
    stages: { type: 'string', default: 'agent,jetstream,hub,memory' },
    'agent-seconds': { type: 'string', default: '10' },
    devices: { type: 'string', default: '1000,10000,100000' },
    'js-events': { type: 'string', default: '300000' },
    'hub-events': { type: 'string', default: '200000' },
    keys: { type: 'string', default: '100000,200000' },
  },
});
const stages = new Set(values.stages.split(','));
const agentSeconds = Number(values['agent-seconds']);
const deviceCounts = values.devices.split(',').map(Number);
const jsEvents = Number(values['js-events']);
const hubEvents = Number(values['hub-events']);
const keyCounts = values.keys.split(',').map(Number);
const say = (line: string) => process.stderr.write(`${line}\n`);
const PER_100K = 100_000;
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const perHundredK = (cpuSeconds: number, events: number) => round((cpuSeconds / events) * PER_100K);
const MB = 2 ** 20;

// ---- memory: first, while this process's heap holds nothing else ------------------------------------------------

interface WindowStateResult {
  ruleSet: string;
  rules: number;
  keys: number;
  readingsPerKey: number;
  heapDeltaMB: number;
  rssDeltaMB: number;
  heapMBPer100kKeys: number;
  rssMBPer100kKeys: number;
}

/**
 * The ready rules' state for `keys` devices: each device sends `readingsPerKey` readings inside one 10 s window, so
 * every window stays open (the watermark stays before its end) and every per-device state is live when measured.
 */
function measureWindowState(ruleSet: 'window rule telemetry-per-device-10s' | 'all ready rules + quality', keys: number, readingsPerKey: number): WindowStateResult {
  const gc = runInNewContext('gc') as () => void;
  const ready = readRuleFiles(new URL('../hub/rules', import.meta.url).pathname).rules.map(({ rule }) => rule);
  const rules =
    ruleSet === 'all ready rules + quality'
      ? [...ready, ...readQualityRules(new URL('../schemas', import.meta.url).pathname).rules.map(({ rule }) => rule)]
      : ready.filter((rule) => rule.name === 'telemetry-per-device-10s');
  gc();
  const before = process.memoryUsage();
  let operators: OperatorSet | undefined = new OperatorSet(rules, { maxOutOfOrdernessMs: 5000, idleTimeoutMs: 30000, advanceWhenAllIdle: true });
  // A window start an hour ago; readings 2 s apart from its start, so the last lies 2 s before the window's end and
  // the watermark (latest event time - 5 s) never closes it. The wall clock passed in stays fixed: nothing idles out.
  const windowStart = Math.floor((Date.now() - 3_600_000) / 10_000) * 10_000;
  const nowMs = Date.now();
  let seq = 0;
  for (let reading = 0; reading < readingsPerKey; reading++) {
    const ts = windowStart + reading * 2000;
    for (let first = 0; first < keys; first += DRAIN_PER_BATCH) {
      const events: WireEvent[] = [];
      for (let k = first; k < Math.min(keys, first + DRAIN_PER_BATCH); k++) {
        const device = `cap-d${k}`;
        const body = { event_id: `cap-${k}-${reading}`, device_id: device, timestamp: ts, metric: 'temperature', value: 20 + ((k * 7 + reading) % 50) };
        events.push({ id: body.event_id, type: 'device.telemetry', sv: 1, key: device, ts: ts * 1000, its: ts * 1000, src: 'bench', body });
      }
      const batch: EventBatch = { v: 1, agent: 'cap', partition: 0, first: seq, last: seq, events };
      operators.apply(batch, ++seq, nowMs);
    }
  }
  gc();
  const after = process.memoryUsage();
  const result: WindowStateResult = {
    ruleSet,
    rules: rules.length,
    keys,
    readingsPerKey,
    heapDeltaMB: round((after.heapUsed - before.heapUsed) / MB, 1),
    rssDeltaMB: round((after.rss - before.rss) / MB, 1),
    heapMBPer100kKeys: round(((after.heapUsed - before.heapUsed) / MB / keys) * PER_100K, 1),
    rssMBPer100kKeys: round(((after.rss - before.rss) / MB / keys) * PER_100K, 1),
  };
  if (operators.rules().length === 0) throw new Error('no rules loaded'); // keeps `operators` alive until measured
  operators = undefined;
  gc();
  return result;
}

const windowState: WindowStateResult[] = [];
if (stages.has('memory')) {
  setFlagsFromString('--expose-gc');
  for (const ruleSet of ['window rule telemetry-per-device-10s', 'all ready rules + quality'] as const) {
    for (const keys of keyCounts) {
      say(`memory: ${ruleSet}, ${keys.toLocaleString('en-US')} keys...`);
      windowState.push(measureWindowState(ruleSet, keys, 2));
    }
  }
}

// ---- the stack ----------------------------------------------------------------------------------------------------

const needsStack = stages.has('agent') || stages.has('jetstream') || stages.has('hub');
if (needsStack && (stages.has('agent') || stages.has('hub'))) {
  say('compiling the agent and the hub (npm run build)...');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
}
const wasRunning = (await stackStatus(DEFAULT_STACK_DIR).catch(() => undefined))?.healthy === true;
const stack = needsStack ? await startStack({ dir: DEFAULT_STACK_DIR, ports: DEFAULT_PORTS, detached: true, runtime: await ensureRuntime(say), log: say }) : undefined;
const nc = stack ? await connect({ servers: stack.natsUrls }) : undefined;
const jsm = nc ? await jetstreamManager(nc) : undefined;
const natsPids = stack ? stackNatsPids(stack) : [];
/** The 3 NATS nodes' CPU while idle (cores), measured once before the agent and JetStream stages. */
const natsIdleCores = stack ? (await measureIdleCpu(natsPids, [], 5000)).nats : 0;

// ---- agent --------------------------------------------------------------------------------------------------------

interface AgentResult {
  devices: number;
  events: number;
  seconds: number;
  eventsPerSecond: number;
  agentCpuSecondsPer100k: number;
  /** The 3 nats-server processes while the agent published to EVENTS (R3) at the batch sizes it chose. */
  natsCpuSecondsPer100k: number;
  natsNetCpuSecondsPer100k: number;
  jetstreamMessages: number;
  eventsPerMessage: number;
  /** Stored bytes per event in EVENTS (msgpack batch, subject and headers): what crosses the edge link. */
  jetstreamBytesPerEvent: number;
  agentRssMB: number;
  agentPeakRssMB: number;
}
const agentRuns: AgentResult[] = [];
if (stages.has('agent') && jsm) {
  await ensureEventsStream();
  for (const devices of deviceCounts) {
    const agentId = `bench-capacity-${devices}`;
    const bench = await startBenchAgent({ name: `bench-capacity-agent-${devices}`, agentId, script: 'dist/edge-agent/src/main.js' });
    say(`agent: HTTP NDJSON from ${devices.toLocaleString('en-US')} devices for ${agentSeconds} s...`);
    const streamBefore = (await jsm.streams.info('EVENTS')).state;
    const agentBefore = sampleProcess(bench.process.child.pid!).cpuSeconds;
    const natsBefore = cpuSecondsOf(natsPids);
    const started = Date.now();
    // Lines cycle over all devices, so every device has sent something before the run ends (100k devices at 50k
    // events/s: each device about 5 times in 10 s).
    let line = 0;
    const events = await httpNdjsonLoad({ port: bench.ports.http, until: started + agentSeconds * 1000, concurrency: 6, perRequest: 1000, deviceOf: () => line++ % devices });
    await bench.waitOutboxEmpty();
    const seconds = (Date.now() - started) / 1000;
    const agentAfter = sampleProcess(bench.process.child.pid!);
    const natsCpu = cpuSecondsOf(natsPids) - natsBefore;
    const streamAfter = (await jsm.streams.info('EVENTS')).state;
    await bench.stop();
    await jsm.streams.purge('EVENTS', { filter: `events.${agentId}.>` });
    const messages = streamAfter.messages - streamBefore.messages;
    agentRuns.push({
      devices,
      events,
      seconds: round(seconds, 1),
      eventsPerSecond: Math.round(events / seconds),
      agentCpuSecondsPer100k: perHundredK(agentAfter.cpuSeconds - agentBefore, events),
      natsCpuSecondsPer100k: perHundredK(natsCpu, events),
      natsNetCpuSecondsPer100k: perHundredK(Math.max(0, natsCpu - natsIdleCores * seconds), events),
      jetstreamMessages: messages,
      eventsPerMessage: Math.round(events / Math.max(1, messages)),
      jetstreamBytesPerEvent: Math.round((streamAfter.bytes - streamBefore.bytes) / events),
      agentRssMB: Math.round(agentAfter.rssBytes / MB),
      agentPeakRssMB: Math.round(agentAfter.peakRssBytes / MB),
    });
  }
}
const agentRssMBPer10kDevices =
  agentRuns.length >= 2
    ? round(((agentRuns.at(-1)!.agentPeakRssMB - agentRuns[0]!.agentPeakRssMB) / (agentRuns.at(-1)!.devices - agentRuns[0]!.devices)) * 10_000, 1)
    : null;

/** EVENTS is created by the hub; a hub started and stopped once makes sure it exists on a fresh stack. */
async function ensureEventsStream(): Promise<void> {
  if (await jsm!.streams.info('EVENTS').then(() => true, () => false)) return;
  const setup = await runBacklogDrain({ stack: stack!, nc: nc!, events: DRAIN_PER_BATCH, roles: ['raw'], quality: false, say });
  await setup.close();
}

// ---- JetStream ----------------------------------------------------------------------------------------------------

interface JetStreamResult {
  replicas: number;
  eventsPerMessage: number;
  events: number;
  eventsPerSecond: number;
  /** All nats-server processes together. */
  natsCpuSecondsPer100k: number;
  /** The same divided by the replicas: what one copy of the stream costs its server. */
  natsCpuSecondsPer100kPerReplica: number;
  /** Per replica, less the nodes' idle CPU over the publish time. */
  natsNetCpuSecondsPer100kPerReplica: number;
  bytesPerEvent: number;
}
const jetstreamRuns: JetStreamResult[] = [];
if (stages.has('jetstream') && nc && jsm) {
  const js = jetstream(nc, { timeout: PUBLISH_TIMEOUT_MS });
  const events = Array.from({ length: jsEvents }, (_, i) => mixEvent(i, Date.now() - 60_000 + Math.floor(i / 100), 'cap-js'));
  for (const [replicas, perBatch] of [
    [1, 500],
    [3, 500],
    [3, 100],
  ] as const) {
    const name = `CAPACITY_R${replicas}_${perBatch}`;
    const subjectRoot = `capacity.r${replicas}.b${perBatch}`;
    await jsm.streams.delete(name).catch(() => undefined);
    // As EVENTS (hub/src/streams.ts): file storage, limits retention, a duplicate window for the message ids.
    await jsm.streams.add({ name, subjects: [`${subjectRoot}.>`], storage: StorageType.File, retention: RetentionPolicy.Limits, num_replicas: replicas, duplicate_window: 120e9 });
    await waitForStreamLeader(jsm, name);
    const publish = agentPublisher(js, { agentId: 'cap-js', partitions: DRAIN_PARTITIONS, perBatch, subject: (partition) => `${subjectRoot}.${partition}` });
    say(`jetstream: ${jsEvents.toLocaleString('en-US')} events into R${replicas}, ${perBatch} per message...`);
    const natsBefore = cpuSecondsOf(natsPids);
    const started = performance.now();
    for (let i = 0; i < events.length; i += 50_000) await publish(events.slice(i, i + 50_000));
    const seconds = (performance.now() - started) / 1000;
    const natsCpu = cpuSecondsOf(natsPids) - natsBefore;
    const state = (await jsm.streams.info(name)).state;
    await jsm.streams.delete(name);
    jetstreamRuns.push({
      replicas,
      eventsPerMessage: perBatch,
      events: jsEvents,
      eventsPerSecond: Math.round(jsEvents / seconds),
      natsCpuSecondsPer100k: perHundredK(natsCpu, jsEvents),
      natsCpuSecondsPer100kPerReplica: perHundredK(natsCpu / replicas, jsEvents),
      natsNetCpuSecondsPer100kPerReplica: perHundredK(Math.max(0, natsCpu - natsIdleCores * seconds) / replicas, jsEvents),
      bytesPerEvent: Math.round(state.bytes / jsEvents),
    });
  }
}

async function waitForStreamLeader(manager: JetStreamManager, name: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const info = await manager.streams.info(name).catch(() => undefined);
    if (info?.cluster?.leader) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- hub ----------------------------------------------------------------------------------------------------------

interface HubResult {
  ruleSet: string;
  events: number;
  drainSeconds: number;
  eventsPerSecond: number;
  hubCpuSecondsPer100k: number;
  natsCpuSecondsPer100k: number;
  /** QuestDB over the drain (raw rows, and the rules' window rows and alerts). */
  questdbCpuSecondsPer100k: number;
  /** QuestDB until its WAL had applied window_results too. */
  questdbCpuSecondsPer100kApplied: number;
  /** The servers' CPU over the drain less what they use idle (measured just before) over the drain's length. */
  natsNetCpuSecondsPer100k: number;
  questdbNetCpuSecondsPer100k: number;
  idleCpuCores: { nats: number; questdb: number };
  windowResultRowsPer100k: number;
  hubPeakRssMB: number;
  timedOut: boolean;
}
const hubRuns: HubResult[] = [];
if (stages.has('hub') && stack && nc) {
  const ruleSets: Array<{ ruleSet: string; roles: HubRole[]; quality: boolean }> = [
    { ruleSet: 'raw rows only', roles: ['raw'], quality: false },
    { ruleSet: 'raw + 7 ready rules', roles: ['both'], quality: false },
    { ruleSet: 'raw + 7 ready rules + 3 quality rules', roles: ['both'], quality: true },
  ];
  for (const { ruleSet, roles, quality } of ruleSets) {
    say(`hub: ${ruleSet}...`);
    const drain = await runBacklogDrain({ stack, nc, events: hubEvents, roles, quality, say });
    await drain.close();
    hubRuns.push(hubResult(ruleSet, drain.measurement));
  }
}

function hubResult(ruleSet: string, m: DrainMeasurement): HubResult {
  return {
    ruleSet,
    events: m.events,
    drainSeconds: round(m.wholeSeconds, 1),
    eventsPerSecond: Math.round(m.events / m.wholeSeconds),
    hubCpuSecondsPer100k: perHundredK(m.hubCpuSeconds, m.events),
    natsCpuSecondsPer100k: perHundredK(m.natsCpuSeconds, m.events),
    questdbCpuSecondsPer100k: perHundredK(m.questdbCpuSeconds, m.events),
    questdbCpuSecondsPer100kApplied: perHundredK(m.questdbCpuSecondsApplied, m.events),
    natsNetCpuSecondsPer100k: perHundredK(Math.max(0, m.natsCpuSeconds - m.idleCpuCores.nats * m.wholeSeconds), m.events),
    questdbNetCpuSecondsPer100k: perHundredK(Math.max(0, m.questdbCpuSeconds - m.idleCpuCores.questdb * m.wholeSeconds), m.events),
    idleCpuCores: m.idleCpuCores,
    windowResultRowsPer100k: Math.round((m.windowResultRows / m.events) * PER_100K),
    hubPeakRssMB: Math.round(m.hubPeakRssBytes / MB),
    timedOut: m.timedOut,
  };
}

await nc?.close();
if (stack && !wasRunning) await stack.stop();

// ---- summary ------------------------------------------------------------------------------------------------------

const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted.length === 0 ? null : sorted[Math.floor((sorted.length - 1) / 2)]!;
};
const rawOnly = hubRuns.find((r) => r.ruleSet === 'raw rows only');
const r1 = jetstreamRuns.find((r) => r.replicas === 1 && r.eventsPerMessage === 500);
const r3 = jetstreamRuns.find((r) => r.replicas === 3 && r.eventsPerMessage === 500);
const perStage = {
  agentIngestCpuSecondsPer100k: median(agentRuns.map((r) => r.agentCpuSecondsPer100k)),
  jetstreamR1CpuSecondsPer100kPerReplica: r1?.natsCpuSecondsPer100kPerReplica ?? null,
  jetstreamR3CpuSecondsPer100kPerReplica: r3?.natsCpuSecondsPer100kPerReplica ?? null,
  hubCpuSecondsPer100k: Object.fromEntries(hubRuns.map((r) => [r.ruleSet, r.hubCpuSecondsPer100k])),
  /** QuestDB's CPU per 100k raw rows, from the raw-only drain; net: less its idle CPU over the drain's length. */
  questdbWriteCpuSecondsPer100kRows: rawOnly?.questdbCpuSecondsPer100k ?? null,
  questdbWriteNetCpuSecondsPer100kRows: rawOnly?.questdbNetCpuSecondsPer100k ?? null,
  agentRssMBPer10kDevices,
  hubHeapMBPer100kWindowKeys: Object.fromEntries(
    [...new Set(windowState.map((w) => w.ruleSet))].map((ruleSet) => [ruleSet, median(windowState.filter((w) => w.ruleSet === ruleSet).map((w) => w.heapMBPer100kKeys))]),
  ),
};
const load = execFileSync('cat', ['/proc/loadavg']).toString().trim();
const setup =
  `NATS idle: ${natsIdleCores} cores; local stack: 3-node NATS JetStream (sync_interval always) and QuestDB on the same machine as the processes measured and the load ` +
  `generators; compiled agent and hub; CPU from /proc (user + system) of each process; ${machineDescription()}; load average at the end: ${load}`;
const file = writeResults('capacity', { date: new Date().toISOString(), setup, perStage, agentRuns, jetstreamRuns, hubRuns, windowState });

const out = (s: string) => process.stdout.write(`${s}\n`);
out(`\nCapacity: per-unit costs. Setup: ${setup}\n`);
if (agentRuns.length > 0) {
  out('Edge agent, HTTP NDJSON (1,000 lines per request, 6 clients) -> JetStream R3:\n');
  out(
    table(
      agentRuns.map((r) => ({
        devices: r.devices.toLocaleString('en-US'),
        'events/s': r.eventsPerSecond.toLocaleString('en-US'),
        'agent CPU-s / 100k': r.agentCpuSecondsPer100k,
        '3 NATS CPU-s / 100k (net of idle)': `${r.natsCpuSecondsPer100k} (${r.natsNetCpuSecondsPer100k})`,
        'events / message': r.eventsPerMessage,
        'bytes / event': r.jetstreamBytesPerEvent,
        'agent RSS MB (peak)': `${r.agentRssMB} (${r.agentPeakRssMB})`,
      })),
    ) + `\nagent peak RSS per 10k devices: ${agentRssMBPer10kDevices ?? '-'} MB\n`,
  );
}
if (jetstreamRuns.length > 0) {
  out('JetStream publish (64 in flight):\n');
  out(
    table(
      jetstreamRuns.map((r) => ({
        stream: `R${r.replicas}, ${r.eventsPerMessage} per message`,
        'events/s': r.eventsPerSecond.toLocaleString('en-US'),
        'NATS CPU-s / 100k (all nodes)': r.natsCpuSecondsPer100k,
        'per replica (net of idle)': `${r.natsCpuSecondsPer100kPerReplica} (${r.natsNetCpuSecondsPer100kPerReplica})`,
        'bytes / event': r.bytesPerEvent,
      })),
    ) + '\n',
  );
}
if (hubRuns.length > 0) {
  out(`Hub, one process draining a backlog of ${hubEvents.toLocaleString('en-US')} events (8 partitions, 500 per message):\n`);
  out(
    table(
      hubRuns.map((r) => ({
        'rule set': r.ruleSet,
        'events/s': r.eventsPerSecond.toLocaleString('en-US'),
        'hub CPU-s / 100k': r.hubCpuSecondsPer100k,
        'NATS CPU-s / 100k': r.natsCpuSecondsPer100k,
        'QuestDB CPU-s / 100k (net of idle)': `${r.questdbCpuSecondsPer100k} (${r.questdbNetCpuSecondsPer100k})`,
        'NATS net of idle': r.natsNetCpuSecondsPer100k,
        'idle cores NATS / QuestDB': `${r.idleCpuCores.nats} / ${r.idleCpuCores.questdb}`,
        'window rows / 100k': r.windowResultRowsPer100k.toLocaleString('en-US'),
        'hub peak RSS MB': r.hubPeakRssMB,
      })),
    ) + '\n',
  );
}
if (windowState.length > 0) {
  out('Window state, in-process, no I/O (2 readings per key inside one open 10 s window):\n');
  out(
    table(
      windowState.map((w) => ({
        rules: `${w.ruleSet} (${w.rules})`,
        keys: w.keys.toLocaleString('en-US'),
        'heap MB': w.heapDeltaMB,
        'RSS MB': w.rssDeltaMB,
        'heap MB / 100k keys': w.heapMBPer100kKeys,
      })),
    ) + '\n',
  );
}
out(`per stage: ${JSON.stringify(perStage)}\n\nwritten to ${file}`);
