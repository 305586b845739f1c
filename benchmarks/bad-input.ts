/**
 * Does bad input slow the good? One edge agent process takes HTTP NDJSON at full speed (closed loop, a few
 * concurrent clients) and publishes to JetStream R3, in two modes with the same valid events:
 *
 *   clean  every request holds only valid readings
 *   mixed  the same requests with bad lines of every class mixed in (10% of the lines by default: malformed JSON,
 *          NaN/Infinity, 1e999, wrong types, missing and extra fields, unknown types and versions, strings over the
 *          schema and size limits, deep nesting, bad UTF-8, lone surrogates, NUL, ILP specials in a patterned field,
 *          ancient and future timestamps), and after every 10th request one request refused as a whole (empty body,
 *          gzip that is not gzip, an unsupported Content-Encoding)
 *
 * Reported per mode: valid events accepted per second (acknowledged, and published to JetStream before the clock
 * stops), request latency p50/p95/p99 of the valid requests, agent CPU, agent CPU time per valid event (what to
 * compare when other work shares the machine: events/s then follows whoever else is running) and RSS; and the
 * ratios mixed/clean. Every answer is checked (all valid lines accepted, every bad line refused, each class with its
 * code once before measuring). Each measurement gets a fresh agent and a warm-up; rounds alternate the order (clean,
 * mixed, then mixed, clean) so that a drift of the shared machine weighs on both. The stack (3 NATS nodes, QuestDB)
 * runs in its own directory on its own ports (the defaults moved by --port-offset), so it meets neither the demo
 * stack nor a test stack. Results: benchmarks/results/bad-input-*.json.
 *
 *   npm run bench:bad-input
 *   npm run bench:bad-input -- --seconds 15 --warmup 3 --clients 4 --events-per-request 1000 --bad-percent 10 --rounds 2
 *   npm run bench:bad-input -- --classes 'NUL,wrong type'            only these classes of bad lines
 *   EDGE_DEADLETTERS__FORWARD=false npm run bench:bad-input          EDGE_* variables reach the agent: here, the share
 *                                                                    of forwarding dead letters to the hub
 *   BENCH_AGENT_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' npm run bench:bad-input
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { deadLetterSubject, DLQ_STREAM, EVENTS_STREAM } from '../shared/wire.js';
import { freePort, startProcess, type ManagedProcess } from '../scripts/lib/processes.js';
import { ensureRuntime, REPO_ROOT, RUNTIME_DIR } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, NATS_NAMES, shiftPorts, stackStatus, startStack, type StackPorts } from '../scripts/lib/stack.js';
import { cpuSecondsOf, LatencyRecorder, machineDescription, sampleProcess, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '3' },
    clients: { type: 'string', default: '4' },
    'events-per-request': { type: 'string', default: '1000' },
    'bad-percent': { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    'port-offset': { type: 'string', default: '3600' },
    /** Only these bad classes (comma-separated names), to find which one costs. */
    classes: { type: 'string' },
    tsx: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const warmupSeconds = Number(values.warmup);
const clients = Number(values.clients);
const perRequest = Number(values['events-per-request']);
const badPercent = Number(values['bad-percent']);
const rounds = Number(values.rounds);
const portOffset = Number(values['port-offset']);
if (!(badPercent >= 0 && badPercent < 100)) throw new Error(`--bad-percent must be in [0, 100), got ${values['bad-percent']}`);
// Gateways run the compiled agent; --tsx measures the from-source launcher instead.
const agentScript = values.tsx ? 'bin/edge-agent.js' : 'dist/edge-agent/src/main.js';
const agentId = 'bench-bad-input';
const logDir = join(RUNTIME_DIR, 'bench', 'logs');
const stackDir = join(RUNTIME_DIR, `bench-bad-input-stack-${portOffset}`);
const ports: StackPorts = shiftPorts(DEFAULT_PORTS, portOffset);
/** The agent's limits: the integration test's, so the oversize classes stay small. */
const MAX_EVENT_BYTES = 16384;
const say = (line: string) => process.stderr.write(`${line}\n`);

// --- the requests ------------------------------------------------------------------------------------------------

const base = Date.now() - 3_600_000;
const reading = (i: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: 'device.telemetry', event_id: `b-${i}`, device_id: `bench-${i % 200}`, timestamp: base + i, metric: 'temperature', value: 20 + (i % 100) / 10, ...extra });
const nested = (levels: number) => '{"a":'.repeat(levels) + '1' + '}'.repeat(levels);

