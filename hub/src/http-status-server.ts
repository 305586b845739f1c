/** `/healthz` (JSON, 200 or 503), `/metrics` (Prometheus text) and extra routes (the dashboard) on a plain node:http server. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { AnalyticsStatus } from './analytics/analytics-service.js';
import type { WorkerStatus } from './hub-worker.js';

export interface HealthReport {
  status: 'ok' | 'unavailable';
  nats: { connected: boolean };
  worker: WorkerStatus;
  /** Partitions this worker holds, live workers, rules, and per partition its stream position and watermark. */
  analytics?: AnalyticsStatus;
}

/** Healthy when the worker consumes, NATS is connected, and the last flush succeeded (or there was nothing to flush yet). */
export function healthOf(natsConnected: boolean, worker: WorkerStatus): HealthReport {
  const flushOk = worker.lastFlush === undefined || worker.lastFlush.ok;
  const running = worker.state === 'running';
  return { status: natsConnected && flushOk && running ? 'ok' : 'unavailable', nats: { connected: natsConnected }, worker };
}

export interface StatusServerOptions {
  host: string;
  port: number;
  registry: Registry;
  health: () => HealthReport;
  /** More GET routes (the dashboard); returns true when it answered. Can be set once the server runs. */
  routes?: (request: IncomingMessage, response: ServerResponse, path: string) => boolean;
}

export async function startStatusServer(options: StatusServerOptions): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      const report = options.health();
      response.writeHead(report.status === 'ok' ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(report));
      return;
    }
    if (path === '/metrics') {
      options.registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': options.registry.contentType }).end(text),
        (error: unknown) => response.writeHead(500, { 'content-type': 'text/plain' }).end(String(error)),
      );
      return;
    }
    if (options.routes?.(request, response, path ?? '/')) return;
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /metrics or /dashboard\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
