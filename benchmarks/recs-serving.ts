/**
 * Recommendations serving (issue 10): one recommendations-only hub (compiled; consumer, analytics and dashboard off)
 * on the local stack, fed with a simulated shop's app events (simulators/shop.ts) as edge agents publish them
 * (msgpack batches of up to 500 per partition, 8 partitions, key = user_id).
 *
 *   (1) backlog: the hub takes its 8 partitions (so its durable consumers exist and hold EVENTS' messages), stops
 *       (last checkpoint each), N app events are published, and a hub process starts again and drains them:
 *       events/s until `counters.applied + duplicates + ignored + invalid` reached N and every partition's
 *       checkpoint (`partitions[].streamSeq`) covers the last message published to it. Counted from the hub's
 *       process start (read model load and lease take-over included) and from the first event applied.
 *   (2) freshness: events at a steady rate with `ts` = now; for sampled events (each to a customer that gets no other
 *       event in this phase), GET /v1/customers/{id}/profile every 20 ms until `lastActive >= ts`:
 *       event time -> visible in the API (publish, JetStream R3, apply, KV flush every 250 ms, KV watch).
 *   (3) API latency: autocannon (in this process; the hub is a child process) at a fixed overall rate over the
 *       customers and products of (1): 70 % recommendations?limit=10, 20 % profile, 10 % products/{id}/similar.
 *
 *   npm run bench:recs -- [--events 300000] [--shoppers 20000] [--fresh-rate 2000] [--fresh-seconds 15]
 *                         [--api-rate 5000] [--api-seconds 20] [--connections 50] [--port-offset 3700]
 *
 * The stack is one of its own (.runtime/bench-recs-stack-<offset>, default ports + offset), stopped at the end unless
 * it was running before: on the shared stack, another hub with recommendations would share the partition leases. A
 * stopped one is deleted and started afresh, so every run starts from empty buckets.
 *
 * BENCH_HUB_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' profiles the draining hub.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { EVENTS_STREAM, eventSubject, type WireEvent } from '../shared/wire.js';
import { freePort, startProcess, type ManagedProcess } from '../scripts/lib/processes.js';
import { ensureRuntime, REPO_ROOT, RUNTIME_DIR } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, shiftPorts, stackStatus, startStack, type StackPorts } from '../scripts/lib/stack.js';
import type { ShopEvent } from '../simulators/shop.js';
import { benchmarkShop } from './lib/bench-shop.js';
import { agentPublisher } from './lib/agent-publisher.js';
import { cpuSecondsOf, LatencyRecorder, machineDescription, pidsNamed, sampleProcess, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '300000' },
    shoppers: { type: 'string', default: '20000' },
    products: { type: 'string', default: '5000' },
    'fresh-rate': { type: 'string', default: '2000' },
    'fresh-seconds': { type: 'string', default: '15' },
    'fresh-samples': { type: 'string', default: '200' },
    'api-rate': { type: 'string', default: '5000' },
    'api-seconds': { type: 'string', default: '20' },
    connections: { type: 'string', default: '50' },
    /** A stack of its own (like bench:bad-input): the shared one's recs leases, KV buckets and EVENTS consumers belong to other runs. */
    'port-offset': { type: 'string', default: '3700' },
  },
});
const totalEvents = Number(values.events);
const freshRate = Number(values['fresh-rate']);
const freshSeconds = Number(values['fresh-seconds']);
const freshSamples = Number(values['fresh-samples']);
const apiRate = Number(values['api-rate']);
const apiSeconds = Number(values['api-seconds']);
const connections = Number(values.connections);
const PARTITIONS = 8;
const PER_BATCH = 500;
const run = Date.now().toString(36);
const agentId = `bench-recs-${run}`;
const workerId = `bench-recs-${run}`;
const say = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const logDir = join(RUNTIME_DIR, 'bench', 'logs');
const tmp = mkdtempSync(join(tmpdir(), 'bench-recs-'));

// ---------------------------------------------------------------------------------------------------------------
// the shop: ids of this run only (profiles, items and the catalogue live in KV buckets that outlive a run)

