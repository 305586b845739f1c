/**
 * The hub cluster losing a node under load, for real: kill -9 of the EVENTS stream leader, kill -9 of the JetStream
 * meta leader, and a node frozen with SIGSTOP for 15 s. Each time, every event the edge acknowledged must be in
 * QuestDB exactly once, and the stream must take writes again soon: the measured gap in the stream's store times
 * is printed (and bounded with room for a slow machine).
 *
 * Bounded: about 20 s of load per fault plus the node's restart. FAULT_NATS_ONLY=leader|meta|stop runs one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { stackFromEnv, type ProcName, type StackHandle } from '../../scripts/lib/stack.js';
import { testStack } from '../support/env.js';
import { startAnalyticsHub } from '../support/analytics-hub.js';
import { nodeIndex, RULES_HUB_ENV, underLoad as underLoadOn, waitClusterCurrent } from '../support/nats-fault-run.js';
import { startHub, type ManagedProcess } from '../support/processes.js';

const stack = testStack();
let hub: ManagedProcess;
let cluster: StackHandle;
let nc: NatsConnection;

before(async () => {
  cluster = stackFromEnv();
  hub = await startHub('nats-faults', stack.natsUrls, stack.questdbHttp, { HUB_ANALYTICS__ENABLED: 'false' });
  nc = await connect({ servers: stack.natsUrls, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
});
after(async () => {
  await hub?.stop();
  await nc?.close();
  // Never leave the shared stack with a node down or frozen.
  for (let i = 0; i < 3; i++) {
    await cluster.killNats(i, 'SIGCONT').catch(() => undefined);
    if (cluster.pid(`nats-${i + 1}` as ProcName) === null) await cluster.startNats(i).catch(() => undefined);
  }
  await waitClusterCurrent(cluster.natsMonitorUrls).catch(() => undefined);
});

const underLoad = async (label: string, fault: () => Promise<{ restore: () => Promise<void> }>, afterMs?: number): Promise<void> => {
  const startRulesHub = (run: string) => startAnalyticsHub('nats-faults-rules', run, RULES_HUB_ENV);
  await underLoadOn({ natsUrls: stack.natsUrls, natsMonitorUrls: cluster.natsMonitorUrls, questdbHttp: stack.questdbHttp, nc, startRulesHub }, label, fault, afterMs);
};

const only = process.env.FAULT_NATS_ONLY;

async function streamLeaderIndex(): Promise<number> {
  const leader = (await (await jetstreamManager(nc)).streams.info('EVENTS')).cluster?.leader;
  assert.ok(leader, 'EVENTS has a leader');
  return nodeIndex(leader);
}

async function metaLeaderIndex(): Promise<number> {
  const leader = await cluster.metaLeader();
  assert.ok(leader, 'the cluster has a meta leader');
  return nodeIndex(leader);
}

/** kill -9 of the node `findNode` names; restored by starting it again. */
async function killNode(findNode: () => Promise<number>): Promise<{ restore: () => Promise<void> }> {
  const index = await findNode();
  await cluster.killNats(index, 'SIGKILL');
  return { restore: () => cluster.startNats(index) };
}

describe('NATS node faults under load', () => {
  test('kill -9 of the EVENTS stream leader: writes resume, every acknowledged event once in QuestDB', { skip: only !== undefined && only !== 'leader' }, async () => {
    await underLoad('stream-leader', () => killNode(streamLeaderIndex));
  });

  test('kill -9 of the JetStream meta leader: writes resume, every acknowledged event once in QuestDB', { skip: only !== undefined && only !== 'meta' }, async () => {
    await underLoad('meta-leader', () => killNode(metaLeaderIndex));
  });

  test('a node frozen with SIGSTOP for 15 s, then SIGCONT: writes go on, every acknowledged event once', { skip: only !== undefined && only !== 'stop' }, async () => {
    await underLoad('sigstop', async () => {
      // The stream leader, the worst node to freeze: its followers must notice and elect another.
      const index = await streamLeaderIndex();
      await cluster.killNats(index, 'SIGSTOP');
      const resume = setTimeout(() => void cluster.killNats(index, 'SIGCONT'), 15_000);
      return {
        restore: async () => {
          clearTimeout(resume);
          await cluster.killNats(index, 'SIGCONT');
          await new Promise((r) => setTimeout(r, 2000));
        },
      };
    }, 20_000);
  });
});
