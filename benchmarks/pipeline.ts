/**
 * `npm run bench`: the whole pipeline under a fixed load, and the raw limits of its parts, in one run.
 *
 *   edge agent (HTTP NDJSON) -> JetStream R3 -> hub (raw rows | rules, two processes) -> QuestDB
 *
 * 1. Raw limits, measured here first with what the pipeline itself sends: JetStream R3 publish of msgpack batches of
 *    the size the agent sends, and QuestDB ILP ingest of the same rows (our writer, the same table layout).
 * 2. Load: app backends POST NDJSON to one agent at a fixed rate (open loop: the schedule does not wait for answers)
 *    for a fixed time; 80% telemetry over 2,000 devices, 20% app events. Ten times a second one of the events is a
 *    probe whose row is looked for in QuestDB every 200 ms: device timestamp -> row queryable, end to end.
 * 3. Then: every event the agent accepted must be in QuestDB exactly once (SQL: count and count_distinct by id).
 *
 * `--ramp` runs steps of rising rate instead and reports the highest one that holds p95 <= 1 s with every event
 * accepted. Results: benchmarks/results/pipeline-*.json and .csv, and a table to paste into the README.
 *
 *   npm run bench                          default profile: 10k events/s for 30 s (about 2 minutes in all)
 *   npm run bench -- --rate 40000 --seconds 60
 *   npm run bench -- --ramp --from 10000 --step 10000 --seconds 20
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { encodeBatch, type WireEvent } from '../shared/wire.js';
import { IlpHttpWriter } from '../hub/src/sinks/ilp-http-writer.js';
import { freePort, startProcess, type ManagedProcess } from '../scripts/lib/processes.js';
import { ensureRuntime, REPO_ROOT, RUNTIME_DIR } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, stackStatus, startStack } from '../scripts/lib/stack.js';
import { cpuSecondsOf, LatencyRecorder, machineDescription, pidsNamed, sampleProcess, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '30' },
    ramp: { type: 'boolean', default: false },
    from: { type: 'string', default: '10000' },
    step: { type: 'string', default: '10000' },
    steps: { type: 'string', default: '6' },
    'events-per-request': { type: 'string', default: '500' },
    /** Without the rules process: the raw path alone. */
    'no-rules': { type: 'boolean', default: false },
    // Each poll is a query; at 50 ms they took QuestDB 30% of a core. Latency is 'seen at', so up to this much high.
    'probe-poll-ms': { type: 'string', default: '200' },
  },
});
const seconds = Number(values.seconds);
const perRequest = Number(values['events-per-request']);
const run = Date.now().toString(36);
const agentId = `bench-pipe-${run}`;
const logDir = join(RUNTIME_DIR, 'bench', 'logs');
const say = (line: string) => process.stderr.write(`${line}\n`);
const DEVICES = 2000;
const USERS = 5000;
const PROBE_DEVICE = `probe-${run}`;
const P95_LIMIT_MS = 1000;
const probePollMs = Number(values['probe-poll-ms']);

