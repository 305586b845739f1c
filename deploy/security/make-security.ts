/**
 * Makes (or completes) the secrets of a deployment in one folder:
 *   tls/ca.pem, tls/ca-key.pem             a private certificate authority (ECDSA P-256, 10 years)
 *   tls/server.pem, tls/server-key.pem     the NATS nodes' certificate, for the --host names and addresses given
 *                                          (serverAuth + clientAuth: the same certificate secures the routes)
 *   nats/hub.nk                            nkey seed of the hub workers (may do anything)
 *   nats/edges/<agentId>.nk                nkey seed of one edge agent (may publish only its own subjects)
 *   nats/sites/<site>.nk                   nkey seed of a site's leaf node on the hub (may publish only its agents' subjects)
 *   nats/sites/<site>.agents               the agent ids of that site, one a line (--site <site>=<agentId>,...)
 *   nats/sites/<site>-leaf.conf            `authorization {}` of the site leaf node's own listener: its agents' users
 *   nats/client-security.conf              TLS + authorization block for the nats-server client listener
 *   nats/cluster-security.conf             TLS block for the routes between the nodes
 *   questdb/credentials.json               QuestDB users: `hub` (HTTP + PostgreSQL, read-write), `analyst` (PostgreSQL, read-only)
 *   questdb/security.conf                  the matching lines for QuestDB's server.conf
 *
 * --mount-dir /etc/nats-security writes the nats/*.conf files for a nats-server that finds this folder's tls/ files
 * under that directory (a Kubernetes Secret mounted there, deploy/k8s/secure); by default they name the folder itself.
 *
 * Run again with more --edge ids to add agents: what exists is kept (the CA, the keys, every seed), so nothing
 * already deployed has to change; the two nats/*.conf files and questdb/security.conf are rewritten from it.
 *
 *   npx tsx deploy/security/make-security.ts --out /etc/pipeline/secrets --host nats-1.example.net --host 10.0.0.11 \
 *       --edge gateway-berlin-01 --edge gateway-berlin-02
 *
 * The seeds and keys are written with mode 0600. Certificates come from `openssl` (it must be on PATH); nkeys from
 * @nats-io/nkeys, the NATS project's own implementation.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, posix, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { createUser, fromSeed } from '@nats-io/nkeys';

/** Same rule as the agent's `agentId` (a single NATS subject token). */
const AGENT_ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface SecurityOptions {
  out: string;
  /** Host names and IP addresses the NATS nodes are reached by (certificate subject alternative names). */
  hosts: string[];
  /** Edge agent ids to make credentials for (added to those already in `out`). */
  edges: string[];
  /**
   * Sites whose gateways connect through a leaf node (deploy/nats/leaf.conf.tmpl): site name to its agent ids (added
   * to those already in `out`; the agents get edge seeds too). Default: none.
   */
  sites?: Record<string, string[]>;
  /** KV bucket the agents watch for schemas (their only read access). */
  schemaBucket: string;
  /** Days the server certificate is valid. */
  days: number;
  /**
   * Absolute folder the nats-server will find this folder's files in (e.g. `/etc/nats-security`, where a Kubernetes
   * Secret is mounted with the same tls/ and nats/ layout): the nats/*.conf files name the certificates under it.
   * Default: the output folder itself.
   */
  mountDir?: string;
}

export interface SecurityPaths {
  dir: string;
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  hubSeedFile: string;
  edgeSeedFile(agentId: string): string;
  siteSeedFile(site: string): string;
  siteAgentsFile(site: string): string;
  siteLeafAuthorizationConf(site: string): string;
  natsClientConf: string;
  natsClusterConf: string;
  questdbCredentials: string;
  questdbConf: string;
}

export interface QuestDbCredentials {
  hub: { user: string; password: string };
  analyst: { user: string; password: string };
}

export function securityPaths(dir: string): SecurityPaths {
  const root = resolve(dir);
  return pathsUnder(root, join);
}

