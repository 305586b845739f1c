/**
 * The dashboard's HTTP routes on the hub's status server:
 *
 *   GET /dashboard               the page (hub/dashboard-ui/index.html, plain JS, no build step)
 *   GET /dashboard/app.js        its script
 *   GET /dashboard/uplot.*       the charting library (uPlot, from node_modules)
 *   GET /dashboard/snapshot      the latest snapshot as JSON (for scripts and curl)
 *   GET /dashboard/events        Server-Sent Events: one `snapshot` event per interval
 *
 * SSE rather than WebSocket: one direction is all the page needs, browsers reconnect by themselves, and it is plain
 * HTTP through any proxy. Each open stream holds one listener; at most `maxClients` streams are served (503 past it)
 * and a client that does not read is dropped instead of buffered without bound.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PipelineObserver } from './pipeline-observer.js';

/** hub/dashboard-ui, found from this file both in the sources and in dist/. */
function uiDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'hub', 'dashboard-ui');
    try {
      readFileSync(join(candidate, 'index.html'));
      return candidate;
    } catch {
      dir = dirname(dir);
    }
  }
  throw new Error('hub/dashboard-ui not found above ' + fileURLToPath(import.meta.url));
}

interface Asset {
  type: string;
  body: Buffer;
}

function loadAssets(): Map<string, Asset> {
  const ui = uiDir();
  const uplot = dirname(createRequire(import.meta.url).resolve('uplot'));
  return new Map([
    ['/dashboard', { type: 'text/html; charset=utf-8', body: readFileSync(join(ui, 'index.html')) }],
    ['/dashboard/app.js', { type: 'text/javascript; charset=utf-8', body: readFileSync(join(ui, 'app.js')) }],
    ['/dashboard/uplot.js', { type: 'text/javascript; charset=utf-8', body: readFileSync(join(uplot, 'uPlot.iife.min.js')) }],
    ['/dashboard/uplot.css', { type: 'text/css; charset=utf-8', body: readFileSync(join(uplot, 'uPlot.min.css')) }],
  ]);
}

/** Writes past this many bytes unread by a client close its stream. */
const MAX_UNREAD_BYTES = 1 << 20;

export function dashboardRoutes(observer: PipelineObserver, maxClients = 20): (request: IncomingMessage, response: ServerResponse, path: string) => boolean {
  const assets = loadAssets();
  let clients = 0;
  return (request, response, path) => {
    const asset = assets.get(path === '/dashboard/' ? '/dashboard' : path);
    if (asset) {
      response.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-cache' }).end(asset.body);
      return true;
    }
    if (path === '/dashboard/snapshot') {
      const snapshot = observer.snapshot();
      response.writeHead(snapshot ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(snapshot ?? { error: 'no snapshot yet' }));
      return true;
    }
    if (path === '/dashboard/events') {
      if (clients >= maxClients) {
        response.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5' }).end(`at most ${maxClients} dashboard streams\n`);
        return true;
      }
      clients++;
      response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      const send = (snapshot: unknown) => {
        if (response.writableLength > MAX_UNREAD_BYTES) {
          response.destroy();
          return;
        }
        response.write(`event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
      };
      const first = observer.snapshot();
      if (first) send(first);
      const stop = observer.subscribe(send);
      request.on('close', () => {
        stop();
        clients--;
      });
      return true;
    }
    return false;
  };
}
