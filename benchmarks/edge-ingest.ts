/**
 * Edge agent throughput and latency, through one real agent process to JetStream PubAck:
 *   (a) HTTP NDJSON batches, (b) MQTT QoS 1 publishes of reading arrays, (c) MQTT QoS 1 single events.
 * Closed-loop load with bounded concurrency for a fixed time per scenario. Prints a table and writes
 * benchmarks/results/edge-ingest-*.json.
 *
 *   npm run bench:edge               (uses the local stack, starting it if needed)
 *   npx tsx benchmarks/edge-ingest.ts --seconds 15
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import mqtt from 'mqtt';
import { unpackMultiple } from 'msgpackr';
import type { WireEvent } from '../shared/wire.js';
import { freePort, startProcess } from '../scripts/lib/processes.js';
import { ensureRuntime, REPO_ROOT, RUNTIME_DIR } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, stackStatus, startStack } from '../scripts/lib/stack.js';
import { httpNdjsonLoad, startBenchAgent, telemetryObject } from './lib/edge-agent-bench.js';
import { stackNatsPids } from './lib/hub-drain.js';
import { cpuSecondsOf, LatencyRecorder, machineDescription, sampleProcess, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '15' }, only: { type: 'string' }, tsx: { type: 'boolean', default: false } } });
// Gateways run the compiled agent (see the packaged bundle); --tsx measures the from-source launcher instead.
const agentScript = values.tsx ? 'bin/edge-agent.js' : 'dist/edge-agent/src/main.js';
const seconds = Number(values.seconds);
const agentId = 'bench-edge';
const logDir = join(RUNTIME_DIR, 'bench', 'logs');
const say = (line: string) => process.stderr.write(`${line}\n`);
if (!values.tsx) {
  say('compiling the agent (npm run build)...');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
}

const wasRunning = (await stackStatus(DEFAULT_STACK_DIR).catch(() => undefined))?.healthy === true;
const stack = await startStack({ dir: DEFAULT_STACK_DIR, ports: DEFAULT_PORTS, detached: true, runtime: await ensureRuntime(say), log: say });
const nc = await connect({ servers: stack.natsUrls });
const jsm = await jetstreamManager(nc);

// The hub creates the streams and its durable consumer; start it once so EVENTS exists, then stop it so that
// only the agent uses the CPU. Published events stay in EVENTS until purged at the end.
const hubPort = await freePort();
const hub = await startProcess({ name: 'bench-hub-setup', script: 'bin/hub.js', logDir, healthUrl: `http://127.0.0.1:${hubPort}/healthz`, timeoutMs: 60000, env: { HUB_HTTP__PORT: String(hubPort) } });
await hub.stop();

interface ScenarioResult {
  scenario: string;
  events: number;
  eventsPerSecond: number;
  ackP50Ms: number;
  ackP95Ms: number;
  ackP99Ms: number;
  toJetStreamP50Ms: number;
  toJetStreamP95Ms: number;
  toJetStreamP99Ms: number;
  agentCpuPercent: number;
  /** CPU of the benchmark process itself (load generator and latency probe), which shares the 2 cores. */
  generatorCpuPercent: number;
  /** CPU of the three nats-server processes together (R3 replication and fsync of what the agent publishes). */
  natsCpuPercent: number;
  agentRssMB: number;
  agentPeakRssMB: number;
}

type Load = (ports: { http: number; mqtt: number }, until: number, ack: LatencyRecorder) => Promise<number>;

const httpNdjson: Load = (ports, until, ack) =>
  // 200 devices per client, as many clients as BENCH_HTTP_CONCURRENCY (6).
  httpNdjsonLoad({ port: ports.http, until, ack, concurrency: Number(process.env.BENCH_HTTP_CONCURRENCY ?? 6), perRequest: 1000, deviceOf: (client, line) => client * 1000 + (line % 200) });

function mqttLoad(clients: number, perPublish: number, inFlight: number): Load {
  return async (ports, until, ack) => {
    let events = 0;
    const connections = await Promise.all(Array.from({ length: clients }, (_, c) => mqtt.connectAsync(`mqtt://127.0.0.1:${ports.mqtt}`, { clientId: `bench-${c}-${Date.now()}`, clean: true })));
    await Promise.all(
      connections.map(async (client, c) => {
        const topic = `devices/bench-${c}/telemetry`;
        await Promise.all(
          Array.from({ length: inFlight }, async () => {
            while (Date.now() < until) {
              const now = Date.now();
              let payload: string;
              if (perPublish === 1) payload = telemetryObject(c, now);
              else {
                const items: string[] = [];
                for (let i = 0; i < perPublish; i++) items.push(telemetryObject(c, now));
                payload = `[${items.join(',')}]`;
              }
              const started = performance.now();
              await client.publishAsync(topic, payload, { qos: 1 });
              ack.record(performance.now() - started);
              events += perPublish;
            }
          }),
        );
      }),
    );
    await Promise.all(connections.map((c) => c.endAsync()));
    return events;
  };
}