say(`generating the shop (${values.shoppers} shoppers, ${values.products} products)...`);
const shop = benchmarkShop({ shoppers: Number(values.shoppers), products: Number(values.products), prefix: `rb${run}` });
const productId = (id: unknown) => `${String(id)}-${run}`;
for (const p of shop.catalogue) p.id = productId(p.id);
for (const e of shop.events) {
  if (e.properties.product_id !== undefined) e.properties.product_id = productId(e.properties.product_id);
  if (e.properties.content_id !== undefined) e.properties.content_id = productId(e.properties.content_id);
}
if (shop.events.length < totalEvents) throw new Error(`the shop has ${shop.events.length} events, fewer than --events ${totalEvents}: raise --shoppers`);
const backlog = shop.events.slice(0, totalEvents);
const customers = [...new Set(backlog.map((e) => e.user_id))];
const products = shop.catalogue.map((p) => p.id);
const catalogueFile = join(tmp, 'catalogue.json');
writeFileSync(catalogueFile, JSON.stringify(shop.catalogue.map((p) => ({ id: p.id, name: p.name, category: p.category, price: p.price }))));

const wireOf = (e: ShopEvent, tsMs: number, id = e.event_id): WireEvent => ({
  id,
  type: 'app.event',
  sv: 1,
  key: e.user_id,
  ts: tsMs * 1000,
  its: Date.now() * 1000,
  src: 'http',
  body: { event_id: id, event_type: e.event_type, user_id: e.user_id, session_id: e.session_id, timestamp: new Date(tsMs).toISOString(), properties: e.properties, context: e.context },
});

// ---------------------------------------------------------------------------------------------------------------
// stack, publishing, the hub

say('compiling the hub (npm run build)...');
execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
const portOffset = Number(values['port-offset']);
const stackDir = join(RUNTIME_DIR, `bench-recs-stack-${portOffset}`);
const ports: StackPorts = shiftPorts(DEFAULT_PORTS, portOffset);
const wasRunning = (await stackStatus(stackDir, ports).catch(() => undefined))?.healthy === true;
// A stopped stack of an earlier run starts from scratch: its KV buckets would hold every earlier run's profiles and
// items, which the hub's read model loads at start (tens of seconds after a few runs) and keeps in memory.
if (!wasRunning) rmSync(stackDir, { recursive: true, force: true });
say(`stack in ${stackDir} (NATS ${ports.natsClient.join(',')}, QuestDB ${ports.questdbHttp})`);
const stack = await startStack({ dir: stackDir, ports, detached: true, runtime: await ensureRuntime(say), log: say });
const nc = await connect({ servers: stack.natsUrls });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);

const publish = agentPublisher(js, { agentId, partitions: PARTITIONS, perBatch: PER_BATCH });

interface RecsHealth {
  owned: number[];
  readModel: { profiles: number; items: number; updates: number; ready: boolean };
  counters: { applied: number; duplicates: number; ignored: number; invalid: number; written: number };
  partitions: Array<{ partition: number; streamSeq: number; events: number; flushes: number; flushFailures: number; waitMs: number; applyMs: number; flushMs: number }>;
}
let hubPort = 0;
const health = async (): Promise<RecsHealth | undefined> =>
  fetch(`http://127.0.0.1:${hubPort}/healthz`, { signal: AbortSignal.timeout(5000) })
    .then((r) => r.json() as Promise<{ recommendations?: RecsHealth }>)
    .then((h) => h.recommendations)
    .catch(() => undefined);
