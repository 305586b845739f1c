/**
 * Renders region-node.conf.tmpl for every node of a NATS supercluster (one JetStream cluster per region, joined by
 * gateways), and reads the stream definitions in streams/ (JetStream API JSON, as `nats stream add --config` takes):
 * EVENTS_<REGION> placed in its region, EVENTS_GLOBAL sourcing from each. See deploy/nats/README.md, "Several regions".
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { natsSecurityBlocks, renderTemplate } from '../render-nats-config.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REGION_NODE_TEMPLATE = join(HERE, 'region-node.conf.tmpl');
export const STREAMS_DIR = join(HERE, 'streams');

export interface RegionNode {
  /** server_name, unique across regions (eu-1, us-1, ...). */
  name: string;
  host: string;
  clientPort: number;
  clusterPort: number;
  gatewayPort: number;
  monitorPort: number;
  storeDir: string;
}

/** Region name (cluster and gateway name) to its nodes. */
export type Supercluster = Record<string, RegionNode[]>;

/** The config of node `index` of `region`. `security`: a deploy/security folder (TLS and users), or none. */
export function renderRegionNodeConfig(regions: Supercluster, region: string, index: number, security?: string): string {
  const nodes = regions[region];
  const node = nodes?.[index];
  if (!nodes || !node) throw new RangeError(`no node ${index} in region ${region}`);
  const secure = natsSecurityBlocks(security);
  // A JetStream cluster needs at least one configured route: a one-node region (trials, the test) routes to itself,
  // which nats-server recognises and skips.
  const routes = nodes
    .filter((_, j) => j !== index || nodes.length === 1)
    .map((other) => `"nats-route://${other.host}:${other.clusterPort}"`)
    .join(', ');
  const gateways = Object.entries(regions)
    .map(([name, members]) => `    { name: "${name}", urls: [${members.map((m) => `"nats://${m.host}:${m.gatewayPort}"`).join(', ')}] }`)
    .join('\n');
  const mappings = Object.keys(regions)
    .map((name) => `    { destination: "${name}.events.>", weight: 100%, cluster: "${name}" }`)
    .join('\n');
  return renderTemplate(
    readFileSync(REGION_NODE_TEMPLATE, 'utf8'),
    {
      SERVER_NAME: node.name,
      REGION: region,
      HOST: node.host,
      CLIENT_PORT: node.clientPort,
      CLUSTER_PORT: node.clusterPort,
      GATEWAY_PORT: node.gatewayPort,
      MONITOR_PORT: node.monitorPort,
      STORE_DIR: node.storeDir,
      ROUTES: routes,
      GATEWAYS: gateways,
      REGION_MAPPINGS: mappings,
      CLIENT_SECURITY: secure.client,
      CLUSTER_SECURITY: secure.cluster,
      // The gateways between regions use the same certificate as the routes (serverAuth and clientAuth).
      GATEWAY_SECURITY: secure.cluster,
    },
    REGION_NODE_TEMPLATE,
  );
}

/** A stream definition of streams/ (the JetStream API's StreamConfig, snake_case). */
export interface StreamDefinition {
  name: string;
  subjects?: string[];
  num_replicas: number;
  placement?: { cluster: string };
  sources?: Array<{ name: string }>;
  [field: string]: unknown;
}

/** Every stream definition in streams/, regional ones first (a source must exist before the stream sourcing it). */
export function loadStreamDefinitions(dir = STREAMS_DIR): StreamDefinition[] {
  const streams = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as StreamDefinition);
  return streams.sort((a, b) => Number(a.sources !== undefined) - Number(b.sources !== undefined) || a.name.localeCompare(b.name));
}
