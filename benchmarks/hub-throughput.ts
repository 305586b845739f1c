/**
 * Hub throughput and latency, from JetStream to QuestDB, with the ready rules of hub/rules active (3 window rules,
 * 4 CEP rules) besides the raw event rows.
 *
 *   (1) backlog: N events already in EVENTS (as edge agents publish them: msgpack batches of 500, 8 partitions);
 *       the hub starts and drains them: events/s until every raw row is in QuestDB and every partition's analytics
 *       snapshot covers the last message.
 *   (2) live: events published at a fixed rate with the current time as event time; device timestamp -> row written
 *       by the hub (QuestDB `hub_ts - ts`), p50/p95/p99.
 *
 * --split runs the raw path and the analytics in two processes (consumer.enabled=false in the second), so each
 * gets a core; otherwise `--hubs` processes each do both.
 *
 * --no-quality leaves out the data-quality rules (schemas/<type>/quality.json), to measure what they cost.
 *
 *   npx tsx benchmarks/hub-throughput.ts [--events 400000] [--rate 20000] [--seconds 20] [--hubs 1] [--split] [--no-quality]
 */
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { WireEvent } from '../shared/wire.js';
import { freePort, startProcess, type ManagedProcess } from '../scripts/lib/processes.js';
import { ensureRuntime, REPO_ROOT, RUNTIME_DIR } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, stackStatus, startStack } from '../scripts/lib/stack.js';
import { mixEvent } from './lib/hub-event-mix.js';
import { agentPublisher } from './lib/agent-publisher.js';
import { cpuSecondsOf, machineDescription, pidsNamed, sampleProcess, table, writeResults } from './lib/measure.js';
import { join } from 'node:path';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '400000' },
    rate: { type: 'string', default: '20000' },
    seconds: { type: 'string', default: '20' },
    hubs: { type: 'string', default: '1' },
    split: { type: 'boolean', default: false },
    /** Only the raw path (no rules): what JetStream -> QuestDB costs alone. */
    'raw-only': { type: 'boolean', default: false },
    /** Without the data-quality rules of schemas/ (quality.enabled=false): what scoring quality costs. */
    'no-quality': { type: 'boolean', default: false },
  },
});
const totalEvents = Number(values.events);
const liveRate = Number(values.rate);
const liveSeconds = Number(values.seconds);
const split = values.split;
const rawOnly = values['raw-only'];
const quality = !values['no-quality'];
const hubCount = split ? 2 : rawOnly ? 1 : Number(values.hubs);
const PARTITIONS = 8;
const PER_BATCH = 500;
const run = Date.now().toString(36);
const agentId = `bench-hub-${run}`;
const say = (line: string) => process.stderr.write(`${line}\n`);
const logDir = join(RUNTIME_DIR, 'bench', 'logs');
const stateBucket = `bench-state-${run}`;
const leasesBucket = `bench-leases-${run}`;

say('compiling the hub (npm run build)...');
execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
const wasRunning = (await stackStatus(DEFAULT_STACK_DIR).catch(() => undefined))?.healthy === true;
const stack = await startStack({ dir: DEFAULT_STACK_DIR, ports: DEFAULT_PORTS, detached: true, runtime: await ensureRuntime(say), log: say });
const nc = await connect({ servers: stack.natsUrls });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
const sql = async <T>(query: string): Promise<T[]> => {
  const response = await fetch(`${stack.questdbHttpUrl}/exec?query=${encodeURIComponent(query)}`);
  const body = (await response.json()) as { dataset?: T[]; error?: string };
  if (body.error) throw new Error(`${body.error}: ${query}`);
  return body.dataset ?? [];
};

let sequence = 0;
/** The next event of the benchmark mix (benchmarks/lib/hub-event-mix.ts) at event time `nowMs`. */
const makeEvent = (nowMs: number): WireEvent => mixEvent(sequence++, nowMs, agentId);