const startHub = async (name: string, profile: boolean): Promise<ManagedProcess> => {
  hubPort = await freePort();
  return startProcess({
    name,
    script: 'dist/hub/src/main.js',
    nodeArgs: profile ? (process.env.BENCH_HUB_NODE_ARGS?.split(' ').filter(Boolean) ?? []) : [],
    logDir,
    healthUrl: `http://127.0.0.1:${hubPort}/healthz`,
    timeoutMs: 120_000,
    env: {
      LOG_LEVEL: 'warn',
      HUB_HTTP__PORT: String(hubPort),
      HUB_NATS__NAME: name,
      HUB_NATS__SERVERS: JSON.stringify(stack.natsUrls),
      HUB_QUESTDB__HTTPURL: stack.questdbHttpUrl,
      HUB_CONSUMER__ENABLED: 'false',
      HUB_ANALYTICS__ENABLED: 'false',
      HUB_DASHBOARD__ENABLED: 'false',
      HUB_RECOMMENDATIONS__ENABLED: 'true',
      HUB_RECOMMENDATIONS__WORKER_ID: workerId,
      HUB_RECOMMENDATIONS__CATALOGUE_FILE: catalogueFile,
    },
  });
};
const waitOwned = async (what: string): Promise<number> => {
  const from = Date.now();
  for (const until = Date.now() + 90_000; Date.now() < until; await sleep(100)) {
    if ((await health())?.owned.length === PARTITIONS) return Date.now() - from;
  }
  throw new Error(`${what}: the hub did not take all ${PARTITIONS} partitions in 90 s (leases of a dead worker of an earlier run?)`);
};

// The setup hub takes the partitions: its durable consumers start after every earlier checkpoint and keep the
// backlog in EVENTS (interest retention) while no hub runs; its clean stop checkpoints and frees the leases.
say('setup hub: taking the partitions...');
const setupHub = await startHub(`${workerId}-setup`, false);
await waitOwned('setup');
await setupHub.stop(60_000);

// ---------------------------------------------------------------------------------------------------------------
// (1) backlog

say(`publishing ${totalEvents.toLocaleString('en-US')} app events of ${customers.length.toLocaleString('en-US')} customers into EVENTS...`);
const publishStart = performance.now();
for (let done = 0; done < totalEvents; done += 50_000) {
  await publish(backlog.slice(done, done + 50_000).map((e) => wireOf(e, Date.parse(e.timestamp))));
}
const publishEventsPerSecond = Math.round(totalEvents / ((performance.now() - publishStart) / 1000));
const lastSeqOf = new Map<number, number>();
for (let p = 0; p < PARTITIONS; p++) {
  const message = await jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: eventSubject(agentId, p) }).catch(() => null);
  if (message) lastSeqOf.set(p, message.seq);
}
say(`published at ${publishEventsPerSecond.toLocaleString('en-US')} events/s; starting the hub to drain them...`);

