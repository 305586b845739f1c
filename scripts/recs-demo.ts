/**
 * `npm run recs -- demo`: the recommendations, live. Starts the local stack (left running), a hub with the
 * recommendations on (port 8092, catalogue from a file), an edge agent (HTTP 8081), generates a small shop
 * (simulators/shop.ts: shoppers with planted tastes), and feeds its events through the agent at `--rate` events/s
 * in time order. Every `--every` seconds it prints, for a few sample shoppers, their planted tastes, profile and top
 * recommendations with reasons, as the hub's API serves them, so you see them change as the events arrive.
 *
 *   npm run recs -- demo [--shoppers 200] [--rate 500] [--every 5] [--customers 3] [--down]
 *   curl http://127.0.0.1:8092/v1/customers/<id>/recommendations?limit=10     while it runs
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { generateShop } from '../simulators/shop.js';
import { startProcess, type ManagedProcess } from './lib/processes.js';
import { ensureRuntime, RUNTIME_DIR } from './lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, startStack } from './lib/stack.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    shoppers: { type: 'string', default: '200' },
    rate: { type: 'string', default: '500' },
    every: { type: 'string', default: '5' },
    customers: { type: 'string', default: '3' },
    down: { type: 'boolean', default: false },
  },
});
if (positionals[0] !== 'demo') {
  process.stderr.write('usage: npm run recs -- demo [--shoppers 200] [--rate 500] [--every 5] [--customers 3] [--down]\n');
  process.exit(2);
}
const say = (line: string) => process.stdout.write(`${line}\n`);
const HUB_PORT = 8092;
const AGENT = { http: 8081, mqtt: 1884, admin: 9465 };
const dir = join(RUNTIME_DIR, 'recs-demo');
const logDir = join(dir, 'logs');
mkdirSync(dir, { recursive: true });
const run = Date.now().toString(36);

// A shop whose sessions spread over the last day, with ids of this run (the KV state outlives a demo).
const shop = generateShop({ shoppers: Number(values.shoppers), products: 300, categories: 8, prefix: `demo${run}`, startAt: Date.now() - 86_400_000, days: 1 });
for (const p of shop.catalogue) p.id = `${p.id}-${run}`;
for (const e of shop.events) {
  for (const field of ['product_id', 'content_id'] as const) if (e.properties[field] !== undefined) e.properties[field] = `${String(e.properties[field])}-${run}`;
}
const catalogueFile = join(dir, `catalogue-${run}.json`);
writeFileSync(catalogueFile, JSON.stringify(shop.catalogue.map((p) => ({ id: p.id, name: p.name, category: p.category, price: p.price }))));

say('== the stack: 3 nats-server nodes (JetStream, R3) and QuestDB ==');
const stack = await startStack({ dir: DEFAULT_STACK_DIR, ports: DEFAULT_PORTS, detached: true, runtime: await ensureRuntime((l) => say(`   ${l}`)), log: (l) => say(`   ${l}`) });
const children: ManagedProcess[] = [];
async function shutdown(code: number): Promise<never> {
  for (const child of children.reverse()) await child.stop();
  if (values.down) await stack.stop();
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

try {
  say(`== a hub with the recommendations (API on ${HUB_PORT}) and an edge agent (HTTP ${AGENT.http}) ==`);
  children.push(
    await startProcess({
      name: 'hub-recs',
      script: 'bin/hub.js',
      logDir,
      healthUrl: `http://127.0.0.1:${HUB_PORT}/healthz`,
      timeoutMs: 60_000,
      env: {
        HUB_HTTP__PORT: String(HUB_PORT),
        HUB_NATS__NAME: 'hub-recs-demo',
        HUB_CONSUMER__ENABLED: 'false',
        HUB_ANALYTICS__ENABLED: 'false',
        HUB_DASHBOARD__ENABLED: 'false',
        HUB_RECOMMENDATIONS__ENABLED: 'true',
        HUB_RECOMMENDATIONS__CATALOGUE_FILE: catalogueFile,
      },
    }),
  );
  children.push(
    await startProcess({
      name: 'edge-agent-recs',
      script: 'bin/edge-agent.js',
      logDir,
      healthUrl: `http://127.0.0.1:${AGENT.admin}/healthz`,
      env: {
        EDGE_AGENTID: 'recs-demo-gateway',
        EDGE_DATADIR: join(dir, 'agent'),
        EDGE_SOURCES__HTTP__PORT: String(AGENT.http),
        EDGE_SOURCES__MQTT__PORT: String(AGENT.mqtt),
        EDGE_ADMIN__PORT: String(AGENT.admin),
      },
    }),
  );
} catch (error) {
  say(`the demo failed to start: ${(error as Error).message} (logs in ${logDir})`);
  await shutdown(1);
}

const samples = shop.shoppers.slice(0, Number(values.customers));
const productName = new Map(shop.catalogue.map((p) => [p.id, `${p.name} (${p.category})`]));
const get = async (path: string): Promise<{ status: number; body: any }> => {
  const response = await fetch(`http://127.0.0.1:${HUB_PORT}${path}`);
  return { status: response.status, body: await response.json() };
};

async function show(sent: number): Promise<void> {
  say(`\n== ${sent} of ${shop.events.length} shop events sent ==`);
  for (const shopper of samples) {
    const tastes = shopper.categories.map((c) => `${c.category} ${Math.round(c.share * 100)}%`).join(', ');
    const profile = await get(`/v1/customers/${shopper.userId}/profile`);
    if (profile.status !== 200) {
      say(`${shopper.userId} (planted tastes: ${tastes}): no events yet`);
      continue;
    }
    const p = profile.body;
    const counts = Object.entries(p.interactionCounts as Record<string, number>).map(([k, n]) => `${k} ${n}`).join(', ');
    const categories = (p.preferredCategories as Array<{ category: string; share: number }>).slice(0, 3).map((c) => `${c.category} ${(c.share * 100).toFixed(0)}%`).join(', ');
    say(`${shopper.userId} (planted tastes: ${tastes})`);
    say(`   profile: ${counts}; prefers ${categories || '-'}; lifetime value ${Number(p.lifetimeValue).toFixed(2)}; risk ${Number(p.riskScore).toFixed(2)}; segment ${p.segment}`);
    const recs = await get(`/v1/customers/${shopper.userId}/recommendations?limit=5`);
    for (const [i, r] of ((recs.body as Array<{ productId: string; score: number; reason: { kind?: string; text?: string } | string }>) ?? []).entries()) {
      const reason = typeof r.reason === 'string' ? r.reason : (r.reason.text ?? r.reason.kind ?? JSON.stringify(r.reason));
      say(`   ${i + 1}. ${productName.get(r.productId) ?? r.productId}  score ${r.score.toFixed(3)}  ${reason}`);
    }
  }
}

say(`== feeding ${shop.events.length} events of ${shop.shoppers.length} shoppers at ${values.rate}/s (Ctrl-C to stop) ==`);
const rate = Number(values.rate);
const every = Number(values.every) * 1000;
let sent = 0;
let lastShown = Date.now();
const started = Date.now();
while (sent < shop.events.length) {
  // Send what is due by now at the configured rate, in batches (one POST per 100 ms).
  const due = Math.min(shop.events.length, Math.floor(((Date.now() - started) / 1000) * rate) + 1);
  if (due > sent) {
    const body = shop.events.slice(sent, due).map((e) => JSON.stringify(e)).join('\n');
    const response = await fetch(`http://127.0.0.1:${AGENT.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    if (response.status !== 200) say(`   the agent answered ${response.status}: ${await response.text()}`);
    sent = due;
  }
  if (Date.now() - lastShown >= every) {
    lastShown = Date.now();
    await show(sent);
  }
  await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 1500));
await show(sent);
say(`\nall events sent. The API stays up until Ctrl-C: curl http://127.0.0.1:${HUB_PORT}/v1/customers/${samples[0]?.userId}/recommendations?limit=10`);
await new Promise(() => undefined);