const publish = agentPublisher(js, { agentId, partitions: PARTITIONS, perBatch: PER_BATCH });

const rawRows = async () => {
  const [telemetry] = await sql<[number]>(`select count() from device_telemetry where agent_id = '${agentId}'`);
  const [app] = await sql<[number]>(`select count() from app_events where agent_id = '${agentId}'`);
  return Number(telemetry?.[0] ?? 0) + Number(app?.[0] ?? 0);
};

// Start one hub first so streams, tables and the rule bucket exist, then stop it so the backlog builds up.
const hubPorts: number[] = [];
type Role = 'both' | 'raw' | 'analytics';
const startHubs = async (roles: Role[]): Promise<ManagedProcess[]> => {
  const started: ManagedProcess[] = [];
  for (const [i, role] of roles.entries()) {
    const port = await freePort();
    if (role !== 'raw') hubPorts.push(port);
    started.push(
      await startProcess({
        name: `bench-hub-${i}`,
        script: 'dist/hub/src/main.js',
        // e.g. BENCH_HUB_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile the hub under load.
        nodeArgs: process.env.BENCH_HUB_NODE_ARGS?.split(' ').filter(Boolean) ?? [],
        logDir,
        healthUrl: `http://127.0.0.1:${port}/healthz`,
        timeoutMs: 60000,
        env: {
          LOG_LEVEL: 'warn',
          HUB_HTTP__PORT: String(port),
          HUB_ANALYTICS__WORKERID: `bench-${run}-${i}`,
          // A fresh analytics state per run: the shared one's watermark is at the end of the previous run, which
          // would make this run's hour-old backlog late data (correctly, but that is not what we measure).
          HUB_ANALYTICS__STATEBUCKET: stateBucket,
          HUB_ANALYTICS__LEASESBUCKET: leasesBucket,
          // Starts after what EVENTS held when the setup hub took the partitions (an interrupted run's leftovers).
          HUB_ANALYTICS__FRESHSTART: 'new',
          HUB_NATS__NAME: `bench-hub-${i}`,
          HUB_CONSUMER__ENABLED: String(role !== 'analytics'),
          HUB_ANALYTICS__ENABLED: String(role !== 'raw'),
          HUB_QUALITY__ENABLED: String(quality),
        },
      }),
    );
  }
  return started;
};
// It also claims every partition (freshStart=new: the claim covers what EVENTS held before this run's backlog).
const setupHubs = await startHubs(['both']);
for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
  const health = await fetch(`http://127.0.0.1:${hubPorts[0]}/healthz`)
    .then((r) => r.json() as Promise<{ analytics?: { owned: number[] } }>)
    .catch(() => ({}) as { analytics?: { owned: number[] } });
  if (health.analytics?.owned.length === PARTITIONS) break;
}
await Promise.all(setupHubs.map((h) => h.stop()));
hubPorts.length = 0;