say('compiling (npm run build)...');
execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
const wasRunning = (await stackStatus(DEFAULT_STACK_DIR).catch(() => undefined))?.healthy === true;
const stack = await startStack({ dir: DEFAULT_STACK_DIR, ports: DEFAULT_PORTS, detached: true, runtime: await ensureRuntime(say), log: say });
const nc = await connect({ servers: stack.natsUrls });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
const sql = async <T = unknown[]>(query: string): Promise<T[]> => {
  const response = await fetch(`${stack.questdbHttpUrl}/exec?query=${encodeURIComponent(query)}`);
  const body = (await response.json()) as { dataset?: T[]; error?: string };
  if (body.error) throw new Error(`${body.error}: ${query}`);
  return body.dataset ?? [];
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- the pipeline's processes ----------------------------------------------------------------------------------
const children: ManagedProcess[] = [];
const hubPorts = { raw: await freePort(), analytics: await freePort() };
const agentPorts = { http: await freePort(), mqtt: await freePort(), admin: await freePort() };
const agentDir = mkdtempSync(join(tmpdir(), 'bench-pipeline-agent-'));
const analyticsEnv = {
  // Its own state and leases, starting at the claim: an earlier run's watermark would make nothing late here.
  HUB_ANALYTICS__STATEBUCKET: `bench-state-${run}`,
  HUB_ANALYTICS__LEASESBUCKET: `bench-leases-${run}`,
  HUB_ANALYTICS__FRESHSTART: 'new',
  HUB_ANALYTICS__WORKERID: `bench-${run}`,
};
say('starting the hub (raw rows | rules) and an edge agent...');
const withRules = !values['no-rules'];
children.push(
  await startProcess({
    name: 'bench-pipeline-hub-raw',
    script: 'dist/hub/src/main.js',
    logDir,
    healthUrl: `http://127.0.0.1:${hubPorts.raw}/healthz`,
    timeoutMs: 60000,
    env: { LOG_LEVEL: 'warn', HUB_HTTP__PORT: String(hubPorts.raw), HUB_ANALYTICS__ENABLED: 'false', HUB_NATS__NAME: 'bench-hub-raw' },
  }),
  await startProcess({
    name: 'bench-pipeline-agent',
    script: 'dist/edge-agent/src/main.js',
    logDir,
    healthUrl: `http://127.0.0.1:${agentPorts.admin}/healthz`,
    env: {
      LOG_LEVEL: 'warn',
      EDGE_AGENTID: agentId,
      EDGE_DATADIR: agentDir,
      EDGE_SOURCES__HTTP__PORT: String(agentPorts.http),
      EDGE_SOURCES__MQTT__PORT: String(agentPorts.mqtt),
      EDGE_ADMIN__PORT: String(agentPorts.admin),
    },
  }),
);
const [hubRaw, agent] = children as [ManagedProcess, ManagedProcess];
const hubRules = withRules
  ? await startProcess({
      name: 'bench-pipeline-hub-rules',
      script: 'dist/hub/src/main.js',
      logDir,
      healthUrl: `http://127.0.0.1:${hubPorts.analytics}/healthz`,
      timeoutMs: 60000,
      env: { LOG_LEVEL: 'warn', HUB_HTTP__PORT: String(hubPorts.analytics), HUB_CONSUMER__ENABLED: 'false', HUB_NATS__NAME: 'bench-hub-rules', ...analyticsEnv },
    })
  : undefined;
if (hubRules) children.push(hubRules);
// Events sent before the rules own their partitions would be skipped by freshStart=new: wait for the claims.
const PARTITIONS = 8; // hub/config.example.yaml analytics.partitions, the agents' default
for (const until = Date.now() + 60_000; withRules && Date.now() < until; await sleep(200)) {
  const health = (await fetch(`http://127.0.0.1:${hubPorts.analytics}/healthz`).then((r) => r.json()).catch(() => ({}))) as { analytics?: { owned: number[] } };
  if (health.analytics?.owned.length === PARTITIONS) break;
}

// ---- load: open-loop NDJSON with probes ------------------------------------------------------------------------
let sequence = 0;
const APP_KINDS = ['video_play', 'video_pause', 'video_complete', 'failed_login', 'login_success', 'purchase'];
function line(n: number, nowMs: number, probe: boolean): string {
  const id = `${agentId}-${n}`;
  if (probe) return `{"type":"device.telemetry","event_id":"${id}","device_id":"${PROBE_DEVICE}","timestamp":${nowMs},"metric":"probe","value":0}`;
  if (n % 5 !== 4) {
    return `{"type":"device.telemetry","event_id":"${id}","device_id":"bench-d${n % DEVICES}","timestamp":${nowMs},"metric":"temperature","value":${20 + ((n * 7) % 70)}}`;
  }
  const user = n % USERS;
  return `{"type":"app.event","event_id":"${id}","event_type":"${APP_KINDS[n % APP_KINDS.length]}","user_id":"bench-u${user}","session_id":"s-${user}","timestamp":${nowMs},"properties":{"content_id":"c-${n % 100}"},"context":{"device_type":"tv","location":"DE"}}`;
}

interface StepResult {
  requestedPerSecond: number;
  seconds: number;
  sent: number;
  accepted: number;
  refused: number;
  acceptedPerSecond: number;
  rowsInQuestDb: number;
  distinctIdsInQuestDb: number;
  lost: number;
  duplicates: number;
  /** Rows in QuestDB per second of load (until the last accepted event was queryable). */
  hubRowsPerSecond: number;
  drainAfterLoadSeconds: number;
  e2eP50Ms: number;
  e2eP95Ms: number;
  e2eP99Ms: number;
  /** Device timestamp -> the hub encoding the row for QuestDB (hub_ts): the part of e2e before QuestDB. */
  toHubEncodeP50Ms: number;
  toHubEncodeP95Ms: number;
  probes: number;
  probesMissing: number;
  maxRawLagMessages: number;
  maxRulesLagMessages: number;
  eventsPerMessage: number;
  cpuPercent: Record<string, number>;
  rssMB: Record<string, number>;
}

const processPids = (): Record<string, number[]> => ({
  agent: [agent.child.pid!],
  'hub raw': [hubRaw.child.pid!],
  ...(hubRules ? { 'hub rules': [hubRules.child.pid!] } : {}),
  '3 NATS': pidsNamed('nats-server'),
  QuestDB: [stack.pid('questdb')].filter((p): p is number => p !== null),
});

async function consumerLag(): Promise<{ raw: number; rules: number }> {
  let raw = 0;
  let rules = 0;
  for await (const consumer of jsm.consumers.list('EVENTS')) {
    const behind = consumer.num_pending + consumer.num_ack_pending;
    if (consumer.name === 'hub-raw') raw += behind;
    else if (consumer.name.startsWith(`${analyticsEnv.HUB_ANALYTICS__STATEBUCKET}-`)) rules += behind;
  }
  return { raw, rules };
}

async function runStep(rate: number, stepSeconds: number): Promise<StepResult> {
  const probes = new Map<string, number>(); // id -> device timestamp (ms)
  const e2e = new LatencyRecorder();
  let sent = 0;
  let accepted = 0;
  let refused = 0;
  let maxRaw = 0;
  let maxRules = 0;
  // From the agent's own counter: under interest retention EVENTS drops what the hub acked, so its count says nothing.
  const published = async () =>
    ((await (await fetch(`http://127.0.0.1:${agentPorts.admin}/healthz`)).json()) as { publisher: { messagesPublished: number } }).publisher.messagesPublished;
  const messagesBefore = await published();
  const pids = processPids();
  const cpuBefore = Object.fromEntries(Object.entries(pids).map(([name, list]) => [name, cpuSecondsOf(list)]));
  const generatorBefore = process.cpuUsage();
  const peakRss: Record<string, number> = {};
  const started = Date.now();
  const until = started + stepSeconds * 1000;
  const inFlight = new Set<Promise<void>>();
  let done = false;

  // Probe poller: a probe's row queryable in QuestDB = its end-to-end latency (resolution: --probe-poll-ms).
  const seenProbes = new Set<string>();
  const poller = (async () => {
    while (!done || seenProbes.size < probes.size) {
      if (done && Date.now() - until > 60_000) break;
      // Only from the oldest probe not seen yet: an interval scan of the last moments, not of the whole run.
      let oldestUnseen = Infinity;
      for (const [id, ts] of probes) if (!seenProbes.has(id) && ts < oldestUnseen) oldestUnseen = ts;
      if (oldestUnseen === Infinity) {
        await sleep(probePollMs);
        continue;
      }
      const rows = await sql<[string]>(`select event_id from device_telemetry where ts >= ${oldestUnseen * 1000} and device_id = '${PROBE_DEVICE}'`).catch(() => []);
      const now = Date.now();
      for (const [id] of rows) {
        if (seenProbes.has(id) || !probes.has(id)) continue;
        seenProbes.add(id);
        e2e.record(now - probes.get(id)!);
      }
      await sleep(probePollMs);
    }
  })();
  // Lag and memory sampler.
  const sampler = (async () => {
    while (!done) {
      const lag = await consumerLag().catch(() => ({ raw: 0, rules: 0 }));
      maxRaw = Math.max(maxRaw, lag.raw);
      maxRules = Math.max(maxRules, lag.rules);
      for (const [name, list] of Object.entries(pids)) {
        let rss = 0;
        for (const pid of list) rss += (() => { try { return sampleProcess(pid).rssBytes; } catch { return 0; } })();
        peakRss[name] = Math.max(peakRss[name] ?? 0, rss);
      }
      await sleep(500);
    }
  })();

  const url = `http://127.0.0.1:${agentPorts.http}/v1/events`;
  let lastProbeAt = 0;
  let lastReport = started;
  while (Date.now() < until) {
    const elapsed = (Date.now() - started) / 1000;
    const due = Math.floor(elapsed * rate) - sent;
    // At 64 requests in flight the generator waits (bounded memory): then 'accepted' falls below 'requested', which
    // is the sign of saturation to read first, since the probes' latency starts when they are sent, not scheduled.
    for (let r = 0; r * perRequest < due && inFlight.size < 64; r++) {
      const now = Date.now();
      const lines: string[] = [];
      for (let i = 0; i < perRequest; i++) {
        const n = sequence++;
        const probe = now - lastProbeAt >= 100 && i === 0;
        if (probe) {
          lastProbeAt = now;
          probes.set(`${agentId}-${n}`, now);
        }
        lines.push(line(n, now, probe));
      }
      sent += perRequest;
      const request = fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') })
        .then(async (response) => {
          const body = (await response.json().catch(() => ({}))) as { accepted?: number };
          if (response.status < 300) accepted += body.accepted ?? 0;
          else refused += perRequest;
        })
        .catch(() => {
          refused += perRequest;
        })
        .finally(() => inFlight.delete(request));
      inFlight.add(request);
    }
    if (Date.now() - lastReport >= 5000) {
      lastReport = Date.now();
      say(`  ${Math.round(elapsed)} s: sent ${sent.toLocaleString('en-US')}, accepted ${accepted.toLocaleString('en-US')}, probes seen ${seenProbes.size}/${probes.size}`);
    }
    await sleep(10);
  }
  await Promise.all(inFlight);
  const loadSeconds = (Date.now() - started) / 1000;
  // Drain: until every accepted event is a row (or 60 s).
  const countRows = async () => {
    const [t] = await sql<[number, number]>(`select count(), count_distinct(event_id) from device_telemetry where agent_id = '${agentId}' and ts >= ${started * 1000}`);
    const [a] = await sql<[number, number]>(`select count(), count_distinct(event_id) from app_events where agent_id = '${agentId}' and ts >= ${started * 1000}`);
    return { rows: Number(t?.[0] ?? 0) + Number(a?.[0] ?? 0), distinct: Number(t?.[1] ?? 0) + Number(a?.[1] ?? 0) };
  };
  let counts = await countRows();
  const drainFrom = Date.now();
  while (counts.distinct < accepted && Date.now() - drainFrom < 60_000) {
    await sleep(250);
    counts = await countRows();
  }
  const allQueryableAt = Date.now();
  // Where the time goes: device timestamp -> the hub encoding the row (hub_ts), over every row of the step.
  const [toHub] = await sql<[number, number]>(
    `select approx_percentile(datediff('T', ts, hub_ts), 0.5), approx_percentile(datediff('T', ts, hub_ts), 0.95) from device_telemetry ` +
      `where agent_id = '${agentId}' and ts >= ${started * 1000} and device_id <> '${PROBE_DEVICE}'`,
  ).catch(() => []);
  done = true;
  await Promise.all([poller, sampler]);
  const messages = (await published()) - messagesBefore;
  const wall = (allQueryableAt - started) / 1000;
  const cpuPercent = Object.fromEntries(Object.entries(pids).map(([name, list]) => [name, Math.round(((cpuSecondsOf(list) - cpuBefore[name]!) / wall) * 100)]));
  const generator = process.cpuUsage(generatorBefore);
  cpuPercent['load generator'] = Math.round(((generator.user + generator.system) / 1e6 / wall) * 100);
  const p = e2e.percentiles();
  return {
    requestedPerSecond: rate,
    seconds: Math.round(loadSeconds * 10) / 10,
    sent,
    accepted,
    refused,
    acceptedPerSecond: Math.round(accepted / loadSeconds),
    rowsInQuestDb: counts.rows,
    distinctIdsInQuestDb: counts.distinct,
    lost: accepted - counts.distinct,
    duplicates: counts.rows - counts.distinct,
    hubRowsPerSecond: Math.round(counts.rows / wall),
    drainAfterLoadSeconds: Math.round((allQueryableAt - started) / 100 - loadSeconds * 10) / 10,
    e2eP50Ms: Math.round(p.p50),
    e2eP95Ms: Math.round(p.p95),
    e2eP99Ms: Math.round(p.p99),
    toHubEncodeP50Ms: Math.round(Number(toHub?.[0] ?? NaN)),
    toHubEncodeP95Ms: Math.round(Number(toHub?.[1] ?? NaN)),
    probes: probes.size,
    probesMissing: probes.size - seenProbes.size,
    maxRawLagMessages: maxRaw,
    maxRulesLagMessages: maxRules,
    eventsPerMessage: messages > 0 ? Math.round(accepted / messages) : 0,
    cpuPercent,
    rssMB: Object.fromEntries(Object.entries(peakRss).map(([name, bytes]) => [name, Math.round(bytes / 2 ** 20)])),
  };
}

// ---- raw limits of the parts -----------------------------------------------------------------------------------
/** JetStream R3 publish of msgpack batches of `perMessage` events (the pipeline's events), 64 in flight. */
async function jetStreamLimit(perMessage: number, events = 300_000): Promise<number> {
  const name = `BENCH_LIMIT_${run}`;
  const events0 = (await jsm.streams.info('EVENTS')).config;
  await jsm.streams.add({ name, subjects: [`benchlimit.${run}.>`], num_replicas: 3, storage: events0.storage, duplicate_window: events0.duplicate_window });
  try {
    const batches: Uint8Array[] = [];
    for (let b = 0; b * perMessage < Math.min(events, 50 * perMessage); b++) {
      const now = Date.now();
      const wire: WireEvent[] = Array.from({ length: perMessage }, (_, i) => {
        const n = b * perMessage + i;
        return { id: `l-${n}`, type: 'device.telemetry', sv: 1, key: `bench-d${n % DEVICES}`, ts: now * 1000, its: now * 1000, src: 'http', body: { event_id: `l-${n}`, device_id: `bench-d${n % DEVICES}`, timestamp: now, metric: 'temperature', value: 20 + (n % 70) } };
      });
      batches.push(encodeBatch({ v: 1, agent: agentId, partition: b % PARTITIONS, first: b * perMessage + 1, last: (b + 1) * perMessage, events: wire }));
    }
    const total = Math.ceil(events / perMessage);
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        for (let i = next++; i < total; i = next++) await js.publish(`benchlimit.${run}.p${i % PARTITIONS}`, batches[i % batches.length]!, { msgID: `${run}-${i}` });
      }),
    );
    return Math.round((total * perMessage) / ((performance.now() - started) / 1000));
  } finally {
    await jsm.streams.delete(name).catch(() => undefined);
  }
}

