/**
 * Runs a scenario file against an edge agent and reports what reached QuestDB and which planted patterns the hub's
 * rules found:
 *
 *   npm run scenario -- simulators/scenarios/chaos-and-patterns.yaml
 *   npm run scenario -- <file> --mqtt mqtt://gw:1883 --http http://gw:8080 --questdb http://hub:9000
 *
 * Devices publish over MQTT (each its own client, readings with noise, drift and spikes; some go silent), app
 * backends POST NDJSON; the scenario's chaos (skew, out-of-order, late, duplicates, malformed, bursts) is applied
 * with its seed, so a run can be repeated. Planted patterns go out untouched at their time. At the end the runner
 * waits until the last pattern can have fired, then asks QuestDB: rows of the run vs distinct events accepted, and
 * alerts per planted key. Exit code 1 when a planted pattern was not found or an accepted event is missing.
 */
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { ChaosMixer, type OutgoingPayload } from './lib/chaos.js';
import { lastSettleMs, plantPattern, type PlantedPattern } from './lib/patterns.js';
import { pick, seededRandom } from './lib/random.js';
import { loadScenario, type Scenario } from './scenario.js';

const VIEWING = ['video_play', 'video_pause', 'video_complete', 'video_play', 'video_play'];
const OTHER = ['login_success', 'purchase', 'page_view'];
const LOCATIONS = ['DE', 'FR', 'US', 'BR', 'JP', 'IN'];
const DEVICE_TYPES = ['tv', 'mobile', 'web', 'tablet'];
const TICK_MS = 50;

export interface ScenarioEndpoints {
  mqttUrl: string;
  httpUrl: string;
  questdbUrl: string;
}

export interface ScenarioReport {
  scenario: string;
  seconds: number;
  sent: { devices: number; apps: number; planted: number };
  chaos: { devices: ChaosMixer['counts']; apps: ChaosMixer['counts'] };
  /** Event ids the edge acknowledged (MQTT PUBACK / HTTP per-event result), distinct. */
  acceptedIds: number;
  /** Events refused over HTTP (per-event results). A malformed MQTT publish is acknowledged and dead-lettered by the
   * agent (its /metrics count it), so it shows only in `chaos.devices.malformed`. */
  refused: number;
  /** Distinct event ids of the run in QuestDB, and how many of the accepted ones are missing. */
  rowsInQuestDb: number;
  /** Accepted event ids not in QuestDB (compared id by id), and a few of them. */
  missing: number;
  missingExamples?: string[];
  patterns: Array<{ rule: string; planted: number; found: number; missingKeys: string[] }>;
}

