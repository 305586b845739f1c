/**
 * One backlog drain of the hub benchmarks (hub-throughput.ts, capacity.ts, hub-scaling.ts): a backlog of events in
 * EVENTS as edge agents publish them, then hub processes that drain it, with the CPU of each party over the drain.
 *
 * Each drain has its own agent id, analytics state and leases buckets, so that drains in one benchmark process do not
 * see each other's state.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { WireEvent } from '../../shared/wire.js';
import { freePort, startProcess, type ManagedProcess } from '../../scripts/lib/processes.js';
import { REPO_ROOT, RUNTIME_DIR } from '../../scripts/lib/runtime.js';
import { NATS_NAMES, type StackHandle } from '../../scripts/lib/stack.js';
import { agentPublisher } from './agent-publisher.js';
import { mixEvent } from './hub-event-mix.js';
import { cpuSecondsOf, sampleProcess } from './measure.js';

export const DRAIN_PARTITIONS = 8;
export const DRAIN_PER_BATCH = 500;

/** 'both': raw rows and analytics in one process; 'raw' / 'analytics': one of the two (consumer or analytics off). */
export type HubRole = 'both' | 'raw' | 'analytics';

export interface DrainOptions {
  stack: StackHandle;
  nc: NatsConnection;
  events: number;
  roles: HubRole[];
  /** The data-quality rules of schemas/<type>/quality.json (quality.enabled). */
  quality: boolean;
  say: (line: string) => void;
  /** Give up waiting for the drain after this long. Default 600 s. */
  timeoutMs?: number;
  /**
   * Start every hub first and wait until the partitions are shared out, then publish the backlog: measures the same
   * work split over N settled processes (what scaling out costs per event in steady state). Without it the backlog
   * is waiting when the hubs start one after the other, so the first drains alone and hands partitions over to the
   * others while draining (what a scale-up in the middle of a backlog costs).
   */
  settleFirst?: boolean;
}

export interface DrainMeasurement {
  events: number;
  /** Publishing the backlog (event generation included): an upper bound for what the hub could be fed. */
  publishEventsPerSecond: number;
  /** From the first hub answering its health check (settleFirst: the first publish) to every raw row visible in QuestDB. */
  rawSeconds: number;
  /** From the first hub answering to every partition's analytics snapshot covering the backlog (= rawSeconds without analytics). */
  analyticsSeconds: number;
  wholeSeconds: number;
  /** CPU of the hub processes from the moment each answered its health check (settleFirst: the first publish) to the end of the drain. */
  hubCpuSeconds: number;
  hubCpuSecondsEach: number[];
  natsCpuSeconds: number;
  /** QuestDB's CPU over the drain. */
  questdbCpuSeconds: number;
  /**
   * What the servers spent while idle, just before the drain (1.0 = one core): Raft heartbeats, QuestDB's job
   * threads. Over a slow drain on a busy machine this part grows with the drain's length, not with its events.
   */
  idleCpuCores: { nats: number; questdb: number };
  /** QuestDB's CPU until its WAL had applied window_results as well (it applies after acknowledging). */
  questdbCpuSecondsApplied: number;
  hubPeakRssBytes: number;
  windowResultRows: number;
  timedOut: boolean;
}

export interface BacklogDrain {
  measurement: DrainMeasurement;
  agentId: string;
  hubs: ManagedProcess[];
  /** Publishes events the way an agent does (batches of 500 over 8 partitions). */
  publish: (events: WireEvent[]) => Promise<void>;
  /** The next event of the mix (benchmarks/lib/hub-event-mix.ts) at event time `nowMs`. */
  makeEvent: (nowMs: number) => WireEvent;
  sql: <T>(query: string) => Promise<T[]>;
  /** Stops the hubs and removes what the drain left in NATS (its events, state and leases buckets). */
  close(): Promise<void>;
}

const logDir = join(RUNTIME_DIR, 'bench', 'logs');
/** With other people's tests on the same 2 cores a PubAck can take seconds; a timeout would end the benchmark. */
export const PUBLISH_TIMEOUT_MS = 30_000;

/** The pids of this stack's nats-server processes (not those of other stacks on the machine). */
export function stackNatsPids(stack: StackHandle): number[] {
  return NATS_NAMES.map((name) => stack.pid(name)).filter((pid): pid is number => pid !== null);
}

/** Compiles the hub once per benchmark: the benchmarks measure the compiled hub, as it is deployed. */
export function buildHub(say: (line: string) => void): void {
  say('compiling the hub (npm run build)...');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
}

