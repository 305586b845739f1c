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
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { ensureRuntime } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, stackStatus, startStack } from '../scripts/lib/stack.js';
import { buildHub, DRAIN_PARTITIONS, runBacklogDrain, type HubRole } from './lib/hub-drain.js';
import { machineDescription, sampleProcess, table, writeResults } from './lib/measure.js';

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
const PARTITIONS = DRAIN_PARTITIONS;
const say = (line: string) => process.stderr.write(`${line}\n`);

buildHub(say);
const wasRunning = (await stackStatus(DEFAULT_STACK_DIR).catch(() => undefined))?.healthy === true;
const stack = await startStack({ dir: DEFAULT_STACK_DIR, ports: DEFAULT_PORTS, detached: true, runtime: await ensureRuntime(say), log: say });
const nc = await connect({ servers: stack.natsUrls });

// (1) backlog
const roles: HubRole[] = split ? ['raw', 'analytics'] : rawOnly ? ['raw'] : Array.from({ length: hubCount }, () => 'both' as const);
const drain = await runBacklogDrain({ stack, nc, events: totalEvents, roles, quality, say });
const { measurement, hubs, publish, makeEvent, sql, agentId } = drain;
const publishEventsPerSecond = measurement.publishEventsPerSecond;
const drainSeconds = measurement.rawSeconds;
const analyticsSeconds = measurement.analyticsSeconds;
const wholeDrainSeconds = measurement.wholeSeconds;
const hubCpu = measurement.hubCpuSeconds;
const natsCpu = measurement.natsCpuSeconds;
const questdbCpu = measurement.questdbCpuSeconds;
const peakRss = measurement.hubPeakRssBytes;
const windowRows = measurement.windowResultRows;

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
await drain.close();
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
