/**
 * The deployment of deploy/ on six hosts, on this machine: the three NATS nodes, a hub and two edge agents each run in
 * a network namespace of their own (scripts/lib/netns.ts) with their own address, and reach each other only over the
 * bridge, as separate machines would. QuestDB runs in the test's own namespace, which the hosts reach at the bridge's
 * address. NATS runs with TLS (a certificate for the three node addresses) and nkey users from
 * deploy/security/make-security.ts; the hub and the agents use their own users.
 *
 * Loopback inside a namespace is that namespace's alone: a program that tried 127.0.0.1 for one of the others would
 * find nothing there. So events arriving in QuestDB, and the servers' own lists of their clients and routes naming
 * only the hosts' addresses, show that nothing in the deployment depends on loopback.
 *
 * Needs root and iproute2 (npm test installs iproute2).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeSecurity, readQuestDbCredentials, type SecurityPaths } from '../../deploy/security/make-security.js';
import { createHosts, type NetHost, type NetHosts } from '../../scripts/lib/netns.js';
import { startProcess } from '../../scripts/lib/processes.js';
import { questdbAuthHeaders, startStack, type StackHandle } from '../../scripts/lib/stack.js';
import { startAckedLoad } from '../support/load.js';
import { freePort, LOG_DIR, type ManagedProcess } from '../support/processes.js';
import { assertExactlyOnce, waitFor } from '../support/questdb.js';

const run = Date.now().toString(36);
const AGENTS = [`gw-a-${run}`, `gw-b-${run}`];
const LOAD_MS = 12_000;
/** Ports every host uses on its own address (they are separate hosts, so the standard ones). */
const HUB_HTTP = 8090;
const AGENT = { mqtt: 1883, http: 8080, admin: 9464 };

const root = mkdtempSync(join(tmpdir(), 'multi-host-'));
let hosts: NetHosts;
let nats: NetHost[];
let hubHost: NetHost;
let agentHosts: NetHost[];
let secrets: SecurityPaths;
let stack: StackHandle;
let questdbUrl: string;
let auth: Record<string, string>;
const processes: ManagedProcess[] = [];

before(async () => {
  hosts = createHosts(6);
  nats = hosts.hosts.slice(0, 3);
  hubHost = hosts.hosts[3]!;
  agentHosts = hosts.hosts.slice(4, 6);
  // The server certificate names the three node addresses only: clients verify it against the address they dial.
  secrets = makeSecurity({ out: join(root, 'secrets'), hosts: nats.map((h) => h.ip), edges: AGENTS, schemaBucket: 'schemas', days: 2 });
  const questdbHttp = await freePort();
  stack = await startStack({
    dir: join(root, 'stack'),
    security: secrets.dir,
    ports: {
      natsClient: [4222, 4222, 4222],
      natsCluster: [6222, 6222, 6222],
      natsMonitor: [8222, 8222, 8222],
      questdbHttp,
      questdbPg: await freePort(),
      natsHosts: nats.map((h) => ({ host: h.ip, netns: h.netns })),
    },
  });
  questdbUrl = `http://${hosts.gateway}:${questdbHttp}`;
  auth = questdbAuthHeaders(secrets.dir);
  const natsUrls = nats.map((h) => `nats://${h.ip}:4222`);
  const credentials = readQuestDbCredentials(secrets.dir);
  processes.push(
    await startProcess({
      name: `hub-multi-host`,
      script: 'bin/hub.js',
      logDir: LOG_DIR,
      netns: hubHost.netns,
      healthUrl: `http://${hubHost.ip}:${HUB_HTTP}/healthz`,
      timeoutMs: 60_000,
      env: {
        HUB_NATS__SERVERS: JSON.stringify(natsUrls),
        HUB_NATS__NAME: 'hub-multi-host',
        HUB_NATS__NKEY_SEED_FILE: secrets.hubSeedFile,
        HUB_NATS__TLS__CA_FILE: secrets.caFile,
        HUB_QUESTDB__HTTPURL: questdbUrl,
        HUB_QUESTDB__USERNAME: credentials.hub.user,
        HUB_QUESTDB__PASSWORD: credentials.hub.password,
        HUB_HTTP__HOST: hubHost.ip,
        HUB_HTTP__PORT: String(HUB_HTTP),
        HUB_DASHBOARD__INTERVALMS: '1000',
      },
    }),
  );
  for (const [i, agentId] of AGENTS.entries()) {
    const host = agentHosts[i]!;
    processes.push(
      await startProcess({
        name: `agent-${agentId}`,
        script: 'bin/edge-agent.js',
        logDir: LOG_DIR,
        netns: host.netns,
        healthUrl: `http://${host.ip}:${AGENT.admin}/healthz`,
        env: {
          EDGE_AGENTID: agentId,
          EDGE_DATADIR: join(root, agentId),
          EDGE_NATS__SERVERS: JSON.stringify(natsUrls),
          EDGE_NATS__NKEY_SEED_FILE: secrets.edgeSeedFile(agentId),
          EDGE_NATS__TLS__CA_FILE: secrets.caFile,
          EDGE_NATS__STATUSINTERVALMS: '1000',
          // 0.0.0.0, as on a gateway: the devices are on the gateway's network.
          EDGE_SOURCES__MQTT__HOST: '0.0.0.0',
          EDGE_SOURCES__MQTT__PORT: String(AGENT.mqtt),
          EDGE_SOURCES__HTTP__HOST: '0.0.0.0',
          EDGE_SOURCES__HTTP__PORT: String(AGENT.http),
          EDGE_ADMIN__HOST: '0.0.0.0',
          EDGE_ADMIN__PORT: String(AGENT.admin),
        },
      }),
    );
  }
});