export function questdbSql(stack: StackHandle): <T>(query: string) => Promise<T[]> {
  return async <T>(query: string): Promise<T[]> => {
    const response = await fetch(`${stack.questdbHttpUrl}/exec?query=${encodeURIComponent(query)}`);
    const body = (await response.json()) as { dataset?: T[]; error?: string };
    if (body.error) throw new Error(`${body.error}: ${query}`);
    return body.dataset ?? [];
  };
}

/** Publishes a backlog, drains it with `roles` hub processes and measures; the hubs keep running until close(). */
export async function runBacklogDrain(options: DrainOptions): Promise<BacklogDrain> {
  const { stack, nc, events: totalEvents, roles, quality, say } = options;
  const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
  const agentId = `bench-hub-${run}`;
  const stateBucket = `bench-state-${run}`;
  const leasesBucket = `bench-leases-${run}`;
  const js = jetstream(nc, { timeout: PUBLISH_TIMEOUT_MS });
  const jsm = await jetstreamManager(nc);
  const sql = questdbSql(stack);
  let sequence = 0;
  const makeEvent = (nowMs: number): WireEvent => mixEvent(sequence++, nowMs, agentId);
  const publish = agentPublisher(js, { agentId, partitions: DRAIN_PARTITIONS, perBatch: DRAIN_PER_BATCH });

  const analyticsPorts: number[] = [];
  const startHub = async (role: HubRole, i: number): Promise<ManagedProcess> => {
    const port = await freePort();
    if (role !== 'raw') analyticsPorts.push(port);
    return startProcess({
      name: `bench-hub-${i}`,
      script: 'dist/hub/src/main.js',
      // e.g. BENCH_HUB_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile the hub under load.
      nodeArgs: process.env.BENCH_HUB_NODE_ARGS?.split(' ').filter(Boolean) ?? [],
      logDir,
      healthUrl: `http://127.0.0.1:${port}/healthz`,
      timeoutMs: 60000,
      env: {
        LOG_LEVEL: 'warn',
        HUB_HTTP__PORT: String(port),
        HUB_ANALYTICS__WORKERID: `bench-${run}-${i}`,
        // A fresh analytics state per drain: the shared one's watermark is at the end of the previous run, which
        // would make this run's hour-old backlog late data (correctly, but that is not what we measure).
        HUB_ANALYTICS__STATEBUCKET: stateBucket,
        HUB_ANALYTICS__LEASESBUCKET: leasesBucket,
        // Starts after what EVENTS held when the setup hub took the partitions (an interrupted run's leftovers).
        HUB_ANALYTICS__FRESHSTART: 'new',
        HUB_NATS__NAME: `bench-hub-${i}`,
        HUB_CONSUMER__ENABLED: String(role !== 'analytics'),
        HUB_ANALYTICS__ENABLED: String(role !== 'raw'),
        HUB_QUALITY__ENABLED: String(quality),
      },
    });
  };

  const natsPids = stackNatsPids(stack);
  const questdbPids = [stack.pid('questdb')].filter((pid): pid is number => pid !== null);
  const hubs: ManagedProcess[] = [];
  const cpuBefore: number[] = [];
  let drainStart = 0;
  let serversBefore = { nats: 0, questdb: 0 };
  let idleCpuCores = { nats: 0, questdb: 0 };
  let publishEventsPerSecond = 0;
  let lastSeq = 0;

  /** Every analytics hub answers and together they own each partition once, each its fair share. */
  const waitPartitionsShared = async (): Promise<void> => {
    if (analyticsPorts.length === 0) return; // raw-only hubs lease nothing
    const fair = Math.floor(DRAIN_PARTITIONS / Math.max(1, analyticsPorts.length));
    for (const until = Date.now() + 60_000; Date.now() < until; await sleep(200)) {
      const owned = await Promise.all(
        analyticsPorts.map((port) =>
          fetch(`http://127.0.0.1:${port}/healthz`)
            .then((r) => r.json() as Promise<{ analytics?: { owned: number[] } }>)
            .then((h) => h.analytics?.owned ?? [])
            .catch(() => [] as number[]),
        ),
      );
      if (new Set(owned.flat()).size === DRAIN_PARTITIONS && owned.flat().length === DRAIN_PARTITIONS && owned.every((o) => o.length >= fair)) return;
    }
    say('the hubs did not share the partitions out within 60 s; measuring anyway');
  };

  const publishBacklog = async (): Promise<void> => {
    say(`publishing ${totalEvents.toLocaleString('en-US')} events into EVENTS (batches of ${DRAIN_PER_BATCH}, ${DRAIN_PARTITIONS} partitions)...`);
    // The backlog's hour lies in its own past day (2-300 days back, by minute), like the events of an edge that was
    // cut off: hours no other run wrote. Over earlier runs' rows, QuestDB would spend its CPU merging out-of-order
    // commits into them (measured: 22k instead of 41-54k raw rows/s on the third run), which says more about the order
    // of the runs than about the hub.
    const backlogStart = Date.now() - 3_600_000 - (2 + (Math.floor(Date.now() / 60_000) % 299)) * 86_400_000;
    const publishStart = performance.now();
    for (let done = 0; done < totalEvents; done += 50_000) {
      const count = Math.min(50_000, totalEvents - done);
      // Event time spreads over the hour, 1 ms apart per event, so windows close as the backlog drains.
      await publish(Array.from({ length: count }, (_, i) => makeEvent(backlogStart + Math.floor(((done + i) / totalEvents) * 3_500_000))));
    }
    publishEventsPerSecond = Math.round(totalEvents / ((performance.now() - publishStart) / 1000));
    lastSeq = (await jsm.streams.info('EVENTS')).state.last_seq;
  };

  if (options.settleFirst) {
    say(`starting ${roles.length} hub process(es) (${roles.join(', ')}) and letting them share the partitions...`);
    for (const [i, role] of roles.entries()) hubs.push(await startHub(role, i));
    await waitPartitionsShared();
    idleCpuCores = await measureIdleCpu(natsPids, questdbPids, IDLE_SAMPLE_MS);
    // Everything counts from the first publish: the hubs drain while the backlog is written (about 2 s of it).
    serversBefore = { nats: cpuSecondsOf(natsPids), questdb: cpuSecondsOf(questdbPids) };
    for (const hub of hubs) cpuBefore.push(sampleProcess(hub.child.pid!).cpuSeconds);
    drainStart = Date.now();
    await publishBacklog();
  } else {
    // One hub first, so that streams, tables and the rule bucket exist and every partition is claimed
    // (freshStart=new: the claim covers what EVENTS held before this backlog); stopped so that the backlog builds up.
    const setupHub = await startHub('both', 0);
    await waitPartitionsShared();
    await setupHub.stop();
    analyticsPorts.length = 0;
    await publishBacklog();
    idleCpuCores = await measureIdleCpu(natsPids, questdbPids, IDLE_SAMPLE_MS);

    say(`starting ${roles.length} hub process(es) (${roles.join(', ')}) to drain it...`);
    // The servers' CPU counts from before the first hub starts; each hub's from when it answered its health check, so
    // that N processes are not charged N start-ups (module loading, JIT), and a hub that started draining while the
    // next was still starting is charged for that work.
    serversBefore = { nats: cpuSecondsOf(natsPids), questdb: cpuSecondsOf(questdbPids) };
    for (const [i, role] of roles.entries()) {
      const hub = await startHub(role, i);
      cpuBefore.push(sampleProcess(hub.child.pid!).cpuSeconds);
      hubs.push(hub);
      if (i === 0) drainStart = Date.now();
    }
  }
  const rawRows = async () => {
    const [telemetry] = await sql<[number]>(`select count() from device_telemetry where agent_id = '${agentId}'`);
    const [app] = await sql<[number]>(`select count() from app_events where agent_id = '${agentId}'`);
    return Number(telemetry?.[0] ?? 0) + Number(app?.[0] ?? 0);
  };
  const hasAnalytics = roles.some((role) => role !== 'raw');
  const hasRaw = roles.some((role) => role !== 'analytics');
  const timeoutMs = options.timeoutMs ?? 600_000;
  let rawDoneAt = hasRaw ? 0 : -1;
  let analyticsDoneAt = hasAnalytics ? 0 : -1;
  let peakRss = 0;
  let timedOut = false;
  for (;;) {
    peakRss = Math.max(peakRss, ...hubs.map((h) => sampleProcess(h.child.pid!).rssBytes));
    if (!rawDoneAt && (await rawRows()) >= totalEvents) rawDoneAt = Date.now();
    if (!analyticsDoneAt) {
      const covered = await Promise.all(
        analyticsPorts.map(async (port) => {
          // A hub busy with a long synchronous stretch may not answer; that poll counts as "not done yet".
          const health = (await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5000) })
            .then((response) => response.json())
            .catch(() => ({}))) as { analytics?: { partitions: Array<{ streamSeq: number }> } };
          return health.analytics?.partitions ?? [];
        }),
      );
      const partitions = covered.flat();
      // A partition is done when its snapshot covers the last message of this run that went to it; the slowest
      // partition's snapshot reaches at least lastSeq minus the other partitions' tail, so compare to lastSeq - 100.
      if (partitions.length === DRAIN_PARTITIONS && Math.min(...partitions.map((p) => p.streamSeq)) >= lastSeq - 100) analyticsDoneAt = Date.now();
    }
    if (rawDoneAt && analyticsDoneAt) break;
    if (Date.now() - drainStart > timeoutMs) {
      timedOut = true;
      break;
    }
    await sleep(200);
  }
  const end = Date.now();
  const hubCpuSecondsEach = hubs.map((h, i) => sampleProcess(h.child.pid!).cpuSeconds - cpuBefore[i]!);
  const natsCpuSeconds = cpuSecondsOf(natsPids) - serversBefore.nats;
  const questdbCpuSeconds = cpuSecondsOf(questdbPids) - serversBefore.questdb;
  const doneSeconds = (at: number) => ((at > 0 ? at : end) - drainStart) / 1000;
  const rawSeconds = rawDoneAt === -1 ? doneSeconds(analyticsDoneAt) : doneSeconds(rawDoneAt);
  const analyticsSeconds = analyticsDoneAt === -1 ? rawSeconds : doneSeconds(analyticsDoneAt);

  let windowResultRows = 0;
  if (hasAnalytics) {
    // QuestDB applies WAL transactions after it acknowledged them; count once window_results caught up (60 s at most).
    for (const until = Date.now() + 60_000; Date.now() < until; await sleep(500)) {
      const [txn] = await sql<[number, number]>(`select writerTxn, sequencerTxn from wal_tables() where name = 'window_results'`);
      if (txn && Number(txn[0]) === Number(txn[1])) break;
    }
    windowResultRows = Number((await sql<[number]>(`select count() from window_results where key like '${agentId}%'`))[0]?.[0] ?? 0);
  }
  const questdbCpuSecondsApplied = cpuSecondsOf(questdbPids) - serversBefore.questdb;

  return {
    measurement: {
      events: totalEvents,
      publishEventsPerSecond,
      rawSeconds,
      analyticsSeconds,
      wholeSeconds: Math.max(rawSeconds, analyticsSeconds),
      hubCpuSeconds: hubCpuSecondsEach.reduce((a, b) => a + b, 0),
      hubCpuSecondsEach,
      natsCpuSeconds,
      questdbCpuSeconds,
      idleCpuCores,
      questdbCpuSecondsApplied,
      hubPeakRssBytes: peakRss,
      windowResultRows,
      timedOut,
    },
    agentId,
    hubs,
    publish,
    makeEvent,
    sql,
    close: () => closeDrain(jsm, hubs, agentId, stateBucket, leasesBucket),
  };
}