// (1) backlog
say(`publishing ${totalEvents.toLocaleString('en-US')} events into EVENTS (batches of ${PER_BATCH}, ${PARTITIONS} partitions)...`);
// The backlog's hour lies in its own past day (2-300 days back, by run), like the events of an edge that was cut off:
// hours no other run wrote. Over earlier runs' rows, QuestDB would spend its CPU merging out-of-order commits into
// them (measured: 22k instead of 41-54k raw rows/s on the third run), which says more about the order of the runs
// than about the hub.
const backlogStart = Date.now() - 3_600_000 - (2 + (Math.floor(Date.now() / 60_000) % 299)) * 86_400_000;
const publishStart = performance.now();
for (let done = 0; done < totalEvents; done += 50_000) {
  const count = Math.min(50_000, totalEvents - done);
  // Event time spreads over the last hour, 1 ms apart per event, so windows close as the backlog drains.
  await publish(Array.from({ length: count }, (_, i) => makeEvent(backlogStart + Math.floor(((done + i) / totalEvents) * 3_500_000))));
}
// The same batches as the agents send, R3, 64 in flight: the JetStream side's rate on this machine, for scale.
const publishEventsPerSecond = Math.round(totalEvents / ((performance.now() - publishStart) / 1000));
const lastSeq = (await jsm.streams.info('EVENTS')).state.last_seq;
say(`starting ${hubCount} hub process(es) to drain it...`);
const hubs = await startHubs(split ? ['raw', 'analytics'] : rawOnly ? ['raw'] : Array.from({ length: hubCount }, () => 'both' as const));
const drainStart = Date.now();
const cpuBefore = hubs.map((h) => sampleProcess(h.child.pid!).cpuSeconds);
// Where the rest of the two cores goes: the three NATS nodes and QuestDB share the machine with the hub.
const natsPids = pidsNamed('nats-server');
const questdbPids = [stack.pid('questdb')].filter((pid): pid is number => pid !== null);
const serversBefore = { nats: cpuSecondsOf(natsPids), questdb: cpuSecondsOf(questdbPids) };
let rawDoneAt = 0;
let analyticsDoneAt = 0;
let peakRss = 0;
for (;;) {
  peakRss = Math.max(peakRss, ...hubs.map((h) => sampleProcess(h.child.pid!).rssBytes));
  if (!rawDoneAt && (await rawRows()) >= totalEvents) rawDoneAt = Date.now();
  if (!analyticsDoneAt && rawOnly) analyticsDoneAt = rawDoneAt;
  if (!analyticsDoneAt) {
    const covered = await Promise.all(
      hubPorts.map(async (port) => {
        // A hub busy with a long synchronous stretch may not answer; that poll counts as "not done yet".
        const health = (await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5000) })
          .then((response) => response.json())
          .catch(() => ({}))) as {
          analytics?: { partitions: Array<{ streamSeq: number }> };
        };
        return health.analytics?.partitions ?? [];
      }),
    );
    const partitions = covered.flat();
    // A partition is done when its snapshot covers the last message of this run that went to it; the slowest
    // partition's snapshot reaches at least lastSeq minus the other partitions' tail, so compare to lastSeq - 100.
    if (partitions.length === PARTITIONS && Math.min(...partitions.map((p) => p.streamSeq)) >= lastSeq - 100) analyticsDoneAt = Date.now();
  }
  if ((rawDoneAt && analyticsDoneAt) || Date.now() - drainStart > 600_000) break;
  await new Promise((r) => setTimeout(r, 200));
}
const drainSeconds = ((rawDoneAt || Date.now()) - drainStart) / 1000;
const analyticsSeconds = ((analyticsDoneAt || Date.now()) - drainStart) / 1000;
const hubCpu = hubs.reduce((sum, h, i) => sum + sampleProcess(h.child.pid!).cpuSeconds - cpuBefore[i]!, 0);
const natsCpu = cpuSecondsOf(natsPids) - serversBefore.nats;
const questdbCpu = cpuSecondsOf(questdbPids) - serversBefore.questdb;
const wholeDrainSeconds = Math.max(drainSeconds, analyticsSeconds);
// QuestDB applies WAL transactions after it acknowledged them; count once window_results caught up (60 s at most).
for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 500))) {
  const [txn] = await sql<[number, number]>(`select writerTxn, sequencerTxn from wal_tables() where name = 'window_results'`);
  if (txn && Number(txn[0]) === Number(txn[1])) break;
}
const windowRows = Number((await sql<[number]>(`select count() from window_results where key like '${agentId}%'`))[0]?.[0] ?? 0);

