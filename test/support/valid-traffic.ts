/**
 * Valid traffic to run beside bad input: one MQTT device publishing readings (QoS 1, up to 8 in flight, one every
 * 10 ms) and one HTTP client posting NDJSON batches of 5 app events (one every 100 ms), until stopped. It remembers
 * exactly which events were acknowledged and every error and disconnect it saw, so a test can check that the bad
 * input never disturbed it and that each acknowledged event reached QuestDB once.
 */
import mqtt, { type IClientOptions } from 'mqtt';

export interface ValidTrafficOptions {
  /** Prefix of every event id (the agent id, so SQL can select the run's rows). */
  idPrefix: string;
  mqttUrl: string;
  /** Connect options of the device (client id, credentials). */
  mqttOptions: IClientOptions;
  /** Device id of the readings; they go to `devices/<device>/telemetry`. */
  device: string;
  httpUrl: string;
  /** Extra request headers (an API key). */
  httpHeaders?: Record<string, string>;
  /** Event time base, epoch ms: readings at base - 60 s + i, app events at base - 30 s + i. */
  baseMs: number;
}

export interface ValidTraffic {
  /** Ids of the readings the agent acknowledged (PUBACK). */
  telemetry: Set<string>;
  /** Ids of the app events the agent acknowledged (HTTP 200). */
  app: Set<string>;
  errors: string[];
  /** Times the device's connection closed (1 after stop(): its own end). */
  disconnects(): number;
  /** Stops sending and waits for what is in flight. */
  stop(): Promise<void>;
}

export async function startValidTraffic(options: ValidTrafficOptions): Promise<ValidTraffic> {
  const telemetry = new Set<string>();
  const app = new Set<string>();
  const errors: string[] = [];
  let disconnects = 0;
  let running = true;
  const client = await mqtt.connectAsync(options.mqttUrl, { reconnectPeriod: 0, ...options.mqttOptions });
  client.on('close', () => disconnects++);

  const mqttLoop = async (): Promise<void> => {
    const inFlight = new Set<Promise<void>>();
    for (let i = 0; running; i++) {
      const id = `${options.idPrefix}-mqtt-${i}`;
      const payload = JSON.stringify({ event_id: id, device_id: options.device, timestamp: options.baseMs - 60_000 + i, metric: 'temperature', value: 21.5 });
      const sent: Promise<void> = client
        .publishAsync(`devices/${options.device}/telemetry`, payload, { qos: 1 })
        .then(
          () => void telemetry.add(id),
          (error: Error) => void errors.push(`mqtt ${id}: ${error.message}`),
        )
        .finally(() => inFlight.delete(sent));
      inFlight.add(sent);
      if (inFlight.size >= 8) await Promise.race(inFlight);
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(inFlight);
    await client.endAsync();
  };

  const httpLoop = async (): Promise<void> => {
    for (let b = 0; running; b++) {
      const ids = Array.from({ length: 5 }, (_, i) => `${options.idPrefix}-http-${b}-${i}`);
      const body = ids
        .map((id, i) => JSON.stringify({ event_id: id, event_type: 'video_play', user_id: 'user-1', session_id: 's-1', timestamp: options.baseMs - 30_000 + b * 5 + i }))
        .join('\n');
      try {
        const response = await fetch(options.httpUrl, { method: 'POST', headers: { 'content-type': 'application/x-ndjson', ...options.httpHeaders }, body });
        const text = await response.text();
        if (response.status === 200) ids.forEach((id) => app.add(id));
        else errors.push(`http batch ${b}: ${response.status} ${text.slice(0, 300)}`);
      } catch (error) {
        errors.push(`http batch ${b}: ${(error as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const loops = [mqttLoop(), httpLoop()];
  return {
    telemetry,
    app,
    errors,
    disconnects: () => disconnects,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}