/** QuestDB ILP ingest of the pipeline's rows (80% telemetry, 20% app events) into copies of the two tables. */
async function questDbLimit(rows = 400_000): Promise<number> {
  const telemetry = `bench_limit_telemetry_${run}`;
  const app = `bench_limit_app_${run}`;
  await sql(`CREATE TABLE ${telemetry} (LIKE device_telemetry)`);
  await sql(`CREATE TABLE ${app} (LIKE app_events)`);
  const writer = new IlpHttpWriter({ httpUrl: stack.questdbHttpUrl, requestTimeoutMs: 30_000, retryTimeoutMs: 10_000 });
  try {
    const started = performance.now();
    const now = Date.now();
    for (let n = 0; n < rows; n++) {
      const us = (now - 600_000 + Math.floor(n / 10)) * 1000;
      if (n % 5 !== 4) {
        writer.table(telemetry).symbol('agent_id', agentId).symbol('source', 'http').symbol('device_id', `bench-d${n % DEVICES}`).symbol('metric', 'temperature');
        writer.stringColumn('event_id', `l-${n}`).intColumn('schema_version', 1).timestampColumn('ingest_ts', us, 'us').floatColumn('value', 20 + (n % 70));
      } else {
        writer.table(app).symbol('agent_id', agentId).symbol('source', 'http').symbol('event_type', 'video_play').symbol('device_type', 'tv').symbol('location', 'DE');
        writer.stringColumn('event_id', `l-${n}`).intColumn('schema_version', 1).timestampColumn('ingest_ts', us, 'us').stringColumn('user_id', `bench-u${n % USERS}`);
        writer.stringColumn('session_id', `s-${n % USERS}`).stringColumn('properties', `{"content_id":"c-${n % 100}"}`).stringColumn('context', '{"device_type":"tv","location":"DE"}');
      }
      writer.timestampColumn('hub_ts', Date.now() * 1000, 'us').at(us, 'us');
      if (n % 20_000 === 19_999) await writer.flush();
    }
    await writer.flush();
    for (const until = Date.now() + 120_000; Date.now() < until; await sleep(100)) {
      const txns = await sql<[number, number]>(`select writerTxn, sequencerTxn from wal_tables() where name in ('${telemetry}', '${app}')`);
      if (txns.length === 2 && txns.every(([w, s]) => Number(w) === Number(s))) break;
    }
    return Math.round(rows / ((performance.now() - started) / 1000));
  } finally {
    await writer.close();
    for (const t of [telemetry, app]) await sql(`DROP TABLE IF EXISTS ${t}`).catch(() => undefined);
  }
}

