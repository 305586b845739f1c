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
  /** Port the site leaf nodes connect to (leaf.conf.tmpl); none: no leaf node listener. */
  leafnodePort?: number;
}

export const LEAF_TEMPLATE = join(dirname(fileURLToPath(import.meta.url)), 'leaf.conf.tmpl');
/** The standard leaf node port (nats-server's default). */
export const LEAFNODE_PORT = 7422;

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

/** The hub node's `leafnodes {}` block, with the TLS of the security folder, or a comment when it has no leaf port. */
export function leafnodesBlock(node: NatsNode, security: string | undefined): string {
  if (node.leafnodePort === undefined) return '# no leaf node listener: the gateways connect to the client port directly';
  const tls = security === undefined ? [] : tlsLines(securityPaths(security));
  return ['leafnodes {', `  listen: "${node.host}:${node.leafnodePort}"`, ...tls.map((l) => `  ${l}`), '}'].join('\n');
}

/**
 * TLS of a listener the hub's leaf nodes or the leaf's remote use: the node certificate (it has serverAuth and
 * clientAuth) and the CA. A leaf is not asked for a certificate: it logs in with its site's nkey.
 */
function tlsLines(s: ReturnType<typeof securityPaths>): string[] {
  return ['tls {', `  cert_file: "${s.serverCertFile}"`, `  key_file: "${s.serverKeyFile}"`, `  ca_file: "${s.caFile}"`, '  timeout: 2', '}'];
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
      LEAFNODES: leafnodesBlock(node, security),
    },
    NATS_TEMPLATE,
  );
}

export interface LeafNode {
  /** server_name, e.g. leaf-berlin. */
  name: string;
  /** Address the site's gateways reach it by. */
  host: string;
  clientPort: number;
  monitorPort: number;
  /** nats-leaf://host:port URLs of every hub node (the leaf keeps one connection, to any of them). */
  hubUrls: string[];
  /**
   * How the leaf logs in on the hub: the site's nkey seed (deploy/security/make-security.ts --site), with the CA the
   * hub's certificate is checked against. None: a plain hub (local stack and tests).
   */
  uplink?: { nkeySeed: string; caFile: string };
  /** The `authorization {}` block of the site's gateways on the leaf's own listener, or none (anyone on the site LAN). */
  localAuthorization?: string;
}

/** The config of a site's leaf node (leaf.conf.tmpl). */
export function renderLeafConfig(leaf: LeafNode): string {
  const remote = [`      urls: [${leaf.hubUrls.map((u) => `"${u}"`).join(', ')}]`];
  if (leaf.uplink) {
    remote.push(`      nkey: "${leaf.uplink.nkeySeed}"`, `      tls { ca_file: "${leaf.uplink.caFile}", timeout: 2 }`);
  }
  return renderTemplate(
    readFileSync(LEAF_TEMPLATE, 'utf8'),
    {
      SERVER_NAME: leaf.name,
      HOST: leaf.host,
      CLIENT_PORT: leaf.clientPort,
      MONITOR_PORT: leaf.monitorPort,
      LOCAL_AUTHORIZATION: leaf.localAuthorization ?? '# no users: any gateway on the site LAN may connect (trial and tests only)',
      HUB_REMOTE: remote.join('\n'),
    },
    LEAF_TEMPLATE,
  );
}

/** Nodes nats-1..N on the given hosts with the standard ports (4222 client, 6222 cluster, 8222 monitoring, 7422 leaf nodes). */
export function nodesOnHosts(hosts: string[], storeDir: string, leafnodes = false): NatsNode[] {
  return hosts.map((host, i) => ({
    name: `nats-${i + 1}`,
    host,
    clientPort: 4222,
    clusterPort: 6222,
    monitorPort: 8222,
    storeDir,
    ...(leafnodes ? { leafnodePort: LEAFNODE_PORT } : {}),
  }));
}

/** The leaf node of `site` on `host` with the standard ports, logging in on the hub with the site's seed of `security`. */
export function siteLeafNode(site: string, host: string, hubHosts: string[], security?: string): LeafNode {
  const base = { name: `leaf-${site}`, host, clientPort: 4222, monitorPort: 8222, hubUrls: hubHosts.map((h) => `nats-leaf://${h}:${LEAFNODE_PORT}`) };
  if (security === undefined) return base;
  const s = securityPaths(security);
  return {
    ...base,
    uplink: { nkeySeed: readFileSync(s.siteSeedFile(site), 'utf8').trim(), caFile: s.caFile },
    localAuthorization: readFileSync(s.siteLeafAuthorizationConf(site), 'utf8').trimEnd(),
  };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', multiple: true, default: [] },
      security: { type: 'string' },
      out: { type: 'string' },
      store: { type: 'string', default: '/var/lib/nats/jetstream' },
      leafnodes: { type: 'boolean', default: false },
      site: { type: 'string' },
      listen: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  const leafMode = values.site !== undefined;
  if (values.help || !values.out || values.host.length < (leafMode ? 1 : 3) || (leafMode && !values.listen)) {
    process.stdout.write(
      'usage: npm run nats-config -- --host <addr> --host <addr> --host <addr> [--leafnodes] [--security <dir>] --out <dir> [--store /var/lib/nats/jetstream]\n' +
        '  one --host per node (3 for the hub cluster; the address each node listens on and the others route to);\n' +
        '  --leafnodes: the nodes also listen on 7422 for site leaf nodes\n' +
        '       npm run nats-config -- --site <site> --listen <site server addr> --host <hub addr>... [--security <dir>] --out <dir>\n' +
        '  the leaf node of a site (deploy/nats/leaf.conf.tmpl), with the site seed of `make-security.ts --site`\n',
    );
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  if (leafMode) {
    const leaf = siteLeafNode(values.site!, values.listen!, values.host, values.security && resolve(values.security));
    mkdirSync(values.out, { recursive: true });
    const file = join(values.out, `${leaf.name}.conf`);
    writeFileSync(file, renderLeafConfig(leaf), { mode: 0o600 }); // carries the site's seed
    process.stdout.write(`${file}: ${leaf.name} on ${leaf.host} (client 4222, monitoring 8222), uplink to ${leaf.hubUrls.join(', ')}\n`);
    return;
  }
  if (!values.security) process.stderr.write('warning: no --security folder: the nodes accept anyone, in plain text (trial only)\n');
  const nodes = nodesOnHosts(values.host, values.store, values.leafnodes);
  mkdirSync(values.out, { recursive: true });
  for (const [i, node] of nodes.entries()) {
    const file = join(values.out, `${node.name}.conf`);
    writeFileSync(file, renderNatsNodeConfig(nodes, i, values.security && resolve(values.security)));
    const leaf = node.leafnodePort === undefined ? '' : `, leaf nodes ${node.leafnodePort}`;
    process.stdout.write(`${file}: ${node.name} on ${node.host} (client 4222, routes 6222, monitoring 8222${leaf}), store ${node.storeDir}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
