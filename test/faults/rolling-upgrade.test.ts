/**
 * The rolling upgrade of the README ("Upgrading without downtime"), under load: an agent takes MQTT and HTTP load
 * the whole time while
 *   1. a second rules worker joins (partitions move to it),
 *   2. each NATS node in turn is put in lame-duck mode (SIGUSR2, what `systemctl stop nats-server` does), exits,
 *      starts again and catches up (every stream and consumer replica current) before the next one,
 *   3. each of the two raw-event hub workers in turn is stopped (SIGTERM) and started again,
 *   4. each of the two rules workers in turn is stopped (it hands its partitions over) and started again.
 * A restart with the same code stands in for a new version: what the procedure has to survive is the process going
 * away and coming back. Afterwards every event the edge acknowledged is in QuestDB exactly once, the stream never
 * stopped taking writes for long (largest gap printed), and the 10 ms windows the workers wrote equal an offline
 * run over the stream. The timeline of the steps is printed.
 *
 * Bounded: three lame-duck periods (30 s each in deploy/nats/node.conf.tmpl) dominate, about 2.5 min in all.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { stackFromEnv, type ProcName, type StackHandle } from '../../scripts/lib/stack.js';
import { analyticsHealth, startAnalyticsHub, type AnalyticsHub } from '../support/analytics-hub.js';
import { testStack } from '../support/env.js';
import { RULES_HUB_ENV, underLoad, waitClusterCurrent } from '../support/nats-fault-run.js';
import { startHub, type ManagedProcess } from '../support/processes.js';
import { waitFor } from '../support/questdb.js';

const stack = testStack();
let cluster: StackHandle;
let nc: NatsConnection;
const rawHubs: ManagedProcess[] = [];
/** The rules workers of this run, by name; a restarted one replaces its entry. */
const rulesHubs = new Map<string, AnalyticsHub>();
let run = '';

const rawHub = (name: string) => startHub(name, stack.natsUrls, stack.questdbHttp, { HUB_ANALYTICS__ENABLED: 'false' });
const rulesHub = async (name: string): Promise<AnalyticsHub> => {
  const hub = await startAnalyticsHub(name, run, { ...RULES_HUB_ENV, HUB_ANALYTICS__FRESH_START: 'new' });
  rulesHubs.set(name, hub);
  return hub;
};

before(async () => {
  cluster = stackFromEnv();
  nc = await connect({ servers: stack.natsUrls, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  rawHubs.push(await rawHub('rolling-raw-1'), await rawHub('rolling-raw-2'));
});

after(async () => {
  for (const hub of [...rawHubs, ...[...rulesHubs.values()].map((h) => h.process)]) await hub.stop().catch(() => undefined);
  await nc?.close();
  // Never leave the shared stack with a node down.
  for (let i = 0; i < 3; i++) {
    if (cluster.pid(`nats-${i + 1}` as ProcName) === null) await cluster.startNats(i).catch(() => undefined);
  }
  await waitClusterCurrent(cluster.natsMonitorUrls).catch(() => undefined);
});

/** Partitions the rules workers own between them (each listed once per owner). */
async function ownedByWorkers(): Promise<number[]> {
  const owned = await Promise.all([...rulesHubs.values()].map(async (h) => (await analyticsHealth(h.port).catch(() => ({ owned: [] }))).owned.length));
  return owned;
}

async function waitAllPartitionsOwned(what: string): Promise<number[]> {
  const owned = await waitFor(ownedByWorkers, (o) => o.reduce((a, b) => a + b, 0) === 8 && o.every((n) => n > 0), 60_000, 250);
  assert.equal(owned.reduce((a, b) => a + b, 0), 8, `${what}: the workers own all 8 partitions between them (${owned.join('/')})`);
  return owned;
}

test('rolling restart of every NATS node and every hub worker under load: nothing lost, nothing twice, windows exact', { timeout: 480_000 }, async () => {
  const timeline: string[] = [];
  let t0 = 0;
  const mark = (what: string) => {
    const line = `+${((Date.now() - t0) / 1000).toFixed(1)} s  ${what}`;
    timeline.push(line);
    process.stderr.write(`[rolling] ${line}\n`);
  };
  const result = await underLoad(
    {
      natsUrls: stack.natsUrls,
      natsMonitorUrls: cluster.natsMonitorUrls,
      questdbHttp: stack.questdbHttp,
      nc,
      startRulesHub: async (agentRun) => {
        run = agentRun;
        const first = await rulesHub('rolling-rules-1');
        return first;
      },
    },
    'rolling-upgrade',
    async () => {
      t0 = Date.now();
      mark('load running; a second rules worker joins');
      await rulesHub('rolling-rules-2');
      mark(`partitions split ${(await waitAllPartitionsOwned('after the second worker joined')).join('/')}`);

      for (let i = 0; i < 3; i++) {
        const name = `nats-${i + 1}` as ProcName;
        await cluster.killNats(i, 'SIGUSR2');
        mark(`${name}: lame-duck mode`);
        const gone = await waitFor(async () => cluster.pid(name), (pid) => pid === null, 60_000, 250);
        assert.equal(gone, null, `${name} exits after its lame-duck period`);
        mark(`${name}: exited`);
        await cluster.startNats(i);
        mark(`${name}: started`);
        await waitClusterCurrent(cluster.natsMonitorUrls);
        mark(`${name}: every replica current`);
      }

      for (const [i, hub] of rawHubs.entries()) {
        await hub.stop();
        mark(`${hub.name}: stopped`);
        rawHubs[i] = await rawHub(`rolling-raw-${i + 1}`);
        mark(`${hub.name}: started, healthy`);
      }

      for (const name of ['rolling-rules-1', 'rolling-rules-2']) {
        const hub = rulesHubs.get(name)!;
        await hub.process.stop();
        rulesHubs.delete(name);
        mark(`${name}: stopped (the other worker holds ${(await ownedByWorkers()).join('/')} of 8 until it takes the rest)`);
        await rulesHub(name);
        mark(`${name}: started; partitions split ${(await waitAllPartitionsOwned(`after ${name} came back`)).join('/')}`);
      }
      return { restore: async () => undefined };
    },
    5_000,
  );
  process.stderr.write(
    `[rolling] timeline:\n${timeline.map((l) => `  ${l}`).join('\n')}\n` +
      `[rolling] ${result.acked} events acknowledged during the upgrade, each once in QuestDB; largest gap in the stream's writes ${(result.gapMs / 1000).toFixed(1)} s\n`,
  );
});