/** One NDJSON line per class of bad input, each refused on its own (the codes are checked once before measuring). */
const BAD_LINES: Array<{ name: string; code: string; line: (i: number) => Buffer }> = [
  { name: 'malformed JSON', code: 'EDGE_ERR_MALFORMED_JSON', line: (i) => Buffer.from(reading(i).slice(0, 40)) },
  { name: 'NaN token', code: 'EDGE_ERR_MALFORMED_JSON', line: (i) => Buffer.from(reading(i).replace(/"value":[^,}]+/, '"value":NaN')) },
  { name: 'Infinity token', code: 'EDGE_ERR_MALFORMED_JSON', line: (i) => Buffer.from(reading(i).replace(/"value":[^,}]+/, '"value":-Infinity')) },
  { name: '1e999', code: 'EDGE_ERR_NUMBER_OUT_OF_RANGE', line: (i) => Buffer.from(reading(i).replace(/"value":[^,}]+/, '"value":1e999')) },
  { name: 'wrong type', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { value: 'hot' })) },
  { name: 'missing field', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { metric: undefined })) },
  { name: 'extra field', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { 'a,b=c d': 1 })) },
  { name: 'not an object', code: 'EDGE_ERR_NOT_AN_OBJECT', line: () => Buffer.from('[1,2,3]') },
  { name: 'unknown type', code: 'EDGE_ERR_UNKNOWN_TYPE', line: (i) => Buffer.from(reading(i, { type: 'device.nope' })) },
  { name: 'unknown schema version', code: 'EDGE_ERR_UNKNOWN_TYPE', line: (i) => Buffer.from(reading(i, { schema_version: 99 })) },
  { name: 'string over maxLength', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { unit: 'u'.repeat(200) })) },
  { name: 'line over maxEventBytes', code: 'EDGE_ERR_TOO_LARGE', line: (i) => Buffer.from(reading(i, { unit: 'x'.repeat(MAX_EVENT_BYTES) })) },
  { name: 'deep nesting', code: 'EDGE_ERR_TOO_DEEP', line: () => Buffer.from(nested(40)) },
  { name: 'nesting bomb', code: 'EDGE_ERR_TOO_DEEP', line: () => Buffer.from('['.repeat(5000) + ']'.repeat(5000)) },
  { name: 'bad UTF-8', code: 'EDGE_ERR_INVALID_UTF8', line: (i) => Buffer.concat([Buffer.from(reading(i).slice(0, -1) + ',"unit":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]) },
  { name: 'lone surrogate', code: 'EDGE_ERR_INVALID_UTF8', line: (i) => Buffer.from(reading(i, { unit: 'X' }).replace('"X"', '"\\udead"')) },
  { name: 'NUL', code: 'EDGE_ERR_NUL_CHARACTER', line: (i) => Buffer.from(reading(i, { unit: 'a\u0000b' })) },
  { name: 'ILP specials in a patterned symbol', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { metric: 'temp,room=1 x' })) },
  { name: 'ancient timestamp', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { timestamp: '1900-01-01T00:00:00Z' })) },
  { name: 'future timestamp', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { timestamp: '9999-12-31T23:59:59Z' })) },
  { name: 'epoch too large', code: 'EDGE_ERR_SCHEMA_INVALID', line: (i) => Buffer.from(reading(i, { timestamp: 1e15 })) },
];

if (values.classes !== undefined) {
  const wanted = values.classes.split(',').map((c) => c.trim());
  const unknown = wanted.filter((c) => !BAD_LINES.some((b) => b.name === c));
  if (unknown.length > 0) throw new Error(`--classes: unknown ${unknown.join(', ')}; known: ${BAD_LINES.map((b) => b.name).join(', ')}`);
  BAD_LINES.splice(0, BAD_LINES.length, ...BAD_LINES.filter((b) => wanted.includes(b.name)));
}

/** Requests refused as a whole (sent after every 10th request in the mixed mode; not counted as valid traffic). */
const BAD_REQUESTS: Array<{ name: string; status: number; headers: Record<string, string>; body: Buffer }> = [
  { name: 'empty body', status: 400, headers: {}, body: Buffer.alloc(0) },
  { name: 'not gzip', status: 400, headers: { 'content-encoding': 'gzip' }, body: Buffer.from(reading(0)) },
  { name: 'unsupported encoding', status: 415, headers: { 'content-encoding': 'br' }, body: gzipSync(reading(0)) },
];

interface Body {
  data: Buffer;
  valid: number;
  bad: number;
}

/**
 * A pool of request bodies, built before measuring so that both modes cost the generator the same: per request
 * `perRequest` valid readings, and in the mixed mode bad lines spread evenly between them, cycling the classes.
 */