async function closeDrain(jsm: JetStreamManager, hubs: ManagedProcess[], agentId: string, stateBucket: string, leasesBucket: string): Promise<void> {
  for (const hub of hubs) await hub.stop(60_000);
  await jsm.streams.purge('EVENTS', { filter: `events.${agentId}.>` }).catch(() => undefined);
  for (const bucket of [stateBucket, leasesBucket]) await jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
  for await (const consumer of jsm.consumers.list('EVENTS')) {
    if (consumer.name.startsWith(`${stateBucket}-`)) await jsm.consumers.delete('EVENTS', consumer.name).catch(() => undefined);
  }
}

const IDLE_SAMPLE_MS = 5000;

/** CPU cores the NATS nodes and QuestDB use over `ms` while nothing is sent to them. */
export async function measureIdleCpu(natsPids: number[], questdbPids: number[], ms: number): Promise<{ nats: number; questdb: number }> {
  const before = { nats: cpuSecondsOf(natsPids), questdb: cpuSecondsOf(questdbPids) };
  const started = performance.now();
  await sleep(ms);
  const seconds = (performance.now() - started) / 1000;
  return {
    nats: Math.round(((cpuSecondsOf(natsPids) - before.nats) / seconds) * 1000) / 1000,
    questdb: Math.round(((cpuSecondsOf(questdbPids) - before.questdb) / seconds) * 1000) / 1000,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
