/**
 * Hub processes for analytics tests: every test run gets its own leases and state buckets (hubs of other tests on
 * the same stack keep theirs), and the fresh state starts after what EVENTS holds, so other tests' event times do
 * not move its watermarks.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { PartitionStats } from '../../hub/src/analytics/partition-processor.js';
import type { Rule } from '../../hub/src/operators/index.js';
import { encodeRule, openRuleBucket, ruleKey } from '../../hub/src/rules/index.js';
import { testStack } from './env.js';
import { agentPorts, freePort, startAgent, startHub, type AgentPorts, type ManagedProcess } from './processes.js';

export interface AnalyticsHub {
  process: ManagedProcess;
  /** Port of its /healthz. */
  port: number;
}

/** Starts `bin/hub.js` as worker `<name>-<run>` on the buckets `leases-<run>` and `state-<run>`; `env` adds or overrides. */
export async function startAnalyticsHub(name: string, run: string, env: Record<string, string> = {}): Promise<AnalyticsHub> {
  const stack = testStack();
  const port = await freePort();
  const process = await startHub(name, stack.natsUrls, stack.questdbHttp, {
    HUB_HTTP__PORT: String(port),
    HUB_ANALYTICS__WORKERID: `${name}-${run}`,
    HUB_ANALYTICS__LEASESBUCKET: `leases-${run}`,
    HUB_ANALYTICS__STATEBUCKET: `state-${run}`,
    HUB_ANALYTICS__FRESHSTART: 'new',
    ...env,
  });
  return { process, port };
}

/** The analytics part of a hub's /healthz: partitions it owns and their stats (empty while it has none). */
export async function analyticsHealth(port: number): Promise<{ owned: number[]; partitions: PartitionStats[] }> {
  const health = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { analytics?: { owned: number[]; partitions: PartitionStats[] } };
  return { owned: health.analytics?.owned ?? [], partitions: health.analytics?.partitions ?? [] };
}

/** What an analytics test runs against: its rule in the rule bucket and an edge agent that forwards its events. */
export interface RuleAndAgent {
  nc: NatsConnection;
  agent: ManagedProcess;
  ports: AgentPorts;
  /** Stops the agent, deletes the rule and closes the connection. */
  stop(): Promise<void>;
}

export async function startRuleAndAgent(rule: Rule, agentId: string): Promise<RuleAndAgent> {
  const stack = testStack();
  const nc = await connect({ servers: stack.natsUrls });
  await (await openRuleBucket(nc)).put(ruleKey(rule.name), encodeRule(rule));
  const ports = await agentPorts();
  const agent = await startAgent(agentId, stack.natsUrls, ports, mkdtempSync(join(tmpdir(), 'agent-')));
  return {
    nc,
    agent,
    ports,
    async stop() {
      await agent.stop();
      await (await openRuleBucket(nc)).delete(ruleKey(rule.name)).catch(() => undefined);
      await nc.close();
    },
  };
}
