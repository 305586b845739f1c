/**
 * App backends posting viewing and login events over HTTP as NDJSON batches, in the mission's sample format.
 * `npx tsx simulators/app-events.ts --users 200 --rate 1000 --duration 30`.
 */
import { pathToFileURL } from 'node:url';
import { numericFlags } from './lib/cli.js';
import { pick, seededRandom } from './lib/random.js';

export interface AppEventOptions {
  url: string;
  users: number;
  rate: number;
  durationSeconds: number;
  batch: number;
  seed: number;
  prefix: string;
  apiKey?: string;
}

const EVENT_TYPES = ['video_play', 'video_pause', 'video_complete', 'login', 'purchase'] as const;
const LOCATIONS = ['DE', 'FR', 'US', 'BR', 'JP', 'IN'];
const DEVICE_TYPES = ['tv', 'mobile', 'web', 'tablet'];

export interface AppProgress {
  sent: number;
  accepted: number;
  rejected: number;
  failedRequests: number;
  elapsedSeconds: number;
}

export async function runAppEvents(options: AppEventOptions, onProgress?: (p: AppProgress) => void, signal?: AbortSignal): Promise<AppProgress> {
  const random = seededRandom(options.seed);
  const progress: AppProgress = { sent: 0, accepted: 0, rejected: 0, failedRequests: 0, elapsedSeconds: 0 };
  const started = Date.now();
  const requestsPerSecond = options.rate / options.batch;
  let n = 0;
  let lastReport = started;
  const inFlight = new Set<Promise<void>>();
  while (!signal?.aborted && Date.now() - started < options.durationSeconds * 1000) {
    const due = Math.floor(((Date.now() - started) / 1000) * requestsPerSecond) - Math.floor(progress.sent / options.batch);
    for (let r = 0; r < due && inFlight.size < 32; r++) {
      const lines: string[] = [];
      for (let i = 0; i < options.batch; i++) {
        const user = Math.floor(random() * options.users);
        lines.push(
          JSON.stringify({
            event_id: `${options.prefix}-${n++}`,
            event_type: pick(random, EVENT_TYPES),
            user_id: `${options.prefix}-user-${user}`,
            session_id: `${options.prefix}-s-${user}-${Math.floor((Date.now() - started) / 600_000)}`,
            timestamp: new Date().toISOString(),
            properties: { content_id: `content-${Math.floor(random() * 100)}` },
            context: { device_type: pick(random, DEVICE_TYPES), location: pick(random, LOCATIONS) },
          }),
        );
      }
      progress.sent += lines.length;
      const request = fetch(options.url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson', ...(options.apiKey ? { 'x-api-key': options.apiKey } : {}) },
        body: lines.join('\n'),
      })
        .then(async (response) => {
          if (response.status >= 500 || response.status === 401) {
            progress.failedRequests++;
            return;
          }
          const result = (await response.json()) as { accepted: number; rejected: unknown[] };
          progress.accepted += result.accepted;
          progress.rejected += result.rejected.length;
        })
        .catch(() => {
          progress.failedRequests++;
        })
        .finally(() => inFlight.delete(request));
      inFlight.add(request);
    }
    await new Promise((r) => setTimeout(r, 20));
    if (Date.now() - lastReport >= 1000) {
      lastReport = Date.now();
      progress.elapsedSeconds = (lastReport - started) / 1000;
      onProgress?.(progress);
    }
  }
  await Promise.all(inFlight);
  progress.elapsedSeconds = (Date.now() - started) / 1000;
  return progress;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const flags = numericFlags(
    { url: 'http://127.0.0.1:8080/v1/events', users: 200, rate: 1000, duration: 30, batch: 100, seed: 1, prefix: 'app' },
    'Simulated app backends posting events over HTTP (NDJSON).',
  );
  const result = await runAppEvents(
    { url: flags.url, users: flags.users, rate: flags.rate, durationSeconds: flags.duration, batch: flags.batch, seed: flags.seed, prefix: flags.prefix },
    (p) => process.stdout.write(`\r${p.elapsedSeconds.toFixed(0)}s sent ${p.sent} accepted ${p.accepted} rejected ${p.rejected}   `),
  );
  process.stdout.write(`\ndone: sent ${result.sent}, accepted ${result.accepted}, rejected ${result.rejected}, failed requests ${result.failedRequests}\n`);
}
