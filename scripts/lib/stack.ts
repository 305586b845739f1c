/**
 * The local stack: a 3-node NATS JetStream cluster and one QuestDB, as plain processes on 127.0.0.1.
 *
 * Used by `npm run stack` (scripts/stack.ts), `npm test` (scripts/test.ts), the demo, and fault tests.
 *
 * Layout of a stack directory `<dir>`:
 *   <dir>/stack.json                 ports and binaries the stack was started with (read by attachStack)
 *   <dir>/conf/nats-N.conf           rendered from deploy/nats/node.conf.tmpl
 *   <dir>/data/nats-N/               JetStream store of node N (kept across restarts)
 *   <dir>/data/questdb/              QuestDB root; conf/server.conf rendered from deploy/questdb/server.conf.tmpl
 *   <dir>/logs/<name>.log            stdout+stderr of each process (appended, one header line per start)
 *   <dir>/<name>.pid                 pid of each process; names: nats-1, nats-2, nats-3, questdb
 *
 * Processes are only ever signalled through their pid file, and only after checking /proc/<pid>/cmdline shows
 * that pid is the server this directory started, so other people's NATS/QuestDB on the machine are never touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { renderNatsNodeConfig, renderTemplate, type NatsNode } from '../../deploy/nats/render-nats-config.js';
import { readQuestDbCredentials, securityPaths } from '../../deploy/security/make-security.js';
import { ensureRuntime, REPO_ROOT, type Runtime } from './runtime.js';

export type Triple = [number, number, number];

export interface StackPorts {
  /** NATS client ports of nats-1..3. */
  natsClient: Triple;
  /** NATS cluster (route) ports of nats-1..3. */
  natsCluster: Triple;
  /** NATS HTTP monitoring ports of nats-1..3. */
  natsMonitor: Triple;
  /** QuestDB REST / web console / ILP-over-HTTP port. */
  questdbHttp: number;
  /** QuestDB PostgreSQL wire port. */
  questdbPg: number;
  /**
   * Address each NATS node binds, and the network namespace it runs in (multi-host and partition tests, see
   * scripts/lib/netns.ts). Default: 127.0.0.1 in the caller's namespace.
   */
  natsHosts?: Array<{ host: string; netns?: string }>;
  /** Leaf node ports of nats-1..3 (site leaf nodes, deploy/nats/leaf.conf.tmpl). Default: no leaf node listener. */
  natsLeafnode?: Triple;
}

export const DEFAULT_PORTS: StackPorts = {
  natsClient: [4222, 4223, 4224],
  natsCluster: [6222, 6223, 6224],
  natsMonitor: [8222, 8223, 8224],
  questdbHttp: 9000,
  questdbPg: 8812,
};

export const TEST_PORTS: StackPorts = {
  natsClient: [14222, 14223, 14224],
  natsCluster: [16222, 16223, 16224],
  natsMonitor: [18222, 18223, 18224],
  questdbHttp: 19000,
  questdbPg: 18812,
};

/** Every port of `ports` moved by `offset` (several stacks on one machine). */
export function shiftPorts(ports: StackPorts, offset: number): StackPorts {
  const shift = (t: Triple): Triple => [t[0] + offset, t[1] + offset, t[2] + offset];
  return {
    ...ports,
    natsClient: shift(ports.natsClient),
    natsCluster: shift(ports.natsCluster),
    natsMonitor: shift(ports.natsMonitor),
    questdbHttp: ports.questdbHttp + offset,
    questdbPg: ports.questdbPg + offset,
  };
}

/** Default stack directories (relative to the repo root) used by `npm run stack` and `npm test`. */
export const DEFAULT_STACK_DIR = join(REPO_ROOT, '.runtime', 'stack');
export const TEST_STACK_DIR = join(REPO_ROOT, '.runtime', 'test-stack');

export const NATS_NAMES = ['nats-1', 'nats-2', 'nats-3'] as const;
export type ProcName = (typeof NATS_NAMES)[number] | 'questdb';
export const PROC_NAMES: readonly ProcName[] = [...NATS_NAMES, 'questdb'];

