/**
 * A site's leaf node (deploy/nats/leaf.conf.tmpl) as a real nats-server process, optionally inside a network
 * namespace (a site host of scripts/lib/netns.ts), for the site topology tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderLeafConfig, type LeafNode } from '../../deploy/nats/render-nats-config.js';
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
  mkdirSync(LOG_DIR, { recursive: true });
  const conf = join(dir, `${leaf.name}.conf`);
  writeFileSync(conf, renderLeafConfig(leaf), { mode: 0o600 }); // it may carry the site's nkey seed
  const argv = [natsServer, '-c', conf];
  // `ip netns exec` execs nats-server in place, so the pid (and the signals) are the server's.
  const [cmd, ...args] = netns ? ['ip', 'netns', 'exec', netns, ...argv] : argv;
  const log = createWriteStream(join(LOG_DIR, `${leaf.name}.log`), { flags: 'a' });
  const child: ChildProcess = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  const monitor = `http://${leaf.host}:${leaf.monitorPort}`;
  const uplinks = async (): Promise<number> => {
    const leafz = (await (await fetch(`${monitor}/leafz`, { signal: AbortSignal.timeout(2000) })).json()) as { leafnodes?: number };
    return leafz.leafnodes ?? 0;
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    log.end();
  };
  const connected = await waitFor(() => uplinks().catch(() => 0), (n) => n === 1, 30_000, 200);
  if (connected !== 1) {
    await stop();
    throw new Error(`leaf node ${leaf.name} did not connect to the hub within 30 s; see ${join(LOG_DIR, `${leaf.name}.log`)}`);
  }
  return { name: leaf.name, url: `nats://${leaf.host}:${leaf.clientPort}`, uplinks, stop };
}
