/**
 * A site's leaf node (deploy/nats/leaf.conf.tmpl) as a real nats-server process, optionally inside a network
 * namespace (a site host of scripts/lib/netns.ts), for the site topology tests.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderLeafConfig, type LeafNode } from '../../deploy/nats/render-nats-config.js';
import { startProcess } from '../../scripts/lib/processes.js';
import { LOG_DIR } from './processes.js';
import { waitFor } from './questdb.js';

export interface RunningLeafNode {
  name: string;
  /** nats://<host>:<client port>, for the site's agents. */
  url: string;
  /** Number of leaf connections this server has to the hub (/leafz): 1 when the uplink is up. */
  uplinks(): Promise<number>;
  stop(): Promise<void>;
}

export async function startLeafNode(natsServer: string, leaf: LeafNode, dir: string, netns?: string): Promise<RunningLeafNode> {
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, `${leaf.name}.conf`);
  writeFileSync(conf, renderLeafConfig(leaf), { mode: 0o600 }); // it may carry the site's nkey seed
  const monitor = `http://${leaf.host}:${leaf.monitorPort}`;
  const server = await startProcess({
    name: leaf.name,
    command: [natsServer, '-c', conf],
    env: {},
    healthUrl: `${monitor}/healthz`,
    logDir: LOG_DIR,
    ...(netns ? { netns } : {}),
  });
  const uplinks = async (): Promise<number> => {
    const leafz = (await (await fetch(`${monitor}/leafz`, { signal: AbortSignal.timeout(2000) })).json()) as { leafnodes?: number };
    return leafz.leafnodes ?? 0;
  };
  const stop = async (): Promise<void> => {
    await server.stop(10_000);
  };
  const connected = await waitFor(() => uplinks().catch(() => 0), (n) => n === 1, 30_000, 200);
  if (connected !== 1) {
    await stop();
    throw new Error(`leaf node ${leaf.name} did not connect to the hub within 30 s; see ${server.logFile}`);
  }
  return { name: leaf.name, url: `nats://${leaf.host}:${leaf.clientPort}`, uplinks, stop };
}