const HOST = '127.0.0.1';
const QUESTDB_BIND_HOST = '0.0.0.0'; // deploy/questdb/server.conf.tmpl binds 0.0.0.0
const QUESTDB_TEMPLATE = join(REPO_ROOT, 'deploy', 'questdb', 'server.conf.tmpl');
const DEFAULT_HEALTH_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 15_000;

export interface StackOptions {
  /** Stack directory (created if missing; existing data is reused). */
  dir: string;
  ports: StackPorts;
  /** true: processes are detached and outlive this process (`stack up`). false: stop() or process exit ends them. */
  detached?: boolean;
  /** Progress lines; default: stderr with a "[stack]" prefix. */
  log?: (s: string) => void;
  /** Binaries to use; default: ensureRuntime(). */
  runtime?: Runtime;
  /** How long to wait for every process to become healthy; default 90 s. */
  healthTimeoutMs?: number;
  /**
   * A folder made by deploy/security/make-security.ts: NATS then requires TLS (clients and routes) and nkey users
   * (hub, one per edge, each edge allowed only its own subjects), and QuestDB requires the hub's password on HTTP
   * and PostgreSQL and has a read-only `analyst`. Default: none (plain local stack).
   */
  security?: string;
}

export interface StackHandle {
  dir: string;
  ports: StackPorts;
  /** nats://127.0.0.1:<client port> of nats-1..3. */
  natsUrls: string[];
  /** http://127.0.0.1:<monitor port> of nats-1..3. */
  natsMonitorUrls: string[];
  /** e.g. http://127.0.0.1:9000 */
  questdbHttpUrl: string;
  questdbPgPort: number;
  /** The security folder the stack runs with (see StackOptions.security), or null. */
  security: string | null;
  /** Stops every process of the stack (pid files; SIGTERM, then SIGKILL after 15 s). Idempotent. */
  stop(): Promise<void>;
  /**
   * Sends `signal` (default SIGKILL) to NATS node `i` (0-based: 0 = nats-1, matching natsUrls[i]).
   * For SIGKILL/SIGTERM/SIGINT/SIGQUIT it resolves once the process has exited; for other signals
   * (SIGSTOP, SIGCONT, SIGUSR2 = lame duck, ...) right after sending. Throws if the node is not running.
   */
  killNats(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** (Re)starts NATS node `i` (0-based) with the same config and data; resolves when it is healthy again. */
  startNats(i: number): Promise<void>;
  /** Stops QuestDB (SIGTERM, then SIGKILL). */
  stopQuestdb(): Promise<void>;
  /** (Re)starts QuestDB with the same root; resolves when /exec answers. */
  startQuestdb(): Promise<void>;
  /** Current pid of a process of this stack, or null if it is not running. */
  pid(name: ProcName): number | null;
  /** Name of the current JetStream meta leader as seen by any reachable node, or null. */
  metaLeader(): Promise<string | null>;
  /** The PIPELINE_* environment variables tests read (see stackEnv). */
  env(): Record<string, string>;
}

export interface ProcessStatus {
  name: ProcName;
  pid: number | null;
  alive: boolean;
  healthy: boolean;
  /** Client URL (nats://...) or QuestDB HTTP URL. */
  url: string;
  /** NATS only: meta leader this node reports (null if none / not reachable). */
  metaLeader?: string | null;
  log: string;
}

export interface StackStatus {
  dir: string;
  ports: StackPorts;
  processes: ProcessStatus[];
  /** Meta leader reported by the healthy NATS nodes (null if none). */
  metaLeader: string | null;
  /** At least one process is alive. */
  running: boolean;
  /** Every process is alive and healthy. */
  healthy: boolean;
}

export interface StoppedProcess {
  name: ProcName;
  pid: number;
  /** true when SIGTERM was not enough and SIGKILL was sent. */
  forced: boolean;
}

/** What startStack records in <dir>/stack.json. */
interface StackState {
  ports: StackPorts;
  runtime: Runtime;
  security?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// paths, templates, state

function paths(dir: string) {
  const root = resolve(dir);
  return {
    root,
    state: join(root, 'stack.json'),
    conf: join(root, 'conf'),
    logs: join(root, 'logs'),
    data: join(root, 'data'),
    natsConf: (n: string) => join(root, 'conf', `${n}.conf`),
    natsStore: (n: string) => join(root, 'data', n),
    questdbRoot: join(root, 'data', 'questdb'),
    log: (n: string) => join(root, 'logs', `${n}.log`),
    pidFile: (n: string) => join(root, `${n}.pid`),
  };
}

function natsIndex(name: ProcName): number {
  return NATS_NAMES.indexOf(name as (typeof NATS_NAMES)[number]);
}

function natsName(i: number): (typeof NATS_NAMES)[number] {
  const name = NATS_NAMES[i];
  if (name === undefined) throw new RangeError(`NATS node index must be 0, 1 or 2 (got ${i})`);
  return name;
}

/** Address NATS node `i` listens on. */
function natsHost(ports: StackPorts, i: number): string {
  return ports.natsHosts?.[i]?.host ?? HOST;
}

function at(t: Triple, i: number): number {
  const v = t[i];
  if (v === undefined) throw new RangeError(`port index ${i}`);
  return v;
}

/** The QuestDB security lines: the file make-security.ts wrote, or a comment saying there is none. */
function questdbSecurityBlock(security: string | undefined): string {
  if (security === undefined) return '# no TLS and no users: plain local stack (see deploy/security/make-security.ts)';
  return readFileSync(securityPaths(security).questdbConf, 'utf8').trimEnd();
}

function renderConfigs(dir: string, ports: StackPorts, security: string | undefined): void {
  const p = paths(dir);
  mkdirSync(p.conf, { recursive: true });
  mkdirSync(p.logs, { recursive: true });
  const nodes: NatsNode[] = NATS_NAMES.map((name, i) => ({
    name,
    host: natsHost(ports, i),
    clientPort: at(ports.natsClient, i),
    clusterPort: at(ports.natsCluster, i),
    monitorPort: at(ports.natsMonitor, i),
    storeDir: p.natsStore(name),
    ...(ports.natsLeafnode ? { leafnodePort: at(ports.natsLeafnode, i) } : {}),
  }));
  nodes.forEach((node, i) => {
    mkdirSync(node.storeDir, { recursive: true });
    writeConfig(p.natsConf(node.name as ProcName), renderNatsNodeConfig(nodes, i, security));
  });
  mkdirSync(join(p.questdbRoot, 'conf'), { recursive: true });
  const qdb = renderTemplate(
    readFileSync(QUESTDB_TEMPLATE, 'utf8'),
    { HTTP_PORT: ports.questdbHttp, PG_PORT: ports.questdbPg, SECURITY: questdbSecurityBlock(security) },
    QUESTDB_TEMPLATE,
  );
  writeConfig(join(p.questdbRoot, 'conf', 'server.conf'), qdb);
}

/**
 * Starting one process renders every config; nodes restarted together (Promise.all) would otherwise truncate a
 * file another node is reading at that moment (it then starts with no config, on the default ports). So: skip an
 * unchanged file, and replace a changed one atomically (write a temporary file, rename it over).
 */
function writeConfig(path: string, content: string): void {
  if (existsSync(path) && readFileSync(path, 'utf8') === content) return;
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, content);
  renameSync(temporary, path);
}

function readState(dir: string): StackState | null {
  try {
    return JSON.parse(readFileSync(paths(dir).state, 'utf8')) as StackState;
  } catch {
    return null;
  }
}

function samePorts(a: StackPorts, b: StackPorts): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

// ---------------------------------------------------------------------------------------------------------------
// processes

/** Argument vector of a process of this stack (also what identifies it in /proc/<pid>/cmdline). */
function command(dir: string, name: ProcName, runtime: Runtime, ports: StackPorts): { cmd: string; args: string[]; marker: string } {
  const p = paths(dir);
  if (name === 'questdb') {
    return {
      cmd: runtime.java,
      args: ['-Xmx1g', '-p', runtime.questdbJar, '-m', 'io.questdb/io.questdb.ServerMain', '-d', p.questdbRoot],
      marker: p.questdbRoot,
    };
  }
  const netns = ports.natsHosts?.[natsIndex(name)]?.netns;
  // `ip netns exec` execs the server in place, so the pid and the marker in its command line stay the same.
  if (netns) return { cmd: 'ip', args: ['netns', 'exec', netns, runtime.natsServer, '-c', p.natsConf(name)], marker: p.natsConf(name) };
  return { cmd: runtime.natsServer, args: ['-c', p.natsConf(name)], marker: p.natsConf(name) };
}

function readPid(dir: string, name: ProcName): number | null {
  try {
    const pid = Number.parseInt(readFileSync(paths(dir).pidFile(name), 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** State letter from /proc/<pid>/stat (R, S, D, Z, ...), or null when there is no such process. */
function procState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ..." - comm may contain spaces/parens, so read the state after the last ')'.
    const close = stat.lastIndexOf(')');
    return stat.slice(close + 2, close + 3) || null;
  } catch {
    return null;
  }
}

/**
 * A process has exited once /proc has no entry for it, or it is a zombie with no threads left. (A multi-threaded
 * process such as nats-server or the JVM shows its main thread as a zombie while the other threads are still
 * tearing down and its sockets are still open, so "state Z" alone is not enough.)
 */
function hasExited(pid: number): boolean {
  const state = procState(pid);
  if (state === null) return true;
  if (state !== 'Z' && state !== 'X') return false;
  try {
    return readdirSync(`/proc/${pid}/task`).length <= 1;
  } catch {
    return true;
  }
}

/** True if `pid` is a live (non-zombie) process whose command line carries `marker` (our config path). */
function isOurProcess(pid: number, marker: string): boolean {
  if (hasExited(pid)) return false;
  try {
    // While a process is exiting its cmdline reads empty: that counts as "not ours" for signalling, but
    // waitGone() uses hasExited() so that a dying process is only "gone" once its ports are released.
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(marker);
  } catch {
    return false;
  }
}

function markerOf(dir: string, name: ProcName): string {
  const p = paths(dir);
  return name === 'questdb' ? p.questdbRoot : p.natsConf(name);
}

/** Pid of a running process of this stack (checked against /proc), or null. */
export function runningPid(dir: string, name: ProcName): number | null {
  const pid = readPid(dir, name);
  return pid !== null && isOurProcess(pid, markerOf(dir, name)) ? pid : null;
}

/** Waits until `pid` (already verified to be ours) has exited. */
async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (hasExited(pid)) return true;
    await sleep(50);
  }
  return hasExited(pid);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

async function stopProcess(dir: string, name: ProcName, timeoutMs = STOP_TIMEOUT_MS): Promise<StoppedProcess | null> {
  const pid = runningPid(dir, name);
  let result: StoppedProcess | null = null;
  if (pid !== null) {
    signal(pid, 'SIGTERM');
    let forced = false;
    if (!(await waitGone(pid, timeoutMs))) {
      forced = true;
      signal(pid, 'SIGKILL');
      if (!(await waitGone(pid, 5_000))) throw new Error(`${name} (pid ${pid}) survived SIGKILL`);
    }
    result = { name, pid, forced };
    // Best effort: give the reaper (this process or init) a moment so no <defunct> entry lingers.
    for (let i = 0; i < 40 && procState(pid) !== null; i++) await sleep(50);
  }
  rmSync(paths(dir).pidFile(name), { force: true });
  return result;
}

/** Children started without `detached`; terminated when this process exits (best effort). */
const ownChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackChild(child: ChildProcess): void {
  ownChildren.add(child);
  child.once('exit', () => ownChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of ownChildren) {
        if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
      }
    });
  }
}