/** The paths of a folder as nats-server sees it at `mountDir` (an absolute POSIX path, as in a container). */
export function mountedSecurityPaths(mountDir: string): SecurityPaths {
  if (!posix.isAbsolute(mountDir)) throw new Error(`--mount-dir ${JSON.stringify(mountDir)}: give an absolute path (nats-server reads the certificates by it)`);
  return pathsUnder(posix.normalize(mountDir).replace(/(.)\/$/, '$1'), posix.join);
}

function pathsUnder(root: string, join: (...parts: string[]) => string): SecurityPaths {
  return {
    dir: root,
    caFile: join(root, 'tls', 'ca.pem'),
    serverCertFile: join(root, 'tls', 'server.pem'),
    serverKeyFile: join(root, 'tls', 'server-key.pem'),
    hubSeedFile: join(root, 'nats', 'hub.nk'),
    edgeSeedFile: (agentId) => join(root, 'nats', 'edges', `${agentId}.nk`),
    siteSeedFile: (site) => join(root, 'nats', 'sites', `${site}.nk`),
    siteAgentsFile: (site) => join(root, 'nats', 'sites', `${site}.agents`),
    siteLeafAuthorizationConf: (site) => join(root, 'nats', 'sites', `${site}-leaf.conf`),
    natsClientConf: join(root, 'nats', 'client-security.conf'),
    natsClusterConf: join(root, 'nats', 'cluster-security.conf'),
    questdbCredentials: join(root, 'questdb', 'credentials.json'),
    questdbConf: join(root, 'questdb', 'security.conf'),
  };
}

/** Inbox prefix of an edge agent: replies to its requests (PubAcks, KV watch) arrive under it, and nowhere else. */
export function edgeInboxPrefix(agentId: string): string {
  return `_INBOX_${agentId}`;
}

/**
 * What an edge agent may do on the hub's NATS: publish its event batches (events.<id>.<partition>) and dead letters
 * (dlq.<id>), read the schema registry bucket, and receive the replies to its own requests. Nothing else: not the
 * other edges' subjects, not the events or DLQ streams' contents, and no JetStream API call that changes anything
 * but its own short-lived schema watcher.
 */
export function edgePermissions(agentId: string, schemaBucket: string): { publish: string[]; subscribe: string[] } {
  const kv = `KV_${schemaBucket}`;
  return {
    publish: [
      `events.${agentId}.*`,
      `dlq.${agentId}`,
      `status.${agentId}`,
      '$JS.API.INFO',
      `$JS.API.STREAM.INFO.${kv}`,
      `$JS.API.CONSUMER.CREATE.${kv}.>`,
      `$JS.API.CONSUMER.INFO.${kv}.>`,
      `$JS.API.CONSUMER.DELETE.${kv}.>`,
      `$JS.API.CONSUMER.MSG.NEXT.${kv}.>`,
      `$JS.API.DIRECT.GET.${kv}.>`,
      `$JS.FC.${kv}.>`,
    ],
    subscribe: [`${edgeInboxPrefix(agentId)}.>`],
  };
}

/**
 * What a site's leaf node may do on the hub, as the user it logs in with: exactly what its agents may do together
 * (the union of their edgePermissions). The hub applies them to the leaf connection, so a leaf (or whoever holds its
 * seed) can neither publish another site's subjects nor receive anything but the replies to its own agents; the leaf
 * applies each agent's own permissions on its listener, so one gateway cannot publish as another of the same site.
 */
export function sitePermissions(agentIds: string[], schemaBucket: string): { publish: string[]; subscribe: string[] } {
  const union = (pick: (p: { publish: string[]; subscribe: string[] }) => string[]): string[] => [
    ...new Set(agentIds.flatMap((id) => pick(edgePermissions(id, schemaBucket)))),
  ];
  return { publish: union((p) => p.publish), subscribe: union((p) => p.subscribe) };
}

function run(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`${cmd} ${args.join(' ')} failed${stderr ? `: ${stderr}` : ''}`);
  }
}