after(async () => {
  for (const p of processes.reverse()) await p.stop().catch(() => undefined);
  await stack?.stop();
  hosts?.remove();
  rmSync(root, { recursive: true, force: true });
});

interface Connz {
  connections: Array<{ ip: string; name?: string; tls_version?: string; authorized_user?: string }>;
}
interface Routez {
  routes: Array<{ ip: string; remote_name?: string }>;
}

test('three NATS hosts, a hub host and two gateways talk over their own addresses with TLS: every acknowledged event once in QuestDB', async () => {
  const loads = AGENTS.map((agentId, i) =>
    startAckedLoad({ runId: agentId, host: agentHosts[i]!.ip, mqttPort: AGENT.mqtt, httpPort: AGENT.http, devices: 5, intervalMs: 20, httpBatch: 50 }),
  );
  await new Promise((r) => setTimeout(r, LOAD_MS));
  await Promise.all(loads.map((l) => l.stop()));
  for (const [i, agentId] of AGENTS.entries()) {
    const admin = `http://${agentHosts[i]!.ip}:${AGENT.admin}/healthz`;
    const rows = await waitFor(async () => ((await (await fetch(admin)).json()) as { outbox: { rows: number } }).outbox.rows, (n) => n === 0, 60_000, 250);
    assert.equal(rows, 0, `${agentId} forwarded everything it held`);
    const acked = loads[i]!.acked;
    assert.ok(acked.size > 500, `${agentId}'s devices and backend were acknowledged (${acked.size})`);
    await assertExactlyOnce(questdbUrl, agentId, acked, auth);
    process.stderr.write(`[multi-host] ${agentId} on ${agentHosts[i]!.ip}: ${acked.size} events acknowledged, each once in QuestDB\n`);
  }

  // What the servers themselves see: clients and routes from the hosts' addresses, all over TLS, with their users.
  const clientIps = new Set<string>();
  for (const node of nats) {
    const connz = (await (await fetch(`http://${node.ip}:8222/connz?auth=true`)).json()) as Connz;
    for (const c of connz.connections) {
      clientIps.add(c.ip);
      assert.ok(c.tls_version, `the connection from ${c.ip} (${c.name ?? 'unnamed'}) uses TLS`);
      assert.ok(c.authorized_user, `the connection from ${c.ip} (${c.name ?? 'unnamed'}) logged in with a user`);
    }
    const routez = (await (await fetch(`http://${node.ip}:8222/routez`)).json()) as Routez;
    const routeIps = new Set(routez.routes.map((r) => r.ip));
    const others = nats.filter((n) => n !== node).map((n) => n.ip);
    assert.deepEqual([...routeIps].sort(), others.sort(), `${node.ip} routes to the other two nodes' addresses`);
  }
  const expectedClients = [hubHost.ip, ...agentHosts.map((h) => h.ip)];
  assert.deepEqual([...clientIps].sort(), expectedClients.sort(), 'the clients are exactly the hub and the two gateways, by their addresses');

  // The agents' status reports crossed the network to the hub too: its dashboard lists both gateways.
  const listed = await waitFor(
    async () => {
      const response = await fetch(`http://${hubHost.ip}:${HUB_HTTP}/dashboard/snapshot`);
      if (response.status !== 200) return [];
      return ((await response.json()) as { edges: Array<{ agent: string }> }).edges.map((e) => e.agent);
    },
    (agents) => AGENTS.every((a) => agents.includes(a)),
    30_000,
    500,
  );
  assert.deepEqual(AGENTS.filter((a) => !listed.includes(a)), [], 'the hub\'s dashboard lists both gateways');
});