/** null if free; otherwise the error code (EADDRINUSE, EACCES, ...). */
function portBusy(host: string, port: number): Promise<string | null> {
  return new Promise((resolvePromise) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolvePromise(err.code ?? 'error'));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolvePromise(null)));
  });
}

function portsOf(ports: StackPorts, name: ProcName): { host: string; port: number; what: string }[] {
  if (name === 'questdb') {
    return [
      { host: QUESTDB_BIND_HOST, port: ports.questdbHttp, what: 'QuestDB HTTP port' },
      { host: QUESTDB_BIND_HOST, port: ports.questdbPg, what: 'QuestDB PostgreSQL port' },
    ];
  }
  const i = natsIndex(name);
  if (ports.natsHosts?.[i]?.netns) return []; // its own namespace: nothing else can hold its ports
  return [
    { host: HOST, port: at(ports.natsClient, i), what: `${name} client port` },
    { host: HOST, port: at(ports.natsCluster, i), what: `${name} cluster port` },
    { host: HOST, port: at(ports.natsMonitor, i), what: `${name} monitoring port` },
    ...(ports.natsLeafnode ? [{ host: HOST, port: at(ports.natsLeafnode, i), what: `${name} leaf node port` }] : []),
  ];
}

async function checkPortsFree(dir: string, ports: StackPorts, names: ProcName[]): Promise<void> {
  const busy: string[] = [];
  for (const name of names) {
    for (const { host, port, what } of portsOf(ports, name)) {
      const code = await portBusy(host, port);
      if (code) busy.push(`port ${port} (${what}) on ${host}: ${code === 'EADDRINUSE' ? 'already in use' : code}`);
    }
  }
  if (busy.length > 0) {
    throw new Error(
      `cannot start the stack in ${dir}: ${busy.join('; ')}. ` +
        `Another process (not this stack) holds it: stop it, or use other ports (e.g. \`npm run stack -- up --test-ports\`).`,
    );
  }
}