// ---- the run -----------------------------------------------------------------------------------------------------
const steps: StepResult[] = [];
let highestHolding: number | undefined;
try {
  if (values.ramp) {
    for (let i = 0; i < Number(values.steps); i++) {
      const rate = Number(values.from) + i * Number(values.step);
      say(`ramp step ${i + 1}: ${rate.toLocaleString('en-US')} events/s for ${seconds} s`);
      const step = await runStep(rate, seconds);
      steps.push(step);
      // A probe never seen is worse than a slow one: it fails the step too.
      const holds = step.e2eP95Ms <= P95_LIMIT_MS && step.probesMissing === 0 && step.refused === 0 && step.acceptedPerSecond >= rate * 0.95 && step.lost === 0;
      say(`  -> accepted ${step.acceptedPerSecond.toLocaleString('en-US')}/s, e2e p95 ${step.e2eP95Ms} ms: ${holds ? 'holds' : 'does not hold'}`);
      if (!holds) break;
      highestHolding = rate;
      await sleep(5000); // let the lag of this step go before the next
    }
  } else {
    say(`load: ${Number(values.rate).toLocaleString('en-US')} events/s for ${seconds} s (NDJSON, ${perRequest} per request)`);
    steps.push(await runStep(Number(values.rate), seconds));
  }
} finally {
  for (const child of [...children].reverse()) await child.stop(30_000);
}
const eventsPerMessage = steps[steps.length - 1]?.eventsPerMessage || 250;
say(`raw limit: JetStream R3 publish, ${eventsPerMessage} events per message...`);
const jetStreamEventsPerSecond = await jetStreamLimit(eventsPerMessage);
say('raw limit: QuestDB ILP ingest of the same rows...');
const questDbRowsPerSecond = await questDbLimit();