function bodies(mixed: boolean, count: number): Body[] {
  const badPerRequest = mixed ? Math.round((perRequest * badPercent) / (100 - badPercent)) : 0;
  let n = 0;
  let badClass = 0;
  return Array.from({ length: count }, () => {
    const lines: Buffer[] = [];
    const everyNth = badPerRequest > 0 ? perRequest / badPerRequest : Infinity;
    let nextBad = everyNth / 2;
    let bad = 0;
    for (let i = 0; i < perRequest; i++) {
      lines.push(Buffer.from(reading(n++)));
      while (bad < badPerRequest && i + 1 >= nextBad) {
        lines.push(BAD_LINES[badClass++ % BAD_LINES.length]!.line(n));
        bad++;
        nextBad += everyNth;
      }
    }
    const parts: Buffer[] = [];
    for (const line of lines) parts.push(line, Buffer.from('\n'));
    return { data: Buffer.concat(parts), valid: perRequest, bad };
  });
}

// --- measuring one mode ------------------------------------------------------------------------------------------

interface Measurement {
  mode: 'clean' | 'mixed';
  round: number;
  validEvents: number;
  badLines: number;
  badRequests: number;
  validEventsPerSecond: number;
  requestP50Ms: number;
  requestP95Ms: number;
  requestP99Ms: number;
  agentCpuPercent: number;
  /** Agent CPU time per valid event: less sensitive than events/s to other load on a shared machine. */
  agentCpuMicrosPerValidEvent: number;
  generatorCpuPercent: number;
  natsCpuPercent: number;
  agentRssMB: number;
  agentPeakRssMB: number;
  deadLetters: number;
}

async function post(url: string, body: Buffer, headers: Record<string, string> = {}) {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-ndjson', ...headers }, body: body as unknown as BodyInit });
  return { status: response.status, text: await response.text() };
}