/** Last `n` lines of a log file (reads at most the last 64 KB). */
export function tailFile(file: string, n = 20): string {
  try {
    const size = statSync(file).size;
    const fd = openSync(file, 'r');
    try {
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      let read = 0;
      while (read < len) {
        const bytesRead = readSync(fd, buf, read, len - read, size - len + read);
        if (bytesRead <= 0) break;
        read += bytesRead;
      }
      const lines = buf.subarray(0, read).toString('utf8').split('\n');
      if (lines.at(-1) === '') lines.pop();
      return lines.slice(-n).join('\n');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '(no log output)';
  }
}

function spawnProcess(dir: string, name: ProcName, runtime: Runtime, detached: boolean, ports: StackPorts): ChildProcess {
  const p = paths(dir);
  const { cmd, args } = command(dir, name, runtime, ports);
  const fd = openSync(p.log(name), 'a');
  try {
    writeSync(fd, `\n===== ${new Date().toISOString()} starting ${name}: ${cmd} ${args.join(' ')}\n`);
    const child = spawn(cmd, args, {
      cwd: p.root,
      detached,
      stdio: ['ignore', fd, fd],
      env: process.env,
    });
    if (child.pid === undefined) {
      throw new Error(`could not start ${name} (${cmd}); see ${p.log(name)}`);
    }
    child.on('error', () => undefined); // reported through the health wait (process gone)
    writeFileSync(p.pidFile(name), `${child.pid}\n`);
    if (detached) child.unref();
    else trackChild(child);
    return child;
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// health

async function httpGet(url: string, timeoutMs = 2_000, headers: Record<string, string> = {}): Promise<{ status: number; body: string } | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers });
    return { status: res.status, body: await res.text() };
  } catch {
    return null;
  }
}