function writeSecret(path: string, content: string): void {
  writeFileSync(path, content, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function makeCertificates(p: SecurityPaths, hosts: string[], days: number): void {
  const tls = join(p.dir, 'tls');
  mkdirSync(tls, { recursive: true });
  const caKey = join(tls, 'ca-key.pem');
  if (!existsSync(p.caFile)) {
    run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', caKey]);
    chmodSync(caKey, 0o600);
    run('openssl', ['req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '3650', '-subj', '/CN=event-pipeline CA', '-out', p.caFile]);
  }
  // The server certificate is remade when the host list changes (the CA stays, so clients need nothing new).
  const hostsFile = join(tls, 'server-hosts.txt');
  const wanted = [...new Set(hosts)].sort().join('\n');
  if (existsSync(p.serverCertFile) && existsSync(hostsFile) && readFileSync(hostsFile, 'utf8') === wanted) return;
  const san = [...new Set(hosts)].map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  const ext = join(tls, 'server.ext');
  writeFileSync(
    ext,
    ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth,clientAuth', `subjectAltName=${san}`, ''].join('\n'),
  );
  const csr = join(tls, 'server.csr');
  run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p.serverKeyFile]);
  chmodSync(p.serverKeyFile, 0o600);
  run('openssl', ['req', '-new', '-key', p.serverKeyFile, '-subj', '/CN=nats', '-out', csr]);
  run('openssl', [
    'x509', '-req', '-in', csr, '-CA', p.caFile, '-CAkey', caKey, '-CAcreateserial', '-sha256',
    '-days', String(days), '-extfile', ext, '-out', p.serverCertFile,
  ]);
  writeFileSync(hostsFile, wanted);
  rmSync(csr, { force: true });
  rmSync(ext, { force: true });
}

/** The seed in `file`, made first if missing. Returns the public key (U...). */
function userKey(file: string): string {
  if (!existsSync(file)) {
    const user = createUser();
    writeSecret(file, `${new TextDecoder().decode(user.getSeed())}\n`);
  }
  return fromSeed(new TextEncoder().encode(readFileSync(file, 'utf8').trim())).getPublicKey();
}

const quote = (s: string): string => JSON.stringify(s);
const list = (items: string[]): string => `[${items.map(quote).join(', ')}]`;

function userEntry(comment: string, key: string, perms: { publish: string[]; subscribe: string[] }): string {
  return (
    `    # ${comment}\n` +
    `    { nkey: ${quote(key)}, permissions: {\n` +
    `        publish: { allow: ${list(perms.publish)} }\n` +
    `        subscribe: { allow: ${list(perms.subscribe)} }\n` +
    `    } }`
  );
}

/** The leaf node's own `authorization {}`: one user per agent of the site, each with its edge permissions. */
function siteLeafAuthorization(edges: Array<{ id: string; key: string }>, schemaBucket: string): string {
  return [
    '# Made by deploy/security/make-security.ts: the users of a site leaf node\'s listener (its gateways).',
    'authorization {',
    '  users: [',
    edges.map(({ id, key }) => userEntry(`edge agent ${id}`, key, edgePermissions(id, schemaBucket))).join('\n'),
    '  ]',
    '}',
    '',
  ].join('\n');
}

function natsClientConf(
  p: SecurityPaths,
  hubKey: string,
  edges: Array<{ id: string; key: string }>,
  schemaBucket: string,
  sites: Array<{ site: string; key: string; agents: string[] }> = [],
): string {
  const users = [
    `    # hub workers: the streams, consumers, KV buckets and alerts are theirs\n    { nkey: ${quote(hubKey)} }`,
    ...edges.map(({ id, key }) => userEntry(`edge agent ${id}`, key, edgePermissions(id, schemaBucket))),
    ...sites.map(({ site, key, agents }) => userEntry(`site leaf node ${site} (agents ${agents.join(', ')})`, key, sitePermissions(agents, schemaBucket))),
  ];
  return [
    '# Made by deploy/security/make-security.ts: TLS and users of the nats-server client listener (and of the leaf',
    '# node listener, which has no users of its own: a site leaf node logs in as its site user).',
    ...tlsBlock(p),
    'authorization {',
    '  users: [',
    users.join('\n'),
    '  ]',
    '}',
    '',
  ].join('\n');
}

function natsClusterConf(p: SecurityPaths): string {
  return [
    '# Made by deploy/security/make-security.ts: TLS of the routes (nats-server verifies the peer node\'s certificate).',
    ...tlsBlock(p),
    '',
  ].join('\n');
}

/** The same certificate for clients and routes (it has serverAuth and clientAuth). */
function tlsBlock(p: SecurityPaths): string[] {
  return ['tls {', `  cert_file: ${quote(p.serverCertFile)}`, `  key_file: ${quote(p.serverKeyFile)}`, `  ca_file: ${quote(p.caFile)}`, '  timeout: 2', '}'];
}

function questdbCredentials(p: SecurityPaths): QuestDbCredentials {
  if (existsSync(p.questdbCredentials)) return JSON.parse(readFileSync(p.questdbCredentials, 'utf8')) as QuestDbCredentials;
  const password = (): string => randomBytes(18).toString('base64url');
  const credentials: QuestDbCredentials = { hub: { user: 'hub', password: password() }, analyst: { user: 'analyst', password: password() } };
  writeSecret(p.questdbCredentials, `${JSON.stringify(credentials, null, 2)}\n`);
  return credentials;
}

function questdbConf(c: QuestDbCredentials): string {
  return [
    '# Made by deploy/security/make-security.ts. The hub writes (ILP over HTTP, REST DDL) and may query over',
    '# PostgreSQL as `hub`; analysts get `analyst` on PostgreSQL, which QuestDB allows to read only.',
    `http.user=${c.hub.user}`,
    `http.password=${c.hub.password}`,
    `pg.user=${c.hub.user}`,
    `pg.password=${c.hub.password}`,
    'pg.readonly.user.enabled=true',
    `pg.readonly.user=${c.analyst.user}`,
    `pg.readonly.password=${c.analyst.password}`,
    '',
  ].join('\n');
}

/** Makes or completes the folder; returns its paths. */
export function makeSecurity(options: SecurityOptions): SecurityPaths {
  for (const id of options.edges) {
    if (!AGENT_ID.test(id)) throw new Error(`--edge ${JSON.stringify(id)}: an agent id is 1-64 of A-Z a-z 0-9 _ - (it is a NATS subject token)`);
    if (id === 'hub') throw new Error('--edge hub: "hub" is reserved (dlq.hub.> holds the hub\'s own dead letters)');
  }
  if (options.hosts.length === 0) throw new Error('give at least one --host');
  const p = securityPaths(options.out);
  // The paths the nats/*.conf files name: where nats-server finds the files (the folder itself unless mounted elsewhere).
  const served = options.mountDir === undefined ? p : mountedSecurityPaths(options.mountDir);
  for (const sub of ['nats/edges', 'questdb']) mkdirSync(join(p.dir, sub), { recursive: true, mode: 0o700 });
  makeCertificates(p, options.hosts, options.days);
  const hubKey = userKey(p.hubSeedFile);
  const siteAgents = Object.values(options.sites ?? {}).flat();
  for (const id of siteAgents) {
    if (!AGENT_ID.test(id) || id === 'hub') throw new Error(`--site: ${JSON.stringify(id)} is not a valid agent id`);
  }
  for (const id of [...options.edges, ...siteAgents]) userKey(p.edgeSeedFile(id));
  const edges = readdirSync(join(p.dir, 'nats', 'edges'))
    .filter((f) => f.endsWith('.nk'))
    .map((f) => f.slice(0, -3))
    .sort()
    .map((id) => ({ id, key: userKey(p.edgeSeedFile(id)) }));
  const sites = makeSites(p, options.sites ?? {}, edges, options.schemaBucket);
  writeFileSync(p.natsClientConf, natsClientConf(served, hubKey, edges, options.schemaBucket, sites));
  writeFileSync(p.natsClusterConf, natsClusterConf(served));
  writeFileSync(p.questdbConf, questdbConf(questdbCredentials(p)));
  chmodSync(p.questdbConf, 0o600);
  return p;
}

/** Seeds, agent lists and leaf authorization of the sites: the ones given, added to those already in the folder. */
function makeSites(
  p: SecurityPaths,
  given: Record<string, string[]>,
  edges: Array<{ id: string; key: string }>,
  schemaBucket: string,
): Array<{ site: string; key: string; agents: string[] }> {
  const dir = join(p.dir, 'nats', 'sites');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [site, agents] of Object.entries(given)) {
    if (!AGENT_ID.test(site)) throw new Error(`--site ${JSON.stringify(site)}: a site name is 1-64 of A-Z a-z 0-9 _ -`);
    const known = existsSync(p.siteAgentsFile(site)) ? readFileSync(p.siteAgentsFile(site), 'utf8').split('\n').filter(Boolean) : [];
    writeFileSync(p.siteAgentsFile(site), `${[...new Set([...known, ...agents])].sort().join('\n')}\n`);
  }
  return readdirSync(dir)
    .filter((f) => f.endsWith('.agents'))
    .map((f) => f.slice(0, -'.agents'.length))
    .sort()
    .map((site) => {
      const agents = readFileSync(p.siteAgentsFile(site), 'utf8').split('\n').filter(Boolean);
      writeSecret(p.siteLeafAuthorizationConf(site), siteLeafAuthorization(edges.filter((e) => agents.includes(e.id)), schemaBucket));
      return { site, key: userKey(p.siteSeedFile(site)), agents };
    });
}

export function readQuestDbCredentials(dir: string): QuestDbCredentials {
  return JSON.parse(readFileSync(securityPaths(dir).questdbCredentials, 'utf8')) as QuestDbCredentials;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      host: { type: 'string', multiple: true, default: [] },
      edge: { type: 'string', multiple: true, default: [] },
      site: { type: 'string', multiple: true, default: [] },
      'schema-bucket': { type: 'string', default: 'schemas' },
      days: { type: 'string', default: '825' },
      'mount-dir': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help || !values.out) {
    process.stdout.write(
      'usage: npx tsx deploy/security/make-security.ts --out <dir> [--host <name|ip>]... [--edge <agentId>]... [--site <site>=<agentId>,<agentId>...]...\n' +
        '       [--schema-bucket schemas] [--days 825]\n' +
        '       [--mount-dir <absolute dir where nats-server finds this folder, e.g. /etc/nats-security; default: --out>]\n',
    );
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const hosts = values.host.length > 0 ? values.host : ['127.0.0.1', 'localhost'];
  const sites: Record<string, string[]> = {};
  for (const spec of values.site) {
    const [site, agents] = spec.split('=');
    if (!site || !agents) throw new Error(`--site ${JSON.stringify(spec)}: expected <site>=<agentId>,<agentId>...`);
    sites[site] = [...(sites[site] ?? []), ...agents.split(',').filter(Boolean)];
  }
  const p = makeSecurity({
    out: values.out, hosts, edges: values.edge, sites, schemaBucket: values['schema-bucket'], days: Number(values.days),
    ...(values['mount-dir'] !== undefined ? { mountDir: values['mount-dir'] } : {}),
  });
  process.stdout.write(
    `secrets in ${p.dir}:\n` +
      `  CA certificate (give to agents and hub): ${p.caFile}\n` +
      `  hub seed: ${p.hubSeedFile}\n` +
      `  edge seeds: ${join(p.dir, 'nats', 'edges')}/<agentId>.nk\n` +
      (values.site.length > 0 ? `  site leaf nodes: ${join(p.dir, 'nats', 'sites')}/<site>.nk (uplink seed), <site>-leaf.conf (the leaf's users)\n` : '') +
      `  nats-server: paste (or include, by a path relative to the config file) ${p.natsClientConf} at the top level and ${p.natsClusterConf} inside cluster {}\n` +
      (values['mount-dir'] !== undefined ? `    (they name the certificates under ${values['mount-dir']}, where nats-server is to find tls/)\n` : '') +
      `  QuestDB: append ${p.questdbConf} to server.conf; credentials in ${p.questdbCredentials}\n`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
