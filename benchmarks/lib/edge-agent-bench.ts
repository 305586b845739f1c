/** One edge agent process for the benchmarks (edge-ingest.ts, capacity.ts), and HTTP NDJSON load against it. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startProcess, type ManagedProcess } from '../../scripts/lib/processes.js';
import { RUNTIME_DIR } from '../../scripts/lib/runtime.js';
import type { LatencyRecorder } from './measure.js';

export interface BenchAgent {
  process: ManagedProcess;
  ports: { http: number; mqtt: number; admin: number };
  /** Waits (at most 10 s) until the agent has published everything it acknowledged: its outbox is empty. */
  waitOutboxEmpty(): Promise<void>;
  /** Stops the agent and removes its data directory. */
  stop(): Promise<void>;
}

/** Starts an agent with a fresh data directory (outbox) and free ports; `script` is the compiled or the tsx entry. */
export async function startBenchAgent(options: { name: string; agentId: string; script: string; env?: Record<string, string> }): Promise<BenchAgent> {
  const ports = { http: await freePort(), mqtt: await freePort(), admin: await freePort() };
  const dataDir = mkdtempSync(join(tmpdir(), 'bench-agent-'));
  const agent = await startProcess({
    name: options.name,
    script: options.script,
    nodeArgs: process.env.BENCH_AGENT_NODE_ARGS?.split(' ').filter(Boolean) ?? [],
    logDir: join(RUNTIME_DIR, 'bench', 'logs'),
    healthUrl: `http://127.0.0.1:${ports.admin}/healthz`,
    env: {
      LOG_LEVEL: 'warn',
      ...(process.env.BENCH_AGENT_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_AGENT_NODE_OPTIONS } : {}),
      EDGE_AGENTID: options.agentId,
      EDGE_DATADIR: dataDir,
      EDGE_SOURCES__MQTT__PORT: String(ports.mqtt),
      EDGE_SOURCES__HTTP__PORT: String(ports.http),
      EDGE_ADMIN__PORT: String(ports.admin),
      ...options.env,
    },
  });
  return {
    process: agent,
    ports,
    async waitOutboxEmpty() {
      let rows = 0;
      for (let i = 0; i < 200; i++) {
        const health = (await (await fetch(`http://127.0.0.1:${ports.admin}/healthz`)).json()) as { outbox: { rows: number } };
        rows = health.outbox.rows;
        if (rows === 0) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      // What is still in the outbox was charged to the run but not forwarded: its per-event figures would be wrong.
      throw new Error(`the agent's outbox still holds ${rows} events after 10 s; the run's per-event figures would be wrong`);
    },
    async stop() {
      await agent.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

let counter = 0;
/** One NDJSON line of device telemetry from device `bench-<device>` (a distinct event id per line). */
export function telemetryLine(device: number, now: number): string {
  return `{"type":"device.telemetry","event_id":"b-${counter++}","device_id":"bench-${device}","timestamp":${now},"metric":"temperature","value":${(20 + (counter % 100) / 10).toFixed(1)}}`;
}
/** The same reading as a JSON object without the type (MQTT publishes on devices/<id>/telemetry). */
export function telemetryObject(device: number, now: number): string {
  return `{"event_id":"b-${counter++}","device_id":"bench-${device}","timestamp":${now},"metric":"temperature","value":${(20 + (counter % 100) / 10).toFixed(1)}}`;
}

/**
 * Closed-loop HTTP NDJSON load: `concurrency` clients each POST `perRequest` telemetry lines to /v1/events and wait
 * for the answer, until `until`. `deviceOf(client, line)` picks the device of each line. Returns the events accepted.
 */
export async function httpNdjsonLoad(options: {
  port: number;
  until: number;
  concurrency: number;
  perRequest: number;
  deviceOf: (client: number, line: number) => number;
  ack?: LatencyRecorder;
}): Promise<number> {
  const { port, until, concurrency, perRequest, deviceOf, ack } = options;
  let events = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, client) => {
      while (Date.now() < until) {
        const now = Date.now();
        const lines: string[] = [];
        for (let i = 0; i < perRequest; i++) lines.push(telemetryLine(deviceOf(client, i), now));
        const started = performance.now();
        const response = await fetch(`http://127.0.0.1:${port}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') });
        await response.arrayBuffer();
        if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
        ack?.record(performance.now() - started);
        events += perRequest;
      }
    }),
  );
  return events;
}