await jsm.streams.purge('EVENTS', { filter: `events.${agentId}.>` }).catch(() => undefined);
for (const bucket of [analyticsEnv.HUB_ANALYTICS__STATEBUCKET, analyticsEnv.HUB_ANALYTICS__LEASESBUCKET]) await jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
for await (const consumer of jsm.consumers.list('EVENTS')) {
  if (consumer.name.startsWith(`${analyticsEnv.HUB_ANALYTICS__STATEBUCKET}-`)) await jsm.consumers.delete('EVENTS', consumer.name).catch(() => undefined);
}
await nc.close();
rmSync(agentDir, { recursive: true, force: true });
if (!wasRunning) await stack.stop();

const setup =
  `edge agent (HTTP NDJSON, ${perRequest} events/request, open loop) -> 3-node JetStream R3 -> hub: ` +
  `${withRules ? 'raw rows | 3 window + 4 CEP rules (two processes)' : 'raw rows only'} -> QuestDB; everything and the load generator on one machine: ${machineDescription()}`;
const result = { date: new Date().toISOString(), setup, mode: values.ramp ? 'ramp' : 'fixed', highestRateHoldingP95: highestHolding, limits: { jetStreamEventsPerSecond, questDbRowsPerSecond, eventsPerMessage }, steps };
const file = writeResults('pipeline', result);
const csvColumns = ['requestedPerSecond', 'acceptedPerSecond', 'hubRowsPerSecond', 'e2eP50Ms', 'e2eP95Ms', 'e2eP99Ms', 'lost', 'duplicates', 'maxRawLagMessages', 'maxRulesLagMessages'] as const;
const csv = [
  [...csvColumns, 'jetStreamLimit', 'questDbLimit'].join(','),
  ...steps.map((s) => [...csvColumns.map((c) => s[c]), jetStreamEventsPerSecond, questDbRowsPerSecond].join(',')),
].join('\n');
writeFileSync(file.replace(/\.json$/, '.csv'), `${csv}\n`);
writeFileSync(join(REPO_ROOT, 'benchmarks', 'results', 'pipeline-latest.csv'), `${csv}\n`);

