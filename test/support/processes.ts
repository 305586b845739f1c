/**
 * Starts the real agent and hub as child processes (so tests can kill -9 them), each with its own config through
 * environment overrides, and waits until they answer on their health endpoint.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync, createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));

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
  /** SIGTERM and wait for exit (SIGKILL after timeoutMs). */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

export function logDir(): string {
  const dir = join(REPO, '.runtime', 'test-logs');
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function startProcess(name: string, script: string, env: Record<string, string>, healthUrl: string, timeoutMs = 30000): Promise<ManagedProcess> {
  const log = createWriteStream(join(logDir(), `${name}.log`), { flags: 'a' });
  const child = spawn(process.execPath, [join(REPO, script)], {
    cwd: REPO,
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  const exited = new Promise<number | null>((resolveExit) => child.once('exit', (code) => resolveExit(code)));
  const managed: ManagedProcess = {
    name,
    child,
    healthUrl,
    exited,
    async stop(timeout = 15000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode} before it was healthy; see .runtime/test-logs/${name}.log`);
    try {
      const response = await fetch(healthUrl);
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await managed.kill();
      throw new Error(`${name} not healthy within ${timeoutMs} ms; see .runtime/test-logs/${name}.log`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return managed;
}

export interface AgentPorts {
  mqtt: number;
  http: number;
  admin: number;
}

export async function agentPorts(): Promise<AgentPorts> {
  return { mqtt: await freePort(), http: await freePort(), admin: await freePort() };
}

/** Starts `bin/edge-agent.js` against the test stack. */
export function startAgent(agentId: string, natsUrls: string[], ports: AgentPorts, dataDir: string, extraEnv: Record<string, string> = {}): Promise<ManagedProcess> {
  return startProcess(
    `agent-${agentId}`,
    'bin/edge-agent.js',
    {
      EDGE_AGENTID: agentId,
      EDGE_DATADIR: dataDir,
      EDGE_NATS__SERVERS: JSON.stringify(natsUrls),
      EDGE_SOURCES__MQTT__HOST: '127.0.0.1',
      EDGE_SOURCES__MQTT__PORT: String(ports.mqtt),
      EDGE_SOURCES__HTTP__HOST: '127.0.0.1',
      EDGE_SOURCES__HTTP__PORT: String(ports.http),
      EDGE_ADMIN__HOST: '127.0.0.1',
      EDGE_ADMIN__PORT: String(ports.admin),
      ...extraEnv,
    },
    `http://127.0.0.1:${ports.admin}/healthz`,
  );
}

/** Starts `bin/hub.js` against the test stack. */
export async function startHub(name: string, natsUrls: string[], questdbHttp: string, extraEnv: Record<string, string> = {}): Promise<ManagedProcess> {
  const port = await freePort();
  return startProcess(
    `hub-${name}`,
    'bin/hub.js',
    {
      HUB_NATS__SERVERS: JSON.stringify(natsUrls),
      HUB_QUESTDB__HTTPURL: questdbHttp,
      HUB_HTTP__PORT: String(port),
      ...extraEnv,
    },
    `http://127.0.0.1:${port}/healthz`,
    60000,
  );
}
