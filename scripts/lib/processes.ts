/**
 * Runs the project's own programs (agent, hub) as child processes with their output in a log file, and waits
 * until their health endpoint answers. Used by the demo, the benchmarks and the integration tests (which need
 * real processes to kill -9).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { REPO_ROOT } from './runtime.js';

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export interface ManagedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly healthUrl: string;
  readonly logFile: string;
  /** SIGTERM and wait for exit (SIGKILL after timeoutMs). */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

export interface StartProcessOptions {
  name: string;
  /** Script path relative to the repo root, e.g. `bin/hub.js`, run with this Node; or `command`. */
  script?: string;
  /** A program that is not a script of this repository, e.g. `[natsServer, '-c', conf]` (instead of `script`). */
  command?: string[];
  /** Arguments after the script (e.g. `scale`). */
  args?: string[];
  /** Node options placed before the script (e.g. `--cpu-prof`, which NODE_OPTIONS refuses). */
  nodeArgs?: string[];
  env: Record<string, string>;
  healthUrl: string;
  logDir: string;
  timeoutMs?: number;
  /** Network namespace to run in (a host of scripts/lib/netns.ts); default: the caller's. */
  netns?: string;
}

export async function startProcess(options: StartProcessOptions): Promise<ManagedProcess> {
  const { name, healthUrl } = options;
  mkdirSync(options.logDir, { recursive: true });
  const logFile = join(options.logDir, `${name}.log`);
  const log = createWriteStream(logFile, { flags: 'a' });
  if ((options.script === undefined) === (options.command === undefined)) throw new Error(`${name}: give either script or command`);
  const argv = options.command ?? [process.execPath, ...(options.nodeArgs ?? []), join(REPO_ROOT, options.script!), ...(options.args ?? [])];
  // `ip netns exec` execs the program in place: the child's pid is the program's, so signals reach it.
  const [cmd, ...args] = options.netns ? ['ip', 'netns', 'exec', options.netns, ...argv] : argv;
  const child = spawn(cmd!, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'info', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  const exited = new Promise<number | null>((resolveExit) => child.once('exit', (code) => resolveExit(code)));
  const running = () => child.exitCode === null && child.signalCode === null;
  const managed: ManagedProcess = {
    name,
    child,
    healthUrl,
    logFile,
    exited,
    async stop(timeout = 15000) {
      if (!running()) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (!running()) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  const deadline = Date.now() + (options.timeoutMs ?? 30000);
  for (;;) {
    if (!running()) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before it was healthy; see ${logFile}`);
    try {
      if ((await fetch(healthUrl)).status === 200) return managed;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await managed.kill();
      throw new Error(`${name} not healthy within ${options.timeoutMs ?? 30000} ms; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