/** Checks the agent refuses each bad line with its class's code and accepts the valid ones beside them. */
async function selfCheck(url: string): Promise<void> {
  const lines = BAD_LINES.flatMap((c, i) => [Buffer.from(reading(i)), c.line(i)]);
  const { status, text } = await post(url, Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
  const result = JSON.parse(text) as { accepted: number; rejected: Array<{ index: number; code: string }> };
  const codes = result.rejected.map((r) => r.code);
  if (status !== 207 || result.accepted !== BAD_LINES.length || codes.join() !== BAD_LINES.map((c) => c.code).join()) {
    throw new Error(`self-check: ${status}, accepted ${result.accepted}, codes ${codes.join()} (expected ${BAD_LINES.map((c) => c.code).join()})`);
  }
  for (const request of BAD_REQUESTS) {
    const answer = await post(url, request.body, request.headers);
    if (answer.status !== request.status) throw new Error(`self-check: ${request.name} answered ${answer.status} ${answer.text}`);
  }
}

async function measure(mode: 'clean' | 'mixed', round: number, pool: Body[], natsPids: number[]): Promise<Measurement> {
  const agentPorts = { http: await freePort(), mqtt: await freePort(), admin: await freePort() };
  const dataDir = mkdtempSync(join(tmpdir(), 'bench-bad-input-'));
  const agent: ManagedProcess = await startProcess({
    name: `bench-bad-input-${mode}-${round}`,
    script: agentScript,
    // e.g. BENCH_AGENT_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' (as for bench:edge)
    nodeArgs: process.env.BENCH_AGENT_NODE_ARGS?.split(' ').filter(Boolean) ?? [],
    logDir,
    healthUrl: `http://127.0.0.1:${agentPorts.admin}/healthz`,
    env: {
      LOG_LEVEL: 'warn',
      EDGE_AGENTID: agentId,
      EDGE_DATADIR: dataDir,
      EDGE_NATS__SERVERS: JSON.stringify(stack.natsUrls),
      EDGE_SOURCES__MQTT__HOST: '127.0.0.1',
      EDGE_SOURCES__MQTT__PORT: String(agentPorts.mqtt),
      EDGE_SOURCES__HTTP__HOST: '127.0.0.1',
      EDGE_SOURCES__HTTP__PORT: String(agentPorts.http),
      EDGE_SOURCES__HTTP__MAXEVENTBYTES: String(MAX_EVENT_BYTES),
      EDGE_ADMIN__HOST: '127.0.0.1',
      EDGE_ADMIN__PORT: String(agentPorts.admin),
    },
  });
  const url = `http://127.0.0.1:${agentPorts.http}/v1/events`;
  try {
    if (mode === 'mixed') await selfCheck(url);
    const latency = new LatencyRecorder();
    let validEvents = 0;
    let badLines = 0;
    let badRequests = 0;
    let measuring = false;
    const load = async (until: number) => {
      await Promise.all(
        Array.from({ length: clients }, async (_, client) => {
          let sent = 0;
          for (let r = client; Date.now() < until; r += clients) {
            const body = pool[r % pool.length]!;
            const started = performance.now();
            const { status, text } = await post(url, body.data);
            const elapsed = performance.now() - started;
            const result = JSON.parse(text) as { accepted?: number; rejected?: unknown[] };
            if (status !== (body.bad > 0 ? 207 : 200) || result.accepted !== body.valid || (result.rejected?.length ?? 0) !== body.bad) {
              throw new Error(`request answered ${status}: ${text.slice(0, 300)}`);
            }
            if (!measuring) continue;
            latency.record(elapsed);
            validEvents += body.valid;
            badLines += body.bad;
            if (mode === 'mixed' && ++sent % 10 === 0) {
              const request = BAD_REQUESTS[badRequests++ % BAD_REQUESTS.length]!;
              const answer = await post(url, request.body, request.headers);
              if (answer.status !== request.status) throw new Error(`${request.name} answered ${answer.status}`);
            }
          }
        }),
      );
    };
    say(`  ${mode} (round ${round}): ${warmupSeconds} s warm-up, ${seconds} s measured`);
    await load(Date.now() + warmupSeconds * 1000);
    await waitForOutbox(agentPorts.admin);
    measuring = true;
    const before = sampleProcess(agent.child.pid!);
    const generatorBefore = process.cpuUsage();
    const natsBefore = cpuSecondsOf(natsPids);
    const started = Date.now();
    await load(started + seconds * 1000);
    // Counted once published: wait until the agent has sent to JetStream everything it acknowledged.
    await waitForOutbox(agentPorts.admin);
    const elapsed = (Date.now() - started) / 1000;
    const after = sampleProcess(agent.child.pid!);
    const generator = process.cpuUsage(generatorBefore);
    const natsSeconds = cpuSecondsOf(natsPids) - natsBefore;
    const health = (await (await fetch(`http://127.0.0.1:${agentPorts.admin}/healthz`)).json()) as { outbox: { deadLetters: number } };
    const p = latency.percentiles();
    return {
      mode,
      round,
      validEvents,
      badLines,
      badRequests,
      validEventsPerSecond: Math.round(validEvents / elapsed),
      requestP50Ms: round1(p.p50),
      requestP95Ms: round1(p.p95),
      requestP99Ms: round1(p.p99),
      agentCpuPercent: Math.round(((after.cpuSeconds - before.cpuSeconds) / elapsed) * 100),
      agentCpuMicrosPerValidEvent: round1(((after.cpuSeconds - before.cpuSeconds) / validEvents) * 1e6),
      generatorCpuPercent: Math.round(((generator.user + generator.system) / 1e6 / elapsed) * 100),
      natsCpuPercent: Math.round((natsSeconds / elapsed) * 100),
      agentRssMB: Math.round(after.rssBytes / 2 ** 20),
      agentPeakRssMB: Math.round(after.peakRssBytes / 2 ** 20),
      deadLetters: health.outbox.deadLetters,
    };
  } finally {
    await agent.stop();
    rmSync(dataDir, { recursive: true, force: true });
    await jsm.streams.purge(EVENTS_STREAM, { filter: `events.${agentId}.>` }).catch(() => undefined);
    await jsm.streams.purge(DLQ_STREAM, { filter: deadLetterSubject(agentId) }).catch(() => undefined);
  }
}

async function waitForOutbox(adminPort: number): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const health = (await (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).json()) as { outbox: { rows: number } };
    if (health.outbox.rows === 0) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('the agent did not publish its outbox within 30 s');
}

function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}

// --- main ------------------------------------------------------------------------------------------------------