const pct = (part: number, whole: number) => `${Math.round((part / whole) * 100)}%`;
const summary =
  table(
    steps.map((s) => ({
      'requested ev/s': s.requestedPerSecond.toLocaleString('en-US'),
      'accepted ev/s (edge)': s.acceptedPerSecond.toLocaleString('en-US'),
      'rows/s (QuestDB)': s.hubRowsPerSecond.toLocaleString('en-US'),
      'e2e p50/p95/p99 ms': `${s.e2eP50Ms} / ${s.e2eP95Ms} / ${s.e2eP99Ms}`,
      'to hub write p50/p95 ms': `${s.toHubEncodeP50Ms} / ${s.toHubEncodeP95Ms}`,
      'lost / dup': `${s.lost} / ${s.duplicates}`,
      'max lag msgs raw / rules': `${s.maxRawLagMessages} / ${s.maxRulesLagMessages}`,
      [`CPU % ${Object.keys(s.cpuPercent).join(' / ')}`]: Object.values(s.cpuPercent).join(' / '),
      [`peak RSS MB ${Object.keys(s.rssMB).join(' / ')}`]: Object.values(s.rssMB).join(' / '),
    })),
  ) + '\n';
const last = steps[steps.length - 1];
const limitsLine = !last
  ? ''
  : `\nRaw limits measured in this run: JetStream R3 publish ${jetStreamEventsPerSecond.toLocaleString('en-US')} events/s (${eventsPerMessage} per message); ` +
      `QuestDB ILP ${questDbRowsPerSecond.toLocaleString('en-US')} rows/s (same rows, our writer).\n` +
    `Pipeline rows/s as a share of each: ${pct(last.hubRowsPerSecond, jetStreamEventsPerSecond)} of JetStream, ${pct(last.hubRowsPerSecond, questDbRowsPerSecond)} of QuestDB.\n`;
const rampLine = values.ramp ? `Highest rate holding p95 <= ${P95_LIMIT_MS} ms with nothing refused or lost: ${highestHolding?.toLocaleString('en-US') ?? 'none of the steps'} events/s\n` : '';
const report = `Pipeline (${new Date().toISOString().slice(0, 10)}): ${setup}\n\n${summary}${limitsLine}${rampLine}`;
// The short table for the README, next to the JSON and CSV.
writeFileSync(join(REPO_ROOT, 'benchmarks', 'results', 'pipeline-latest.md'), report);
process.stdout.write(`\n${report}\nwritten to ${file} (and .csv, and pipeline-latest.md)\n`);