// (2) live
say(`live: ${liveRate.toLocaleString('en-US')} events/s for ${liveSeconds} s...`);
const liveFrom = Date.now();
let liveSent = 0;
while (Date.now() - liveFrom < liveSeconds * 1000) {
  const tickStart = Date.now();
  const count = Math.round(liveRate / 10);
  await publish(Array.from({ length: count }, () => makeEvent(Date.now())));
  liveSent += count;
  await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - tickStart))));
}
await new Promise((r) => setTimeout(r, 5000));
const [latency] = await sql<[number, number, number, number]>(
  `select approx_percentile(datediff('T', ts, hub_ts), 0.5), approx_percentile(datediff('T', ts, hub_ts), 0.95), approx_percentile(datediff('T', ts, hub_ts), 0.99), count() ` +
    `from device_telemetry where agent_id = '${agentId}' and ts >= ${liveFrom * 1000}`,
);
const liveRss = Math.max(...hubs.map((h) => sampleProcess(h.child.pid!).rssBytes));
for (const hub of hubs) await hub.stop(60_000);
await jsm.streams.purge('EVENTS', { filter: `events.${agentId}.>` }).catch(() => undefined);
for (const bucket of [stateBucket, leasesBucket]) await jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
for await (const consumer of jsm.consumers.list('EVENTS')) {
  if (consumer.name.startsWith(`${stateBucket}-`)) await jsm.consumers.delete('EVENTS', consumer.name).catch(() => undefined);
}
await nc.close();
if (!wasRunning) await stack.stop();

const result = {
  date: new Date().toISOString(),
  setup: `${split ? '2 hub processes (raw path | analytics)' : `${hubCount} hub process(es)`} (compiled), raw rows${rawOnly ? ' only' : ` + 3 window and 4 CEP rules (hub/rules)${quality ? ' + data quality of 3 event types (schemas/*/quality.json)' : ', data quality off'}`} over ${PARTITIONS} partitions; 3-node JetStream R3 and QuestDB on the same machine; ${machineDescription()}`,
  backlogEvents: totalEvents,
  /** Publishing the backlog (event generation included): an upper bound for what the hub could be fed. */
  publishEventsPerSecond,
  rawEventsPerSecond: Math.round(totalEvents / drainSeconds),
  analyticsEventsPerSecond: Math.round(totalEvents / analyticsSeconds),
  windowResultRows: windowRows,
  /** CPU over the whole drain (until both the raw rows and the analytics were done); 100 = one core. */
  hubCpuPercent: Math.round((hubCpu / wholeDrainSeconds) * 100),
  natsCpuPercent: Math.round((natsCpu / wholeDrainSeconds) * 100),
  questdbCpuPercent: Math.round((questdbCpu / wholeDrainSeconds) * 100),
  hubPeakRssMB: Math.round(peakRss / 2 ** 20),
  liveRate,
  liveEventsSent: liveSent,
  liveTelemetryRows: Number(latency?.[3] ?? 0),
  liveLatencyMs: { p50: Number(latency?.[0] ?? NaN), p95: Number(latency?.[1] ?? NaN), p99: Number(latency?.[2] ?? NaN) },
  liveRssMB: Math.round(liveRss / 2 ** 20),
};
const file = writeResults('hub-throughput', result);
process.stdout.write(`\nHub: JetStream -> QuestDB with rules. Setup: ${result.setup}\n\n`);
process.stdout.write(
  table([
    {
      'backlog events': totalEvents.toLocaleString('en-US'),
      'JetStream publish ev/s': publishEventsPerSecond.toLocaleString('en-US'),
      'raw rows/s': result.rawEventsPerSecond.toLocaleString('en-US'),
      'analytics events/s': result.analyticsEventsPerSecond.toLocaleString('en-US'),
      'CPU % hub / 3 NATS / QuestDB': `${result.hubCpuPercent} / ${result.natsCpuPercent} / ${result.questdbCpuPercent}`,
      'hub peak RSS MB': result.hubPeakRssMB,
      [`live ${liveRate / 1000}k ev/s: device ts -> row p50/p95/p99 ms`]: `${result.liveLatencyMs.p50} / ${result.liveLatencyMs.p95} / ${result.liveLatencyMs.p99}`,
    },
  ]) + `\n\nwritten to ${file}\n`,
);