export async function runScenario(scenario: Scenario, endpoints: ScenarioEndpoints, log: (line: string) => void = () => undefined): Promise<ScenarioReport> {
  const { devices, apps, prefix } = scenario;
  // Separate streams for devices and apps, and decisions taken on the tick count, not the clock: the same seed gives
  // the same events in the same order however fast the machine is (only their timestamps differ).
  const random = seededRandom(scenario.seed);
  const appRandom = seededRandom(scenario.seed + 3);
  const deviceChaos = new ChaosMixer(scenario.chaos, seededRandom(scenario.seed + 1));
  const appChaos = new ChaosMixer(scenario.chaos, seededRandom(scenario.seed + 2));
  const runId = `${prefix}-${Date.now().toString(36)}`;

  // Planted patterns: their own devices and users, so normal traffic cannot complete or spoil them.
  const planted: PlantedPattern[] = [];
  for (const plan of scenario.plant) {
    for (let i = 0; i < plan.count; i++) {
      const key = plan.pattern === 'overheating' || plan.pattern === 'device-silent' ? `${runId}-${plan.pattern}-d${i}` : `${runId}-${plan.pattern}-u${i}`;
      planted.push(plantPattern(plan.pattern, key, plan.atSeconds * 1000 + i * 250, runId));
    }
  }

  const connect = (deviceId: string) =>
    mqtt.connectAsync(endpoints.mqttUrl, {
      clientId: deviceId,
      clean: true,
      reconnectPeriod: 1000,
      ...(devices.password !== undefined ? { username: deviceId, password: devices.password } : {}),
    });
  const deviceIds = Array.from({ length: devices.count }, (_, d) => `${runId}-d${d}`);
  const clients = new Map<string, MqttClient>();
  for (const id of deviceIds) clients.set(id, await connect(id));
  for (const p of planted) if (p.events.some((e) => e.channel === 'mqtt') && !clients.has(p.key)) clients.set(p.key, await connect(p.key));

  const accepted = new Set<string>();
  let refused = 0;
  const sent = { devices: 0, apps: 0, planted: 0 };
  const inFlight = new Set<Promise<unknown>>();
  const track = (promise: Promise<unknown>) => {
    inFlight.add(promise);
    void promise.finally(() => inFlight.delete(promise));
  };

  const publish = (deviceId: string, payloads: OutgoingPayload[]) => {
    const client = clients.get(deviceId);
    if (!client || payloads.length === 0) return;
    const body = payloads.length === 1 && devices.batch === 1 ? payloads[0]!.payload : `[${payloads.map((p) => p.payload).join(',')}]`;
    track(
      client.publishAsync(`devices/${deviceId}/telemetry`, body, { qos: devices.qos }).then(
        () => {
          // QoS 1: PUBACK after the commit. An array is all or nothing only when every item is valid; a malformed
          // item is refused on its own (the agent dead-letters it), so count ids of the well-formed payloads.
          for (const p of payloads) if (p.kind !== 'malformed' && p.eventId) accepted.add(p.eventId);
        },
        () => (refused += payloads.length),
      ),
    );
  };
  const post = (lines: OutgoingPayload[]) => {
    if (lines.length === 0) return;
    const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
    if (apps.apiKey) headers['x-api-key'] = apps.apiKey;
    track(
      fetch(`${endpoints.httpUrl}/v1/events`, { method: 'POST', headers, body: lines.map((l) => l.payload).join('\n') })
        .then(async (response) => {
          const result = (await response.json().catch(() => ({}))) as { rejected?: Array<{ index: number }> };
          if (response.status >= 300 && response.status !== 207) {
            refused += lines.length;
            return;
          }
          const bad = new Set((result.rejected ?? []).map((r) => r.index));
          lines.forEach((line, index) => {
            if (bad.has(index)) refused++;
            else if (line.eventId) accepted.add(line.eventId);
          });
        })
        .catch(() => (refused += lines.length)),
    );
  };

  // Signals: per device a baseline, slow drift, noise and rare spikes; some devices stop half-way.
  const baseline = deviceIds.map(() => 18 + random() * 8);
  const silentFrom = deviceIds.map(() => (random() < devices.silentShare ? scenario.durationSeconds / 2 : Infinity));
  const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  let deviceSeq = 0;
  let appSeq = 0;
  let owedReadings = 0;
  let owedApps = 0;
  let nextDevice = 0;
  const plantedQueue = planted.flatMap((p) => p.events.map((e) => ({ at: p.startMs + e.atMs, key: p.key, event: e }))).sort((a, b) => a.at - b.at);
  let plantedIndex = 0;

  const started = Date.now();
  let lastProgress = started;
  const ticks = Math.ceil((scenario.durationSeconds * 1000) / TICK_MS);
  for (let tick = 0; tick < ticks; tick++) {
    const now = Date.now();
    const elapsed = (tick * TICK_MS) / 1000;
    const factor = deviceChaos.rateFactor(elapsed);
    owedReadings += devices.ratePerSecond * factor * (TICK_MS / 1000);
    owedApps += apps.ratePerSecond * factor * (TICK_MS / 1000);
    while (owedReadings >= 1 && deviceIds.length > 0) {
      owedReadings--;
      const d = nextDevice++ % deviceIds.length;
      if (elapsed >= silentFrom[d]!) continue;
      baseline[d]! += (random() - 0.5) * devices.drift;
      const spike = random() < devices.spikeShare ? 25 + random() * 30 : 0;
      const value = Math.round((baseline[d]! + gauss() * devices.noise + spike) * 100) / 100;
      deviceChaos.push({ source: deviceIds[d]!, timestampMs: now, body: { event_id: `${runId}-r${deviceSeq++}`, device_id: deviceIds[d]!, metric: 'temperature', value, unit: 'C' } }, now);
      sent.devices++;
    }
    while (owedApps >= 1) {
      owedApps--;
      const user = `${runId}-u${Math.floor(appRandom() * apps.users)}`;
      const kind = appRandom() < 0.85 ? pick(appRandom, VIEWING) : pick(appRandom, OTHER);
      const body: Record<string, unknown> = {
        type: 'app.event',
        event_id: `${runId}-a${appSeq++}`,
        event_type: kind,
        user_id: user,
        session_id: `${user}-s${Math.floor(elapsed / 600)}`,
        properties: kind.startsWith('video') ? { content_id: `content-${Math.floor(appRandom() * 200)}` } : kind === 'purchase' ? { amount: Math.round(appRandom() * 5000) / 100 } : {},
        context: { device_type: pick(appRandom, DEVICE_TYPES), location: pick(appRandom, LOCATIONS) },
      };
      appChaos.push({ source: user, timestampMs: now, body }, now);
      sent.apps++;
    }
    // Device payloads go out per device (arrays when batch > 1), app events in NDJSON requests.
    const byDevice = new Map<string, OutgoingPayload[]>();
    for (const out of deviceChaos.due(now)) {
      // A malformed payload goes alone: inside an array it would make the whole array unreadable.
      if (out.kind === 'malformed') {
        publish(out.source, [out]);
        continue;
      }
      const list = byDevice.get(out.source) ?? [];
      list.push(out);
      if (list.length >= devices.batch) {
        publish(out.source, list);
        byDevice.delete(out.source);
      } else byDevice.set(out.source, list);
    }
    for (const [deviceId, list] of byDevice) publish(deviceId, list);
    const appLines = appChaos.due(now);
    for (let i = 0; i < appLines.length; i += apps.batch) post(appLines.slice(i, i + apps.batch));
    // Planted events, untouched, at their time.
    const httpPlanted: OutgoingPayload[] = [];
    while (plantedIndex < plantedQueue.length && plantedQueue[plantedIndex]!.at <= tick * TICK_MS) {
      const { key, event } = plantedQueue[plantedIndex++]!;
      const out: OutgoingPayload = { source: key, payload: JSON.stringify({ ...event.body, timestamp: now }), kind: 'normal', eventId: String(event.body.event_id) };
      if (event.channel === 'mqtt') publish(key, [out]);
      else httpPlanted.push(out);
      sent.planted++;
    }
    post(httpPlanted);
    if (now - lastProgress >= 1000) {
      lastProgress = now;
      log(`${elapsed.toFixed(0)} s: devices ${sent.devices}, apps ${sent.apps}, planted ${sent.planted}, accepted ${accepted.size}, refused ${refused}, in flight ${inFlight.size}`);
    }
    // Bounded: a slow agent slows the generator down instead of piling up requests.
    while (inFlight.size > 256) await Promise.race(inFlight);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, TICK_MS - (Date.now() - now))));
  }
  // Planted events the run did not reach (validated away in scenario.ts, but never silently).
  while (plantedIndex < plantedQueue.length) {
    const { key, event } = plantedQueue[plantedIndex++]!;
    const out: OutgoingPayload = { source: key, payload: JSON.stringify({ ...event.body, timestamp: Date.now() }), kind: 'normal', eventId: String(event.body.event_id) };
    if (event.channel === 'mqtt') publish(key, [out]);
    else post([out]);
    sent.planted++;
  }
  const rest = deviceChaos.drain();
  for (const out of rest) publish(out.source, [out]);
  post(appChaos.drain());
  await Promise.all(inFlight);
  await Promise.all([...clients.values()].map((c) => c.endAsync()));
  const seconds = (Date.now() - started) / 1000;

  // Wait for the slowest planted pattern's rule, plus time for the pipeline, then ask QuestDB.
  const settleUntil = started + lastSettleMs(planted) + 15_000;
  while (Date.now() < settleUntil) {
    log(`waiting ${Math.ceil((settleUntil - Date.now()) / 1000)} s for the rules' time to pass (absence, durations)...`);
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, settleUntil - Date.now())));
  }
  const sql = async (query: string): Promise<unknown[][]> => {
    const response = await fetch(`${endpoints.questdbUrl}/exec?query=${encodeURIComponent(query)}`);
    const body = (await response.json()) as { dataset?: unknown[][]; error?: string };
    if (body.error) throw new Error(`${body.error}: ${query}`);
    return body.dataset ?? [];
  };
  const since = `'${new Date(started - 3_600_000 - scenario.chaos.lateByMs).toISOString()}'`;
  // By id, not by count: an event stored whose acknowledgement the runner missed must not hide a missing one.
  let stored = new Set<string>();
  let missingIds: string[] = [];
  for (let attempt = 0; attempt < 30; attempt++) {
    const lists = await Promise.all(['device_telemetry', 'app_events'].map((table) => sql(`select distinct event_id from ${table} where ts >= ${since} and event_id like '${runId}-%'`)));
    stored = new Set(lists.flat().map((row) => String(row[0])));
    missingIds = [...accepted].filter((id) => !stored.has(id));
    if (missingIds.length === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const alerts = await sql(`select rule, key from alerts where ts >= ${since} and key like '${runId}-%'`);
  const found = new Set(alerts.map(([rule, key]) => `${String(rule)}\u0000${String(key)}`));
  const patterns = [...new Set(planted.map((p) => p.rule))].map((rule) => {
    const ofRule = planted.filter((p) => p.rule === rule);
    const missingKeys = ofRule.filter((p) => !found.has(`${rule}\u0000${p.key}`)).map((p) => p.key);
    return { rule, planted: ofRule.length, found: ofRule.length - missingKeys.length, missingKeys };
  });
  return {
    scenario: scenario.name,
    seconds: Math.round(seconds * 10) / 10,
    sent,
    chaos: { devices: deviceChaos.counts, apps: appChaos.counts },
    acceptedIds: accepted.size,
    refused,
    rowsInQuestDb: stored.size,
    missing: missingIds.length,
    ...(missingIds.length > 0 ? { missingExamples: missingIds.slice(0, 10) } : {}),
    patterns,
  };
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      mqtt: { type: 'string', default: 'mqtt://127.0.0.1:1883' },
      http: { type: 'string', default: 'http://127.0.0.1:8080' },
      questdb: { type: 'string', default: 'http://127.0.0.1:9000' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help || positionals.length !== 1) {
    process.stdout.write('usage: npx tsx simulators/run-scenario.ts <scenario.yaml> [--mqtt url] [--http url] [--questdb url]\n');
    process.exit(values.help ? 0 : 2);
  }
  const scenario = loadScenario(positionals[0]!);
  const report = await runScenario(scenario, { mqttUrl: values.mqtt!, httpUrl: values.http!, questdbUrl: values.questdb! }, (line) => process.stderr.write(`\r${line.padEnd(110)}`));
  process.stderr.write('\n');
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  const ok = report.missing === 0 && report.patterns.every((p) => p.found === p.planted);
  process.stdout.write(
    `\n${report.scenario}: ${report.acceptedIds} events accepted, ${report.rowsInQuestDb} in QuestDB (${report.missing} missing); ` +
      report.patterns.map((p) => `${p.rule} ${p.found}/${p.planted}`).join(', ') +
      `\n${ok ? 'OK' : 'NOT OK'}\n`,
  );
  process.exit(ok ? 0 : 1);
}
