/**
 * Load for fault tests: MQTT devices (QoS 1) and an HTTP backend that retry until acknowledged, and remember
 * exactly which events were acknowledged, so a test can check that each of those is in QuestDB exactly once.
 */
import mqtt, { type MqttClient } from 'mqtt';

export interface AckedLoad {
  /** Event ids the agent acknowledged (PUBACK received, or HTTP 200). */
  acked: Set<string>;
  /** Ids per device in the order they were sent. */
  sentPerDevice: Map<string, string[]>;
  stop(): Promise<void>;
}

/**
 * `devices` MQTT clients and one HTTP sender, each sending one event at a time every `intervalMs`; a failed send
 * is retried (same event) until acknowledged, like a real device with a QoS 1 session or a backend with retries.
 */
export function startAckedLoad(options: {
  runId: string;
  mqttPort: number;
  httpPort: number;
  devices: number;
  intervalMs: number;
  httpBatch: number;
  /** Address of the agent's MQTT and HTTP sources; default 127.0.0.1. */
  host?: string;
  /**
   * Event timestamps: `sequence` (default) counts milliseconds from the start, one per event, which falls behind the
   * clock; `clock` is the time of sending, for runs beside event-time rules (where `sequence` events would be late).
   */
  eventTime?: 'sequence' | 'clock';
}): AckedLoad {
  const acked = new Set<string>();
  const sentPerDevice = new Map<string, string[]>();
  let running = true;
  const base = Date.now();
  const clock = options.eventTime === 'clock';
  const host = options.host ?? '127.0.0.1';
  const loops: Promise<void>[] = [];
  const clients: MqttClient[] = [];
  for (let d = 0; d < options.devices; d++) {
    const device = `${options.runId}-dev-${d}`;
    const client = mqtt.connect(`mqtt://${host}:${options.mqttPort}`, { clientId: device, clean: false, reconnectPeriod: 300, connectTimeout: 2000 });
    client.on('error', () => undefined);
    clients.push(client);
    sentPerDevice.set(device, []);
    loops.push(
      (async () => {
        for (let seq = 0; running; seq++) {
          const id = `${device}-${seq}`;
          const payload = JSON.stringify({ event_id: id, device_id: device, timestamp: clock ? Date.now() : base + seq, metric: 'temperature', value: seq });
          sentPerDevice.get(device)!.push(id);
          // mqtt.js keeps an unacknowledged QoS 1 publish in its outgoing store and re-sends it after reconnecting.
          await client.publishAsync(`devices/${device}/telemetry`, payload, { qos: 1 }).then(
            () => acked.add(id),
            () => undefined,
          );
          await new Promise((r) => setTimeout(r, options.intervalMs));
        }
      })(),
    );
  }
  loops.push(
    (async () => {
      for (let batch = 0; running; batch++) {
        const events = Array.from({ length: options.httpBatch }, (_, i) => ({
          event_id: `${options.runId}-app-${batch}-${i}`,
          event_type: 'video_play',
          user_id: `${options.runId}-user-${i % 7}`,
          timestamp: clock ? Date.now() : base + batch * options.httpBatch + i,
        }));
        const body = events.map((e) => JSON.stringify(e)).join('\n');
        for (;;) {
          const status = await fetch(`http://${host}:${options.httpPort}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body, signal: AbortSignal.timeout(5000) }).then(
            (r) => r.status,
            () => 0,
          );
          if (status === 200) {
            for (const e of events) acked.add(e.event_id);
            break;
          }
          if (!running) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        await new Promise((r) => setTimeout(r, options.intervalMs));
      }
    })(),
  );
  return {
    acked,
    sentPerDevice,
    async stop() {
      running = false;
      await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 10000))]);
      await Promise.all(clients.map((c) => c.endAsync(true)));
    },
  };
}
