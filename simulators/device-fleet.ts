/**
 * A fleet of simulated devices, each its own MQTT client, publishing temperature and humidity readings with
 * sensor noise and slow drift. `npx tsx simulators/device-fleet.ts --devices 100 --rate 2000 --duration 30`.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { pathToFileURL } from 'node:url';
import { numericFlags } from './lib/cli.js';
import { seededRandom } from './lib/random.js';

export interface DeviceFleetOptions {
  url: string;
  devices: number;
  /** Readings per second, whole fleet. */
  rate: number;
  durationSeconds: number;
  /** Readings per PUBLISH (1 = one JSON object, more = a JSON array). */
  batch: number;
  qos: 0 | 1;
  seed: number;
  /** Prefix of device ids, so runs can be told apart in QuestDB. */
  prefix: string;
}

export interface FleetProgress {
  sent: number;
  acked: number;
  errors: number;
  elapsedSeconds: number;
}

export async function runDeviceFleet(options: DeviceFleetOptions, onProgress?: (p: FleetProgress) => void, signal?: AbortSignal): Promise<FleetProgress> {
  const random = seededRandom(options.seed);
  const clients: MqttClient[] = [];
  for (let d = 0; d < options.devices; d++) {
    clients.push(await mqtt.connectAsync(options.url, { clientId: `${options.prefix}-${d}`, clean: true, reconnectPeriod: 1000 }));
  }
  const baseline = clients.map(() => 15 + random() * 10);
  const sequence = clients.map(() => 0);
  const progress: FleetProgress = { sent: 0, acked: 0, errors: 0, elapsedSeconds: 0 };
  const started = Date.now();
  const tickMs = 50;
  const publishesPerTick = (options.rate / options.batch) * (tickMs / 1000);
  let owed = 0;
  let device = 0;
  let lastReport = started;
  while (!signal?.aborted && Date.now() - started < options.durationSeconds * 1000) {
    owed += publishesPerTick;
    while (owed >= 1) {
      owed--;
      const d = device++ % clients.length;
      const readings = [];
      for (let i = 0; i < options.batch; i++) {
        const now = Date.now();
        baseline[d]! += (random() - 0.5) * 0.05; // drift
        const metric = i % 2 === 0 ? 'temperature' : 'humidity';
        const value = metric === 'temperature' ? baseline[d]! + (random() - 0.5) * 0.4 : 40 + random() * 20;
        readings.push({ event_id: `${options.prefix}-${d}-${sequence[d]!++}`, device_id: `${options.prefix}-${d}`, timestamp: now, metric, value: Math.round(value * 100) / 100, unit: metric === 'temperature' ? 'C' : '%' });
      }
      const payload = JSON.stringify(options.batch === 1 ? readings[0] : readings);
      progress.sent += readings.length;
      clients[d]!.publishAsync(`devices/${options.prefix}-${d}/telemetry`, payload, { qos: options.qos }).then(
        () => (progress.acked += readings.length),
        () => progress.errors++,
      );
    }
    await new Promise((r) => setTimeout(r, tickMs));
    if (Date.now() - lastReport >= 1000) {
      lastReport = Date.now();
      progress.elapsedSeconds = (lastReport - started) / 1000;
      onProgress?.(progress);
    }
  }
  await Promise.all(clients.map((c) => c.endAsync()));
  progress.elapsedSeconds = (Date.now() - started) / 1000;
  return progress;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const flags = numericFlags(
    { url: 'mqtt://127.0.0.1:1883', devices: 50, rate: 1000, duration: 30, batch: 1, qos: 1, seed: 1, prefix: 'sim' },
    'Simulated device fleet over MQTT.',
  );
  const result = await runDeviceFleet(
    { url: flags.url, devices: flags.devices, rate: flags.rate, durationSeconds: flags.duration, batch: flags.batch, qos: flags.qos === 0 ? 0 : 1, seed: flags.seed, prefix: flags.prefix },
    (p) => process.stdout.write(`\r${p.elapsedSeconds.toFixed(0)}s sent ${p.sent} acked ${p.acked} errors ${p.errors}   `),
  );
  process.stdout.write(`\ndone: sent ${result.sent} readings, ${result.acked} acknowledged, ${result.errors} errors in ${result.elapsedSeconds.toFixed(1)} s\n`);
}