if (!values.tsx) {
  say('compiling the agent (npm run build)...');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
}
const wasRunning = (await stackStatus(stackDir, ports).catch(() => undefined))?.healthy === true;
say(`stack in ${stackDir} (NATS ${ports.natsClient.join(',')}, QuestDB ${ports.questdbHttp})`);
const stack = await startStack({ dir: stackDir, ports, detached: true, runtime: await ensureRuntime(say), log: say });
const nc = await connect({ servers: stack.natsUrls });
const jsm = await jetstreamManager(nc);
const results: Measurement[] = [];
const pools = { clean: bodies(false, 64), mixed: bodies(true, 64) };
try {
  // The hub creates the streams; start it once so that EVENTS and DLQ exist, then stop it: only the agent runs.
  const hubPort = await freePort();
  const hub = await startProcess({
    name: 'bench-bad-input-hub-setup',
    script: 'bin/hub.js',
    logDir,
    healthUrl: `http://127.0.0.1:${hubPort}/healthz`,
    timeoutMs: 60000,
    env: { HUB_HTTP__PORT: String(hubPort), HUB_NATS__SERVERS: JSON.stringify(stack.natsUrls), HUB_QUESTDB__HTTPURL: stack.questdbHttpUrl, HUB_ANALYTICS__ENABLED: 'false' },
  });
  await hub.stop();

  const natsPids = NATS_NAMES.map((name) => stack.pid(name)).filter((pid): pid is number => pid !== null);
  for (let r = 1; r <= rounds; r++) {
    const order: Array<'clean' | 'mixed'> = r % 2 === 1 ? ['clean', 'mixed'] : ['mixed', 'clean'];
    for (const mode of order) results.push(await measure(mode, r, pools[mode], natsPids));
  }
} finally {
  await nc.close();
  if (!wasRunning) await stack.stop();
}

const sum = (mode: 'clean' | 'mixed', pick: (m: Measurement) => number) => results.filter((m) => m.mode === mode).reduce((s, m) => s + pick(m), 0);
const ratio = sum('mixed', (m) => m.validEventsPerSecond) / sum('clean', (m) => m.validEventsPerSecond);
const cpuRatio = sum('mixed', (m) => m.agentCpuMicrosPerValidEvent) / sum('clean', (m) => m.agentCpuMicrosPerValidEvent);
const meanBytes = (pool: Body[]) => Math.round(pool.reduce((s, b) => s + b.data.length, 0) / pool.length);
const badLinesPerRequest = Math.round((perRequest * badPercent) / (100 - badPercent));
const setup =
  `one edge agent (${values.tsx ? 'tsx' : 'compiled'}, outbox synced before each answer, maxEventBytes ${MAX_EVENT_BYTES}) -> 3-node JetStream R3 on the same machine; ` +
  `HTTP NDJSON, closed loop, ${clients} clients, ${perRequest} valid readings per request` +
  ` (mixed: + ${badLinesPerRequest} bad lines = ${badPercent}% over ${BAD_LINES.length} classes, and a request refused whole after every 10th;` +
  ` ${meanBytes(pools.clean).toLocaleString('en-US')} bytes per clean request, ${meanBytes(pools.mixed).toLocaleString('en-US')} mixed);` +
  ` fresh agent per measurement, ${warmupSeconds} s warm-up, ${seconds} s measured, ${rounds} round(s) alternating the order; ${machineDescription()}`;
const forwarding = process.env.EDGE_DEADLETTERS__FORWARD === 'false' ? 'off (EDGE_DEADLETTERS__FORWARD=false)' : 'on';
const file = writeResults('bad-input', { date: new Date().toISOString(), setup, deadLetterForwarding: forwarding, ratio, cpuPerValidEventRatio: cpuRatio, badClasses: BAD_LINES.map((c) => c.name), results });
process.stdout.write(`\nValid throughput with and without bad input. Setup: ${setup}\n\n`);
process.stdout.write(
  table(
    results.map((m) => ({
      mode: `${m.mode} (round ${m.round})`,
      'valid events/s': m.validEventsPerSecond.toLocaleString('en-US'),
      'bad lines / requests refused': m.mode === 'mixed' ? `${m.badLines.toLocaleString('en-US')} / ${m.badRequests}` : '-',
      'request p50/p95/p99 ms': `${m.requestP50Ms} / ${m.requestP95Ms} / ${m.requestP99Ms}`,
      'agent CPU %': m.agentCpuPercent,
      'agent CPU µs / valid event': m.agentCpuMicrosPerValidEvent,
      'generator CPU %': m.generatorCpuPercent,
      '3 NATS CPU %': m.natsCpuPercent,
      'agent RSS MB (peak)': `${m.agentRssMB} (${m.agentPeakRssMB})`,
      'dead letters': m.deadLetters.toLocaleString('en-US'),
    })),
  ) +
    `\n\nvalid events/s, mixed / clean: ${ratio.toFixed(3)}; agent CPU per valid event, mixed / clean: ${cpuRatio.toFixed(3)} (sums over the rounds)` +
    `\ndead letters forwarded to the hub: ${forwarding}\nwritten to ${file}\n`,
);
