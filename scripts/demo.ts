/**
 * `npm run demo`: the whole system on this machine. Starts the local stack (3-node NATS JetStream cluster and
 * QuestDB, left running afterwards so the data can be queried), a hub worker, one edge agent, a fleet of
 * simulated MQTT devices and an app backend posting over HTTP, and prints live counts at every stage.
 *
 *   npm run demo -- --duration 60 --devices 100 --rate 2000 --app-rate 2000
 *   npm run demo -- --duration 0        run until Ctrl-C
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runAppEvents, type AppProgress } from '../simulators/app-events.js';
import { runDeviceFleet, type FleetProgress } from '../simulators/device-fleet.js';
import { startProcess, type ManagedProcess } from './lib/processes.js';
import { ensureRuntime, RUNTIME_DIR } from './lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, startStack } from './lib/stack.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    devices: { type: 'string', default: '100' },
    rate: { type: 'string', default: '2000' },
    'app-rate': { type: 'string', default: '2000' },
    down: { type: 'boolean', default: false },
  },
});
const durationSeconds = Number(values.duration) || Number.POSITIVE_INFINITY;
const agentId = 'demo-gateway';
const ports = DEFAULT_PORTS;
const questdb = `http://127.0.0.1:${ports.questdbHttp}`;
const logDir = join(RUNTIME_DIR, 'demo', 'logs');
const say = (line: string) => process.stdout.write(`${line}\n`);

say('== starting the stack: 3 nats-server nodes (JetStream, R3) and QuestDB ==');
const runtime = await ensureRuntime((line) => say(`   ${line}`));
const stack = await startStack({ dir: DEFAULT_STACK_DIR, ports, detached: true, runtime, log: (line) => say(`   ${line}`) });
say(`   NATS ${stack.natsUrls.join(', ')}; QuestDB ${questdb}`);

const children: ManagedProcess[] = [];
const abort = new AbortController();
let stopping = false;
async function shutdown(code: number): Promise<never> {
  stopping = true;
  abort.abort();
  for (const child of children.reverse()) await child.stop();
  if (values.down) await stack.stop();
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

try {
  say('== starting the hub (raw events, and the rules in a second process) and an edge agent ==');
  // Two hub processes, so that the raw path and the rules each get a core: the first writes the raw events, the
  // second (consumer.enabled=false) runs the rules of hub/rules. One process can do both (the default config).
  children.push(
    await startProcess({ name: 'hub', script: 'bin/hub.js', logDir, healthUrl: 'http://127.0.0.1:8090/healthz', timeoutMs: 60000, env: { HUB_ANALYTICS__ENABLED: 'false' } }),
  );
  children.push(
    await startProcess({
      name: 'hub-analytics',
      script: 'bin/hub.js',
      logDir,
      healthUrl: 'http://127.0.0.1:8091/healthz',
      timeoutMs: 60000,
      env: { HUB_CONSUMER__ENABLED: 'false', HUB_HTTP__PORT: '8091', HUB_NATS__NAME: 'hub-analytics', HUB_ALERTING__PIPELINE__ENABLED: 'false' },
    }),
  );
  children.push(
    await startProcess({
      name: 'edge-agent',
      script: 'bin/edge-agent.js',
      logDir,
      healthUrl: 'http://127.0.0.1:9464/healthz',
      env: { EDGE_AGENTID: agentId, EDGE_DATADIR: join(RUNTIME_DIR, 'demo', 'agent') },
    }),
  );
  say(`   dashboard: http://127.0.0.1:8090/dashboard (rules hub: 8091/dashboard)   hub metrics: http://127.0.0.1:8090/metrics   agent: MQTT 1883, HTTP 8080, http://127.0.0.1:9464/metrics   logs: ${logDir}`);
} catch (error) {
  say(`demo failed to start: ${(error as Error).message}`);
  await shutdown(1);
}

say(`== ${values.devices} MQTT devices (${values.rate} readings/s, QoS 1) and an app backend (${values.rate === '0' ? 0 : values['app-rate']} events/s over HTTP) ==`);
const started = Date.now();
const runId = started.toString(36);
let fleet: FleetProgress = { sent: 0, acked: 0, errors: 0, elapsedSeconds: 0 };
let app: AppProgress = { sent: 0, accepted: 0, rejected: 0, failedRequests: 0, elapsedSeconds: 0 };
const simulators = Promise.all([
  runDeviceFleet(
    { url: 'mqtt://127.0.0.1:1883', devices: Number(values.devices), rate: Number(values.rate), durationSeconds, batch: 1, qos: 1, seed: 1, prefix: `dev-${runId}` },
    (p) => (fleet = p),
    abort.signal,
  ),
  runAppEvents(
    { url: 'http://127.0.0.1:8080/v1/events', users: 500, rate: Number(values['app-rate']), durationSeconds, batch: 100, seed: 2, prefix: `app-${runId}` },
    (p) => (app = p),
    abort.signal,
  ),
]);

async function sql<T>(query: string): Promise<T[]> {
  const response = await fetch(`${questdb}/exec?query=${encodeURIComponent(query)}`);
  const body = (await response.json()) as { dataset?: T[] };
  return body.dataset ?? [];
}

async function rowsInQuestDb(): Promise<number> {
  const count = (query: string) => sql<[number]>(query).then((rows) => Number(rows[0]?.[0] ?? 0), () => 0);
  const [telemetry, appEvents] = await Promise.all([
    count(`select count() from device_telemetry where agent_id = '${agentId}' and device_id like 'dev-${runId}%'`),
    count(`select count() from app_events where agent_id = '${agentId}' and user_id like 'app-${runId}%'`),
  ]);
  return telemetry + appEvents;
}

async function agentStats(): Promise<{ accepted: number; published: number; outboxRows: number }> {
  const health = (await (await fetch('http://127.0.0.1:9464/healthz')).json()) as {
    ingest: { accepted: number };
    publisher: { eventsPublished: number };
    outbox: { rows: number };
  };
  return { accepted: health.ingest.accepted, published: health.publisher.eventsPublished, outboxRows: health.outbox.rows };
}

let lastRows = 0;
let lastTime = Date.now();
let simulatorsDone = false;
void simulators.then(() => (simulatorsDone = true));
const fmt = (n: number) => n.toLocaleString('en-US');
while (!stopping) {
  await new Promise((r) => setTimeout(r, 1000));
  const [stats, rows] = await Promise.all([agentStats().catch(() => undefined), rowsInQuestDb()]);
  const now = Date.now();
  const rate = ((rows - lastRows) * 1000) / (now - lastTime);
  lastRows = rows;
  lastTime = now;
  say(
    `${((now - started) / 1000).toFixed(0).padStart(4)}s  sent ${fmt(fleet.sent + app.sent)}  ` +
      `agent accepted ${fmt(stats?.accepted ?? 0)}  published ${fmt(stats?.published ?? 0)}  outbox ${fmt(stats?.outboxRows ?? 0)}  ` +
      `QuestDB rows ${fmt(rows)} (${fmt(Math.round(rate))}/s)`,
  );
  if (simulatorsDone && rows >= fleet.acked + app.accepted) break;
  if (simulatorsDone && now - started > (durationSeconds + 30) * 1000) break;
}

const [latency] = await sql<[number, number, number]>(
  `select approx_percentile(datediff('T', ts, hub_ts), 0.5), approx_percentile(datediff('T', ts, hub_ts), 0.95), approx_percentile(datediff('T', ts, hub_ts), 0.99) from device_telemetry where device_id like 'dev-${runId}%'`,
).catch(() => []);
say('');
say(`== done: ${fmt(fleet.acked)} MQTT readings and ${fmt(app.accepted)} app events acknowledged; ${fmt(lastRows)} rows in QuestDB ==`);
if (latency) say(`   device timestamp -> row written by the hub: p50 ${latency[0]} ms, p95 ${latency[1]} ms, p99 ${latency[2]} ms`);
// The rules of hub/rules ran over the same events: windows closed and patterns found during the run.
const windows = await sql<[string, number]>(`select rule, count() from window_results where written_at >= ${started * 1000} and not superseded group by rule order by rule`).catch(() => []);
const alerts = await sql<[string, number]>(`select rule, count() from alerts where written_at >= ${started * 1000} group by rule order by rule`).catch(() => []);
if (windows.length > 0) say(`   window results: ${windows.map(([rule, n]) => `${rule} ${fmt(Number(n))}`).join(', ')}`);
if (alerts.length > 0) say(`   alerts: ${alerts.map(([rule, n]) => `${rule} ${fmt(Number(n))}`).join(', ')}`);
// Data quality of this run's agent: rows come once the watermark passes a minute (a run shorter than that has none yet).
const quality = await sql<[string, number, number, number, number]>(
  `select event_type, sum(events), sum(complete)::double / sum(events), sum(duplicates)::double / sum(events), max(lag_p95_ms) from data_quality where source = '${agentId}' and written_at >= ${started * 1000} group by event_type order by event_type`,
).catch(() => []);
const pct = (v: number) => `${(Number(v) * 100).toFixed(1)}%`;
if (quality.length > 0) say(`   data quality: ${quality.map(([type, n, complete, dups, lag]) => `${type} ${fmt(Number(n))} events, ${pct(complete)} complete, ${pct(dups)} duplicates, lag p95 ${fmt(Number(lag))} ms`).join('; ')}`);
say('');
say('Query the data (the stack keeps running):');
say(`   web console:  ${questdb}`);
say(`   psql:         PGPASSWORD=quest psql -h 127.0.0.1 -p ${ports.questdbPg} -U admin -d qdb`);
say(`   e.g.          select device_id, metric, value, ts from device_telemetry latest on ts partition by device_id, metric;`);
say(`                 select ts, event_type, count() from app_events sample by 10s;`);
say(`                 select approx_percentile(datediff('T', ts, hub_ts), 0.95) p95_ms from device_telemetry where ts > dateadd('m', -5, now());`);
say(`                 select ts, rule, key, severity, message from alerts order by ts desc limit 20;`);
say(`                 select ts, source, event_type, sum(events), sum(complete)::double / sum(events) completeness from data_quality group by ts, source, event_type order by ts desc limit 20;`);
say('Stop the stack:  npm run stack -- down');
await shutdown(0);