const natsPids = pidsNamed('nats-server');
const natsBefore = cpuSecondsOf(natsPids);
const hubStart = Date.now();
const hub = await startHub(workerId, true);
const hubPid = hub.child.pid!;
const processed = (c: RecsHealth['counters']) => c.applied + c.duplicates + c.ignored + c.invalid;
let firstAppliedAt = 0;
let countedAt = 0;
let coveredAt = 0;
let peakRss = 0;
let last: RecsHealth | undefined;
for (;;) {
  const sample = sampleProcess(hubPid);
  peakRss = Math.max(peakRss, sample.peakRssBytes, sample.rssBytes);
  const h = await health();
  if (h) {
    last = h;
    const n = processed(h.counters);
    if (!firstAppliedAt && n > 0) firstAppliedAt = Date.now();
    if (!countedAt && n >= totalEvents) countedAt = Date.now();
    const bySeq = new Map(h.partitions.map((p) => [p.partition, p.streamSeq]));
    if (!coveredAt && h.owned.length === PARTITIONS && [...lastSeqOf].every(([p, seq]) => (bySeq.get(p) ?? 0) >= seq)) coveredAt = Date.now();
  }
  if ((countedAt && coveredAt) || Date.now() - hubStart > 600_000) break;
  await sleep(100);
}
const doneAt = Math.max(countedAt, coveredAt) || Date.now();
const hubCpuDrain = sampleProcess(hubPid).cpuSeconds; // the process started with the drain: all of its CPU
const natsCpuDrain = cpuSecondsOf(natsPids) - natsBefore;
const drainSeconds = (doneAt - hubStart) / 1000;
const applySeconds = (doneAt - (firstAppliedAt || hubStart)) / 1000;
const drain = {
  method: 'backlog: published while no hub ran (the setup hub\'s durable consumers kept it), then one hub process started and drained it',
  processed: last ? processed(last.counters) : 0,
  counters: last?.counters,
  fromHubStartSeconds: drainSeconds,
  fromFirstAppliedSeconds: applySeconds,
  startupSeconds: ((firstAppliedAt || doneAt) - hubStart) / 1000,
  eventsPerSecondFromStart: Math.round(totalEvents / drainSeconds),
  eventsPerSecondApplying: Math.round(totalEvents / applySeconds),
  hubCpuSeconds: hubCpuDrain,
  hubCpuSecondsPer100k: Math.round((hubCpuDrain / totalEvents) * 100_000 * 10) / 10,
  hubCpuPercent: Math.round((hubCpuDrain / drainSeconds) * 100),
  natsCpuPercent: Math.round((natsCpuDrain / drainSeconds) * 100),
  hubPeakRssMB: Math.round(peakRss / 2 ** 20),
  complete: Boolean(countedAt && coveredAt),
  /** Seconds summed over the partitions: waiting for messages, applying them (prefetch included), flushing (in the background). */
  partitionSeconds: {
    wait: Math.round((last?.partitions ?? []).reduce((sum, p) => sum + p.waitMs, 0) / 100) / 10,
    apply: Math.round((last?.partitions ?? []).reduce((sum, p) => sum + p.applyMs, 0) / 100) / 10,
    flush: Math.round((last?.partitions ?? []).reduce((sum, p) => sum + p.flushMs, 0) / 100) / 10,
  },
};
say(`drained: ${JSON.stringify(drain)}`);
// The read model follows the KV writes: wait until it has every customer of the backlog (the API phase needs them).
for (const until = Date.now() + 60_000; Date.now() < until; await sleep(200)) {
  const r = await fetch(`http://127.0.0.1:${hubPort}/v1/customers/${encodeURIComponent(customers[customers.length - 1]!)}/profile`).catch(() => undefined);
  if (r?.status === 200) break;
}

// ---------------------------------------------------------------------------------------------------------------
// (2) freshness

// The live phases measure the steady state: first the read model (the hub's KV watch) takes in every write of the
// drain. How long that takes is how far the API was behind the drain.
const catchUpStart = Date.now();
let readModelCaughtUp = false;
while (Date.now() - catchUpStart < 180_000) {
  const h = await health();
  if (h && h.readModel.updates >= h.counters.written) {
    readModelCaughtUp = true;
    break;
  }
  await sleep(100);
}
const readModelCatchUp = { seconds: (Date.now() - catchUpStart) / 1000, caughtUp: readModelCaughtUp, writes: last?.counters.written ?? 0 };
say(`read model: ${JSON.stringify(readModelCatchUp)}`);
say(`freshness: ${freshRate.toLocaleString('en-US')} events/s for ${freshSeconds} s, ${freshSamples} sampled...`);
// Sampled customers get exactly one event in this phase, so `lastActive >= ts` means that event is applied.
const sampled = customers.slice(0, freshSamples);
const background = customers.slice(freshSamples);
const templates = backlog.filter((e) => e.event_type !== 'failed_login');
/**
 * How often a sampled customer's profile is polled until it shows the event. Every 5 ms was tried first: with a
 * lag of a second or two, the watchers' polls (thousands of requests per second) were most of the hub's load and
 * made the lag they measured. 20 ms adds at most 20 ms (10 on average) to each sample.
 */
const FRESHNESS_POLL_MS = 20;
const freshness = new LatencyRecorder();
let freshTimeouts = 0;
let freshPolls = 0;
const watchers: Promise<void>[] = [];
const watch = (customer: string, tsMs: number) =>
  (async () => {
    const url = `http://127.0.0.1:${hubPort}/v1/customers/${encodeURIComponent(customer)}/profile`;
    for (const until = tsMs + 15_000; Date.now() < until; await sleep(FRESHNESS_POLL_MS)) {
      freshPolls++;
      const response = await fetch(url).catch(() => undefined);
      const body = response?.ok ? ((await response.json()) as { lastActive?: number }) : undefined;
      if (body?.lastActive !== undefined && body.lastActive >= tsMs) {
        freshness.record(Date.now() - tsMs);
        return;
      }
    }
    freshTimeouts++;
  })();
