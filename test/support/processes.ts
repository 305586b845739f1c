/** The agent and the hub as real child processes against the test stack (so tests can kill -9 them). */
import { join } from 'node:path';
import { freePort, startProcess, type ManagedProcess } from '../../scripts/lib/processes.js';
import { REPO_ROOT } from '../../scripts/lib/runtime.js';

export { freePort, type ManagedProcess };

/** Where the processes' output goes: `hub-<name>.log`, `agent-<agent id>.log` (appended across runs). */
export const LOG_DIR = join(REPO_ROOT, '.runtime', 'test-logs');

export interface AgentPorts {
  mqtt: number;
  http: number;
  admin: number;
}

export async function agentPorts(): Promise<AgentPorts> {
  return { mqtt: await freePort(), http: await freePort(), admin: await freePort() };
}

/** Starts `bin/edge-agent.js` against the test stack; `extraEnv` overrides config (EDGE_* variables). */
export function startAgent(agentId: string, natsUrls: string[], ports: AgentPorts, dataDir: string, extraEnv: Record<string, string> = {}): Promise<ManagedProcess> {
  return startProcess({
    name: `agent-${agentId}`,
    script: 'bin/edge-agent.js',
    logDir: LOG_DIR,
    healthUrl: `http://127.0.0.1:${ports.admin}/healthz`,
    env: {
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
  });
}

/** Starts `bin/hub.js` against the test stack; `extraEnv` overrides config (HUB_* variables). */
export async function startHub(name: string, natsUrls: string[], questdbHttp: string, extraEnv: Record<string, string> = {}): Promise<ManagedProcess> {
  // A caller that wants to read /healthz passes HUB_HTTP__PORT itself.
  const port = extraEnv.HUB_HTTP__PORT !== undefined ? Number(extraEnv.HUB_HTTP__PORT) : await freePort();
  return startProcess({
    name: `hub-${name}`,
    script: 'bin/hub.js',
    logDir: LOG_DIR,
    healthUrl: `http://127.0.0.1:${port}/healthz`,
    timeoutMs: 60000,
    env: {
      HUB_NATS__SERVERS: JSON.stringify(natsUrls),
      HUB_QUESTDB__HTTPURL: questdbHttp,
      HUB_HTTP__PORT: String(port),
      ...extraEnv,
    },
  });
}