/** Health of one NATS node: /healthz?js-enabled-only=true is 200 and /jsz names a meta leader. */
async function natsHealth(ports: StackPorts, i: number): Promise<{ healthy: boolean; leader: string | null; why: string }> {
  const base = `http://${natsHost(ports, i)}:${at(ports.natsMonitor, i)}`;
  const hz = await httpGet(`${base}/healthz?js-enabled-only=true`);
  if (!hz) return { healthy: false, leader: null, why: 'monitoring port not answering' };
  if (hz.status !== 200) return { healthy: false, leader: null, why: `/healthz returned ${hz.status}: ${hz.body.trim()}` };
  const jsz = await httpGet(`${base}/jsz`);
  let leader: string | null = null;
  try {
    const body = JSON.parse(jsz?.body ?? '{}') as { meta_cluster?: { leader?: string } };
    leader = body.meta_cluster?.leader || null;
  } catch {
    // fall through
  }
  return leader ? { healthy: true, leader, why: 'ok' } : { healthy: false, leader: null, why: 'no JetStream meta leader yet' };
}

/** Basic auth header of the hub's QuestDB user when the stack is secure. */
export function questdbAuthHeaders(security: string | null | undefined): Record<string, string> {
  if (!security) return {};
  const { hub } = readQuestDbCredentials(security);
  return { authorization: `Basic ${Buffer.from(`${hub.user}:${hub.password}`).toString('base64')}` };
}