const freshFrom = Date.now();
const perTick = Math.round(freshRate / 10);
const ticks = freshSeconds * 10;
const sampleEvery = Math.max(1, Math.floor(ticks / freshSamples));
let freshSent = 0;
let nextSample = 0;
for (let tick = 0; tick < ticks; tick++) {
  const tickStart = Date.now();
  const events: WireEvent[] = [];
  for (let i = 0; i < perTick; i++) {
    const template = templates[(freshSent + i) % templates.length]!;
    const customer = background[(freshSent + i) % background.length]!;
    events.push(wireOf({ ...template, user_id: customer }, Date.now(), `${agentId}-f${freshSent + i}`));
  }
  const samples: Array<[string, number]> = [];
  for (let k = 0; k < Math.ceil(freshSamples / ticks) && nextSample < sampled.length && tick % sampleEvery === 0; k++) {
    const customer = sampled[nextSample++]!;
    const ts = Date.now();
    events[k] = wireOf({ ...templates[k]!, user_id: customer }, ts, `${agentId}-s${nextSample}`);
    samples.push([customer, ts]);
  }
  await publish(events);
  for (const [customer, ts] of samples) watchers.push(watch(customer, ts));
  freshSent += events.length;
  await sleep(Math.max(0, 100 - (Date.now() - tickStart)));
}
const freshAchievedRate = Math.round(freshSent / ((Date.now() - freshFrom) / 1000));
await Promise.all(watchers);
const fresh = { rate: freshRate, achievedRate: freshAchievedRate, sent: freshSent, samples: freshness.count, timeouts: freshTimeouts, polls: freshPolls, ms: freshness.percentiles() };
say(`freshness: ${JSON.stringify(fresh)}`);
// The API is measured with the ingest idle: wait until the hub applied what this phase sent (2 minutes at most).
let ingestIdle = false;
for (const until = Date.now() + 120_000; Date.now() < until; await sleep(250)) {
  const h = await health();
  if (h && processed(h.counters) >= totalEvents + freshSent) {
    ingestIdle = true;
    break;
  }
}
await sleep(1000);

// ---------------------------------------------------------------------------------------------------------------
// (3) API latency under load

