/**
 * Renders deploy/nats/node.conf.tmpl for the nodes of a cluster: one config per node, with its own address, ports,
 * store directory and routes to the others, and the TLS and users of a folder made by deploy/security/make-security.ts.
 *
 * The local stack (scripts/lib/stack.ts) renders its nodes with renderNatsNodeConfig; for three hosts:
 *
 *   npm run nats-config -- --host 10.0.0.11 --host 10.0.0.12 --host 10.0.0.13 \
 *       --security /etc/pipeline/secrets --out ./nats-conf
 *
 * writes nats-conf/nats-1.conf ... nats-3.conf; copy nats-N.conf to host N as /etc/nats/nats.conf
 * (deploy/systemd/nats-server.service), and the security folder's tls/ca.pem, tls/server.pem and tls/server-key.pem
 * to the path the config names (the --security path, as it will be on the hosts).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { securityPaths } from '../security/make-security.js';

export const NATS_TEMPLATE = join(dirname(fileURLToPath(import.meta.url)), 'node.conf.tmpl');

export interface NatsNode {
  /** server_name, e.g. nats-1. */
  name: string;
  /** Address it listens on (client, cluster and monitoring). */
  host: string;
  clientPort: number;
  clusterPort: number;
  monitorPort: number;
  /** JetStream store directory. */
  storeDir: string;
}

/** Replaces ${KEY} placeholders; any placeholder left outside comments is an error. */
export function renderTemplate(template: string, vars: Record<string, string | number>, what: string): string {
  const out = template.replace(/\$\{([A-Z0-9_]+)\}/g, (m, key: string) => (key in vars ? String(vars[key]) : m));
  for (const line of out.split('\n')) {
    const trimmed = line.trimStart();
    if (trimmed.startsWith('#')) continue;
    const left = /\$\{([A-Z0-9_]+)\}/.exec(line);
    if (left) throw new Error(`${what}: no value for placeholder \${${left[1] ?? ''}}`);
  }
  return out;
}

/** The NATS security lines: the files make-security.ts wrote, or a comment saying there are none. */
export function natsSecurityBlocks(security: string | undefined): { client: string; cluster: string } {
  if (security === undefined) {
    const none = '# no TLS and no users: plain local stack (see deploy/security/make-security.ts)';
    return { client: none, cluster: `  ${none}` };
  }
  const s = securityPaths(security);
  const read = (file: string): string => readFileSync(file, 'utf8').trimEnd();
  return {
    client: read(s.natsClientConf),
    cluster: read(s.natsClusterConf)
      .split('\n')
      .map((line) => `  ${line}`)
      .join('\n'),
  };
}

/** The config of `nodes[index]`, routing to every other node of `nodes`. */
export function renderNatsNodeConfig(nodes: NatsNode[], index: number, security?: string): string {
  const node = nodes[index];
  if (!node) throw new RangeError(`no node ${index} (of ${nodes.length})`);
  const secure = natsSecurityBlocks(security);
  const routes = nodes
    .filter((_, j) => j !== index)
    .map((other) => `"nats-route://${other.host}:${other.clusterPort}"`)
    .join(', ');
  return renderTemplate(
    readFileSync(NATS_TEMPLATE, 'utf8'),
    {
      SERVER_NAME: node.name,
      HOST: node.host,
      CLIENT_PORT: node.clientPort,
      CLUSTER_PORT: node.clusterPort,
      MONITOR_PORT: node.monitorPort,
      STORE_DIR: node.storeDir,
      ROUTES: routes,
      CLIENT_SECURITY: secure.client,
      CLUSTER_SECURITY: secure.cluster,
    },
    NATS_TEMPLATE,
  );
}

/** Nodes nats-1..N on the given hosts with the standard ports (4222 client, 6222 cluster, 8222 monitoring). */
export function nodesOnHosts(hosts: string[], storeDir: string): NatsNode[] {
  return hosts.map((host, i) => ({ name: `nats-${i + 1}`, host, clientPort: 4222, clusterPort: 6222, monitorPort: 8222, storeDir }));
}

function main(): void {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', multiple: true, default: [] },
      security: { type: 'string' },
      out: { type: 'string' },
      store: { type: 'string', default: '/var/lib/nats/jetstream' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help || !values.out || values.host.length < 3) {
    process.stdout.write(
      'usage: npm run nats-config -- --host <addr> --host <addr> --host <addr> [--security <dir>] --out <dir> [--store /var/lib/nats/jetstream]\n' +
        '  one --host per node (3 for the hub cluster; the address each node listens on and the others route to)\n',
    );
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  if (!values.security) process.stderr.write('warning: no --security folder: the nodes accept anyone, in plain text (trial only)\n');
  const nodes = nodesOnHosts(values.host, values.store);
  mkdirSync(values.out, { recursive: true });
  for (const [i, node] of nodes.entries()) {
    const file = join(values.out, `${node.name}.conf`);
    writeFileSync(file, renderNatsNodeConfig(nodes, i, values.security && resolve(values.security)));
    process.stdout.write(`${file}: ${node.name} on ${node.host} (client 4222, routes 6222, monitoring 8222), store ${node.storeDir}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
