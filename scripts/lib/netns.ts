/**
 * Hosts on one machine: each a Linux network namespace with its own address, joined by a bridge in the caller's
 * namespace through a veth pair, so processes in it talk over a real network interface instead of loopback, and a
 * test can cut one host off (its link goes down: packets are dropped, connections hang as in a real partition)
 * and heal it. Needs root and iproute2 (`ip`).
 *
 *   caller's namespace: bridge plbr<pid> 10.213.N.1/24
 *     ├─ veth pl<pid>h0 ── namespace pl-<pid>-0: pl<pid>p0 10.213.N.10/24
 *     ├─ veth pl<pid>h1 ── namespace pl-<pid>-1: pl<pid>p1 10.213.N.11/24
 *     └─ ...
 *
 * Names carry the creating process's pid, so namespaces a killed test left behind are found and removed by the
 * next one (removeStaleHosts).
 */
import { execFileSync } from 'node:child_process';

export interface NetHost {
  /** Network namespace name (for `ip netns exec`). */
  netns: string;
  /** The host's address. */
  ip: string;
}

export interface NetHosts {
  hosts: NetHost[];
  /** Address of the caller's side of the bridge. */
  gateway: string;
  /** Cuts host `i` off from every other host and from the caller (its link goes down). */
  cut(i: number): void;
  /** Brings host `i`'s link back. */
  heal(i: number): void;
  /**
   * Cuts hosts `i` and `j` off from each other only (a blackhole route to the other in both namespaces: packets
   * vanish, connections hang), while both keep reaching every other host and the caller: a site's uplink to the hub
   * down while its own LAN works.
   */
  cutBetween(i: number, j: number): void;
  /** Undoes cutBetween(i, j). */
  healBetween(i: number, j: number): void;
  /** Removes the namespaces and the bridge (processes still inside lose their network). Idempotent. */
  remove(): void;
}

function ip(...args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(' ')} failed${stderr ? `: ${stderr}` : ''} (network namespaces need root and iproute2)`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces and bridges made by processes that no longer run. */
export function removeStaleHosts(): void {
  for (const line of ip('netns', 'list').split('\n')) {
    const m = /^pl-(\d+)-\d+/.exec(line.trim());
    if (m && !alive(Number(m[1]))) ip('netns', 'delete', line.trim().split(' ')[0]!);
  }
  for (const line of ip('-o', 'link', 'show', 'type', 'bridge').split('\n')) {
    const m = /^\d+: (plbr(\d+))[:@]/.exec(line);
    if (m && !alive(Number(m[2]))) ip('link', 'delete', m[1]!);
  }
}

const created = new Set<NetHosts>();
let exitHook = false;

/** Makes `count` hosts (see the file comment). Call remove() when done; process exit removes them too. */
export function createHosts(count: number): NetHosts {
  removeStaleHosts();
  const pid = process.pid;
  const subnet = `10.213.${(pid % 250) + 1}`;
  const bridge = `plbr${pid}`;
  const hostSide = (i: number): string => `pl${pid}h${i}`;
  const hosts: NetHost[] = [];
  let removed = false;
  const handle: NetHosts = {
    hosts,
    gateway: `${subnet}.1`,
    cut: (i) => void ip('link', 'set', hostSide(i), 'down'),
    heal: (i) => void ip('link', 'set', hostSide(i), 'up'),
    cutBetween: (i, j) => {
      ip('-n', hosts[i]!.netns, 'route', 'replace', 'blackhole', `${hosts[j]!.ip}/32`);
      ip('-n', hosts[j]!.netns, 'route', 'replace', 'blackhole', `${hosts[i]!.ip}/32`);
    },
    healBetween: (i, j) => {
      for (const [from, to] of [[i, j], [j, i]] as const) {
        try {
          ip('-n', hosts[from]!.netns, 'route', 'delete', 'blackhole', `${hosts[to]!.ip}/32`);
        } catch {
          // not cut
        }
      }
    },
    remove: () => {
      if (removed) return;
      removed = true;
      created.delete(handle);
      for (const h of hosts) {
        try {
          ip('netns', 'delete', h.netns); // also deletes the veth pair
        } catch {
          // already gone
        }
      }
      try {
        ip('link', 'delete', bridge);
      } catch {
        // already gone
      }
    },
  };
  created.add(handle);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const h of [...created]) h.remove();
    });
  }
  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    ip('addr', 'add', `${subnet}.1/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
    for (let i = 0; i < count; i++) {
      const netns = `pl-${pid}-${i}`;
      const peer = `pl${pid}p${i}`;
      const address = `${subnet}.${10 + i}`;
      ip('netns', 'add', netns);
      hosts.push({ netns, ip: address });
      ip('link', 'add', hostSide(i), 'type', 'veth', 'peer', 'name', peer);
      ip('link', 'set', peer, 'netns', netns);
      ip('link', 'set', hostSide(i), 'master', bridge);
      ip('link', 'set', hostSide(i), 'up');
      ip('-n', netns, 'addr', 'add', `${address}/24`, 'dev', peer);
      ip('-n', netns, 'link', 'set', peer, 'up');
      ip('-n', netns, 'link', 'set', 'lo', 'up');
      ip('-n', netns, 'route', 'add', 'default', 'via', `${subnet}.1`);
    }
  } catch (err) {
    handle.remove();
    throw err;
  }
  return handle;
}