say(`API: autocannon at ${apiRate.toLocaleString('en-US')} requests/s for ${apiSeconds} s (${connections} connections)...`);
let pick = 0x9e3779b9;
const random = () => ((pick = (Math.imul(pick, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const nextPath = () => {
  const r = random();
  const customer = encodeURIComponent(customers[Math.floor(random() * customers.length)]!);
  if (r < 0.7) return `/v1/customers/${customer}/recommendations?limit=10`;
  if (r < 0.9) return `/v1/customers/${customer}/profile`;
  return `/v1/products/${encodeURIComponent(products[Math.floor(random() * products.length)]!)}/similar?limit=10`;
};
const load = (seconds: number, record: LatencyRecorder | undefined) =>
  new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${hubPort}`,
        connections,
        overallRate: apiRate,
        duration: seconds,
        requests: [{ method: 'GET', setupRequest: (request) => ({ ...request, path: nextPath() }) }],
      },
      (error, result) => (error ? reject(error) : resolve(result)),
    );
    instance.on('response', (_client, _status, _bytes, responseTime) => record?.record(responseTime));
  });
await load(3, undefined); // warm-up (JIT, connections), not counted
const apiLatency = new LatencyRecorder(1_000_000);
const cpuBeforeLoad = sampleProcess(hubPid).cpuSeconds;
const loadStart = Date.now();
const result = await load(apiSeconds, apiLatency);
const loadSeconds = (Date.now() - loadStart) / 1000;
const hubCpuLoad = sampleProcess(hubPid).cpuSeconds - cpuBeforeLoad;
const mine = apiLatency.percentiles();
const api = {
  targetRate: apiRate,
  connections,
  seconds: apiSeconds,
  requests: result.requests.total,
  achievedRate: Math.round(result.requests.total / apiSeconds),
  non2xx: result.non2xx,
  errors: result.errors,
  timeouts: result.timeouts,
  /** From each response's time as autocannon reports it (ms, recorded here so p95 is there too). */
  latencyMs: mine,
  /** autocannon's own histogram, for comparison. */
  autocannonLatencyMs: { p50: result.latency.p50, p97_5: result.latency.p97_5, p99: result.latency.p99, max: result.latency.max, mean: result.latency.average },
  hubCpuPercent: Math.round((hubCpuLoad / loadSeconds) * 100),
  hubRssMB: Math.round(sampleProcess(hubPid).rssBytes / 2 ** 20),
  /** Whether the hub had applied every event sent before the load started (false: it was still applying). */
  ingestIdle,
};
say(`API: ${JSON.stringify(api)}`);
const finalHealth = await health();

// ---------------------------------------------------------------------------------------------------------------
// clean-up and results

await hub.stop(60_000);
await jsm.streams.purge(EVENTS_STREAM, { filter: `events.${agentId}.>` }).catch(() => undefined);
await nc.close();
if (!wasRunning) await stack.stop();
rmSync(tmp, { recursive: true, force: true });

const results = {
  date: new Date().toISOString(),
  setup:
    `1 recommendations-only hub process (compiled; consumer, analytics, dashboard off), ${PARTITIONS} partitions, flushIntervalMs 250 (default); ` +
    `3-node JetStream R3 and QuestDB on the same machine; the load tool (autocannon) and the publisher in the benchmark process; ${machineDescription()}`,
  shop: { customers: customers.length, products: products.length, backlogEvents: totalEvents },
  publishEventsPerSecond,
  backlog: drain,
  readModelCatchUp,
  freshness: fresh,
  api,
  readModel: finalHealth?.readModel,
  targets: { eventsPerSecond: 100_000, freshnessP95Ms: 500, apiP99Ms: 10, apiRate: 5000 },
};
const file = writeResults('recs-serving', results);
const f = (n: number) => n.toLocaleString('en-US');
const ms = (n: number) => (Number.isFinite(n) ? (Math.round(n * 10) / 10).toString() : 'n/a');
process.stdout.write(`\nRecommendations serving. Setup: ${results.setup}\n\n`);
process.stdout.write(
  table([
    { measure: 'backlog: events/s applied (from first event applied)', value: f(drain.eventsPerSecondApplying), target: '>= 100,000' },
    { measure: 'backlog: events/s from hub process start', value: f(drain.eventsPerSecondFromStart), target: '' },
    { measure: 'backlog: hub CPU s per 100k events / CPU % hub, 3 NATS', value: `${drain.hubCpuSecondsPer100k} / ${drain.hubCpuPercent}, ${drain.natsCpuPercent}`, target: '' },
    { measure: 'backlog: hub peak RSS MB', value: drain.hubPeakRssMB, target: '' },
    { measure: "backlog: API behind the drain's end (read model catching up)", value: `${readModelCatchUp.seconds.toFixed(1)} s for ${readModelCatchUp.writes.toLocaleString('en-US')} KV writes${readModelCatchUp.caughtUp ? '' : ' (not caught up in 180 s)'}`, target: '' },
    { measure: `freshness at ${f(freshAchievedRate)} ev/s: event ts -> API p50/p95/p99 ms`, value: `${ms(fresh.ms.p50)} / ${ms(fresh.ms.p95)} / ${ms(fresh.ms.p99)} (${fresh.samples} samples, ${fresh.timeouts} timeouts)`, target: 'p95 <= 500' },
    { measure: `API at ${f(api.achievedRate)} req/s: p50/p95/p99/max ms`, value: `${ms(mine.p50)} / ${ms(mine.p95)} / ${ms(mine.p99)} / ${ms(mine.max)}`, target: 'p99 <= 10 at 5,000/s' },
    { measure: 'API: non-2xx / errors / timeouts; hub CPU %; ingest idle', value: `${api.non2xx} / ${api.errors} / ${api.timeouts}; ${api.hubCpuPercent}; ${api.ingestIdle}`, target: '' },
  ]) + `\n\nwritten to ${file}\n`,
);