async function questdbHealth(ports: StackPorts, security: string | undefined): Promise<{ healthy: boolean; why: string }> {
  const r = await httpGet(`http://${HOST}:${ports.questdbHttp}/exec?query=select%201`, 2_000, questdbAuthHeaders(security));
  if (!r) return { healthy: false, why: 'HTTP port not answering' };
  return r.status === 200 ? { healthy: true, why: 'ok' } : { healthy: false, why: `/exec returned ${r.status}` };
}

async function procHealth(ports: StackPorts, name: ProcName, security?: string): Promise<{ healthy: boolean; why: string; leader?: string | null }> {
  return name === 'questdb' ? questdbHealth(ports, security) : natsHealth(ports, natsIndex(name));
}

async function waitHealthy(
  dir: string,
  ports: StackPorts,
  name: ProcName,
  timeoutMs: number,
  cancel: { cancelled: boolean } = { cancelled: false },
  security?: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let why = 'not checked';
  for (;;) {
    if (cancel.cancelled) throw new Error(`${name}: startup cancelled`);
    const h = await procHealth(ports, name, security);
    if (h.healthy) return;
    why = h.why;
    const pid = runningPid(dir, name);
    if (pid === null) {
      throw new Error(
        `${name} exited during startup (${why}). Last 20 lines of ${paths(dir).log(name)}:\n` +
          tailFile(paths(dir).log(name), 20),
      );
    }
    if (Date.now() >= deadline) break;
    await sleep(250);
  }
  throw new Error(
    `${name} did not become healthy within ${(timeoutMs / 1000).toFixed(1)} s (${why}). ` +
      `Last 20 lines of ${paths(dir).log(name)}:\n${tailFile(paths(dir).log(name), 20)}`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// public API

/** The PIPELINE_* environment variables integration tests read to find the stack. */
export function stackEnv(dir: string, ports: StackPorts, security?: string): Record<string, string> {
  return {
    ...(security ? { PIPELINE_SECURITY_DIR: resolve(security) } : {}),
    PIPELINE_NATS_URLS: ports.natsClient.map((p, i) => `nats://${natsHost(ports, i)}:${p}`).join(','),
    PIPELINE_NATS_MONITOR_URLS: ports.natsMonitor.map((p, i) => `http://${natsHost(ports, i)}:${p}`).join(','),
    PIPELINE_QUESTDB_HTTP: `http://${HOST}:${ports.questdbHttp}`,
    PIPELINE_QUESTDB_PG_PORT: String(ports.questdbPg),
    PIPELINE_STACK_DIR: resolve(dir),
  };
}

function makeHandle(dir: string, state: StackState, detached: boolean, log: (s: string) => void, healthTimeoutMs: number): StackHandle {
  const { ports, runtime } = state;
  const start = async (name: ProcName): Promise<void> => {
    if (runningPid(dir, name) === null) {
      await checkPortsFree(dir, ports, [name]);
      renderConfigs(dir, ports, state.security);
      spawnProcess(dir, name, runtime, detached, ports);
      log(`started ${name} (pid ${String(runningPid(dir, name))})`);
    }
    await waitHealthy(dir, ports, name, healthTimeoutMs, undefined, state.security);
  };
  return {
    dir: resolve(dir),
    ports,
    natsUrls: ports.natsClient.map((p, i) => `nats://${natsHost(ports, i)}:${p}`),
    natsMonitorUrls: ports.natsMonitor.map((p, i) => `http://${natsHost(ports, i)}:${p}`),
    questdbHttpUrl: `http://${HOST}:${ports.questdbHttp}`,
    questdbPgPort: ports.questdbPg,
    security: state.security ?? null,
    stop: async () => {
      await stopStack(dir);
    },
    killNats: async (i, sig = 'SIGKILL') => {
      const name = natsName(i);
      const pid = runningPid(dir, name);
      if (pid === null) throw new Error(`${name} is not running`);
      signal(pid, sig);
      if (sig === 'SIGKILL' || sig === 'SIGTERM' || sig === 'SIGINT' || sig === 'SIGQUIT') {
        if (!(await waitGone(pid, STOP_TIMEOUT_MS))) throw new Error(`${name} (pid ${pid}) did not exit after ${sig}`);
      }
    },
    startNats: (i) => start(natsName(i)),
    stopQuestdb: async () => {
      await stopProcess(dir, 'questdb');
    },
    startQuestdb: () => start('questdb'),
    pid: (name) => runningPid(dir, name),
    metaLeader: async () => {
      for (let i = 0; i < NATS_NAMES.length; i++) {
        const h = await natsHealth(ports, i);
        if (h.leader) return h.leader;
      }
      return null;
    },
    env: () => stackEnv(dir, ports, state.security),
  };
}

/**
 * Starts (or completes) the stack in `opts.dir` and waits until every process is healthy.
 * Processes of this directory that are already running are reused; if any start fails, the processes started by
 * this call are stopped again and the error names the port or the log file (with its last 20 lines).
 */
export async function startStack(opts: StackOptions): Promise<StackHandle> {
  const dir = resolve(opts.dir);
  const log = opts.log ?? ((s: string) => process.stderr.write(`[stack] ${s}\n`));
  const detached = opts.detached ?? false;
  const healthTimeoutMs = opts.healthTimeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  const ports = opts.ports;
  const runtime = opts.runtime ?? (await ensureRuntime(log));

  const running = PROC_NAMES.filter((n) => runningPid(dir, n) !== null);
  const previous = readState(dir);
  const security = opts.security === undefined ? undefined : resolve(opts.security);
  if (running.length > 0 && previous && (!samePorts(previous.ports, ports) || previous.security !== security)) {
    throw new Error(
      `the stack in ${dir} is running (${running.join(', ')}) with other ports or security; stop it first (npm run stack -- down)`,
    );
  }
  const toStart = PROC_NAMES.filter((n) => !running.includes(n));
  await checkPortsFree(dir, ports, toStart);

  mkdirSync(dir, { recursive: true });
  renderConfigs(dir, ports, security);
  const state: StackState = { ports, runtime, ...(security !== undefined ? { security } : {}) };
  writeFileSync(paths(dir).state, `${JSON.stringify(state, null, 2)}\n`);

  for (const name of running) log(`${name} already running (pid ${String(runningPid(dir, name))})`);
  const started: ProcName[] = [];
  try {
    for (const name of toStart) {
      spawnProcess(dir, name, runtime, detached, ports);
      started.push(name);
    }
    if (toStart.length > 0) log(`started ${toStart.join(', ')}; waiting for health (logs in ${paths(dir).logs})`);
    // The first failure cancels the other waits, so the error is about the first process that failed.
    const cancel = { cancelled: false };
    await Promise.all(
      PROC_NAMES.map((n) =>
        waitHealthy(dir, ports, n, healthTimeoutMs, cancel, security).catch((err: unknown) => {
          cancel.cancelled = true;
          throw err;
        }),
      ),
    );
  } catch (err) {
    await Promise.allSettled(started.map((n) => stopProcess(dir, n)));
    throw err;
  }
  return makeHandle(dir, state, detached, log, healthTimeoutMs);
}

/**
 * A handle on a stack that some other process started (e.g. from a test file, with PIPELINE_STACK_DIR).
 * Nothing is started. Processes it (re)starts are detached by default, so they outlive the caller and are
 * stopped by whoever owns the stack (stopStack / handle.stop()).
 */
export function attachStack(dir: string, opts: { detached?: boolean; log?: (s: string) => void; healthTimeoutMs?: number } = {}): StackHandle {
  const state = readState(dir);
  if (!state) throw new Error(`no stack state in ${resolve(dir)} (stack.json); was the stack started there?`);
  return makeHandle(
    dir,
    state,
    opts.detached ?? true,
    opts.log ?? ((s: string) => process.stderr.write(`[stack] ${s}\n`)),
    opts.healthTimeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS,
  );
}

/** attachStack(process.env.PIPELINE_STACK_DIR), for tests run by `npm test`. */
export function stackFromEnv(): StackHandle {
  const dir = process.env.PIPELINE_STACK_DIR;
  if (!dir) throw new Error('PIPELINE_STACK_DIR is not set; run the tests with `npm test`');
  return attachStack(dir);
}

/** Stops every process of the stack in `dir` through its pid file: SIGTERM, then SIGKILL after 15 s. */
export async function stopStack(dir: string, timeoutMs = STOP_TIMEOUT_MS): Promise<StoppedProcess[]> {
  const results = await Promise.all(PROC_NAMES.map((n) => stopProcess(dir, n, timeoutMs)));
  return results.filter((r): r is StoppedProcess => r !== null);
}

/** Per process: pid (from the pid file, if it is really ours), alive, healthy; and the NATS meta leader. */
export async function stackStatus(dir: string, ports?: StackPorts): Promise<StackStatus> {
  const p = paths(dir);
  const state = readState(dir);
  const usePorts = ports ?? state?.ports ?? DEFAULT_PORTS;
  const processes = await Promise.all(
    PROC_NAMES.map(async (name): Promise<ProcessStatus> => {
      const pid = runningPid(dir, name);
      const alive = pid !== null;
      const h = alive ? await procHealth(usePorts, name, state?.security) : { healthy: false, leader: null };
      const i = natsIndex(name);
      return {
        name,
        pid: pid ?? readPid(dir, name),
        alive,
        healthy: h.healthy,
        url: name === 'questdb' ? `http://${HOST}:${usePorts.questdbHttp}` : `nats://${natsHost(usePorts, i)}:${at(usePorts.natsClient, i)}`,
        ...(name === 'questdb' ? {} : { metaLeader: h.leader ?? null }),
        log: p.log(name),
      };
    }),
  );
  const metaLeader = processes.find((s) => s.metaLeader)?.metaLeader ?? null;
  return {
    dir: p.root,
    ports: usePorts,
    processes,
    metaLeader,
    running: processes.some((s) => s.alive),
    healthy: processes.every((s) => s.alive && s.healthy),
  };
}

/** Removes the data and logs of a stopped stack (refuses while any of its processes runs). */
export function wipeStack(dir: string): void {
  const running = PROC_NAMES.filter((n) => runningPid(dir, n) !== null);
  if (running.length > 0) throw new Error(`cannot wipe ${resolve(dir)}: ${running.join(', ')} still running`);
  const p = paths(dir);
  rmSync(p.data, { recursive: true, force: true });
  rmSync(p.logs, { recursive: true, force: true });
  if (existsSync(p.state)) rmSync(p.state, { force: true });
}