const scenarios: Array<{ name: string; load: Load }> = [
  { name: '(a) HTTP NDJSON, 1000 events/request, 6 concurrent', load: httpNdjson },
  { name: '(b) MQTT QoS 1, arrays of 100 readings, 20 clients x 4 in flight', load: mqttLoad(20, 100, 4) },
  { name: '(c) MQTT QoS 1, single events, 100 clients x 8 in flight', load: mqttLoad(100, 1, 8) },
];

const results: ScenarioResult[] = [];
for (const [index, scenario] of scenarios.entries()) {
  if (values.only && !scenario.name.startsWith(`(${values.only})`)) continue;
  const bench = await startBenchAgent({ name: `bench-agent-${index}`, agentId, script: agentScript });
  const { ports, process: agent } = bench;
  // Ingest-to-JetStream latency: a core subscription sees each message as the stream stores it. Events carry the
  // agent's ingest time; only the first (oldest) event of each message is decoded, so that the measuring costs
  // little CPU on this shared 2-core machine and the figure is an upper bound for the message.
  const toJetStream = new LatencyRecorder();
  const subscription = nc.subscribe(`events.${agentId}.>`, {
    callback: (_error, message) => {
      const nowUs = Date.now() * 1000;
      let index = 0;
      unpackMultiple(Buffer.from(message.data.buffer, message.data.byteOffset, message.data.byteLength), (value) => {
        if (index++ === 0) return true; // the batch header
        toJetStream.record((nowUs - (value as WireEvent).its) / 1000);
        return false;
      });
    },
  });
  const ack = new LatencyRecorder();
  say(`running ${scenario.name} for ${seconds} s`);
  const before = sampleProcess(agent.child.pid!);
  const generatorBefore = process.cpuUsage();
  const natsPids = stackNatsPids(stack);
  const natsBefore = cpuSecondsOf(natsPids);
  const started = Date.now();
  const events = await scenario.load(ports, started + seconds * 1000, ack);
  await bench.waitOutboxEmpty();
  const elapsed = (Date.now() - started) / 1000;
  const after = sampleProcess(agent.child.pid!);
  const generatorCpu = process.cpuUsage(generatorBefore);
  const natsCpuSeconds = cpuSecondsOf(natsPids) - natsBefore;
  await nc.flush();
  subscription.unsubscribe();
  await bench.stop();
  await jsm.streams.purge('EVENTS', { filter: `events.${agentId}.>` });
  const a = ack.percentiles();
  const j = toJetStream.percentiles();
  results.push({
    scenario: scenario.name,
    events,
    eventsPerSecond: Math.round(events / elapsed),
    ackP50Ms: round(a.p50),
    ackP95Ms: round(a.p95),
    ackP99Ms: round(a.p99),
    toJetStreamP50Ms: round(j.p50),
    toJetStreamP95Ms: round(j.p95),
    toJetStreamP99Ms: round(j.p99),
    agentCpuPercent: Math.round(((after.cpuSeconds - before.cpuSeconds) / elapsed) * 100),
    generatorCpuPercent: Math.round(((generatorCpu.user + generatorCpu.system) / 1e6 / elapsed) * 100),
    natsCpuPercent: Math.round((natsCpuSeconds / elapsed) * 100),
    agentRssMB: Math.round(after.rssBytes / 2 ** 20),
    agentPeakRssMB: Math.round(after.peakRssBytes / 2 ** 20),
  });
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

await nc.close();
if (!wasRunning) await stack.stop();

const setup = `one edge agent process (synchronous=FULL outbox) -> 3-node JetStream R3 on the same machine; load generator in the benchmark process; ${seconds} s per scenario, closed loop; ${machineDescription()}`;
const file = writeResults('edge-ingest', { date: new Date().toISOString(), setup, results });
process.stdout.write(`\nEdge ingest to JetStream PubAck. Setup: ${setup}\n\n`);
process.stdout.write(
  table(
    results.map((r) => ({
      scenario: r.scenario,
      'events/s': r.eventsPerSecond.toLocaleString('en-US'),
      'device ack p50/p95/p99 ms': `${r.ackP50Ms} / ${r.ackP95Ms} / ${r.ackP99Ms}`,
      'ingest->JetStream p50/p95/p99 ms': `${r.toJetStreamP50Ms} / ${r.toJetStreamP95Ms} / ${r.toJetStreamP99Ms}`,
      'agent CPU %': r.agentCpuPercent,
      'generator CPU %': r.generatorCpuPercent,
      '3 NATS CPU %': r.natsCpuPercent,
      'agent RSS MB (peak)': `${r.agentRssMB} (${r.agentPeakRssMB})`,
    })),
  ) + `\n\nwritten to ${file}\n`,
);
