/**
 * Hub workers killed and frozen under load (issue 6), on the real stack. The hubs run the raw path (the shared
 * durable `hub-raw`) and the rules (partitions leased between workers) in one process, like a default deployment.
 *
 * (A) kill -9 exactly between the QuestDB write and the JetStream ack, many times: armed workers SIGKILL themselves
 *     (FAULT_HUB_KILL_AFTER_WRITE, hub/src/fault-injection.ts) after a raw flush, after a checkpoint's QuestDB flush,
 *     or after its snapshot save, each before the acks; each is restarted, and an unarmed worker stays alive.
 *     (Workers armed at the raw point run the raw path only, see below.)
 * (B) a worker frozen with SIGSTOP for longer than the raw consumer's ack wait and the lease TTL: its raw messages are
 *     redelivered to the other worker and its partitions taken over; after SIGCONT it must neither crash nor write
 *     stale window results over newer ones.
 *
 * After each: every event the edge acknowledged is in QuestDB exactly once, and the window results equal an offline
 * run of the same operators over the same input. The rule allows late events, and late readings keep revising closed
 * windows during the faults, so a replay counted twice or an old revision written last would both show. Recovery
 * times are measured and printed, not asserted (only generous liveness bounds are).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import type { KillNotice } from '../../hub/src/fault-injection.js';
import type { PartitionStats } from '../../hub/src/analytics/partition-processor.js';
import type { HealthReport } from '../../hub/src/http-status-server.js';
import type { Rule } from '../../hub/src/operators/index.js';
import { EVENTS_STREAM, type WireEvent } from '../../shared/wire.js';
import { testStack } from '../support/env.js';
import { startAnalyticsHub, startRuleAndAgent, type AnalyticsHub, type RuleAndAgent } from '../support/analytics-hub.js';
import { startAckedLoad, type AckedLoad } from '../support/load.js';
import { LOG_DIR } from '../support/processes.js';
import { assertExactlyOnce, waitFor } from '../support/questdb.js';
import { assertWindowsEqual, countAndSumRule, offlineWindowValues } from '../support/window-check.js';

const stack = testStack();
const PARTITIONS = 8;
const RAW_DURABLE = 'hub-raw';
/** The raw consumer's ack wait for these hubs (default 30 s): a killed or frozen worker's messages come back after it. */
const RAW_ACK_WAIT_MS = 5000;
const DEFAULT_RAW_ACK_WAIT_MS = 30_000;
const LEASE_TTL_MS = 5000;
/** Liveness bounds only, with room for a slow machine; the printed figures are the measurements. */
const RECOVERY_BOUND_MS = 45_000;

/**
 * Every hub of this file: a short ack wait (and the sink timings it requires to be below it) and lease TTL. Raw
 * flushes, output flushes and checkpoints once a second: each QuestDB transaction costs it tens of ms of CPU, and
 * with three or four hubs at the defaults QuestDB alone would take most of a core.
 */
const FAULT_HUB_ENV: Record<string, string> = {
  HUB_CONSUMER__ACKWAITMS: String(RAW_ACK_WAIT_MS),
  HUB_SINK__HOLDONFAILUREMS: '2000',
  HUB_SINK__RETRYMAXMS: '1000',
  HUB_SINK__UNRESOLVEDTIMEOUTMS: '3000',
  HUB_SINK__FLUSHINTERVALMS: '1000',
  HUB_ANALYTICS__LEASETTLMS: String(LEASE_TTL_MS),
  HUB_ANALYTICS__CHECKPOINTINTERVALMS: '1000',
  HUB_ANALYTICS__OUTPUTFLUSHINTERVALMS: '1000',
};

/** 2 s windows and 15 s allowed lateness: windows close every 2 s of event time, and late readings revise them. */
const windowRule = (name: string, metric: string): Rule => countAndSumRule(name, metric, { sizeMs: 2000, allowedLatenessMs: 15_000 });
/**
 * How far behind the clock the late readings are, in turn: all past the watermark (5 s behind the newest) and well
 * within the allowed lateness, so a window gets revisions for several seconds after it closed.
 */
const LATE_BY_MS = [6000, 7500, 9000, 10_500, 12_000];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** `promise`'s value, or undefined if it takes longer than `ms` (the timer is cleared either way). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

let nc: NatsConnection;
let jsm: JetStreamManager;
const rigs: RuleAndAgent[] = [];
const hubs: AnalyticsHub[] = [];
const loads: Array<{ stop(): Promise<unknown> }> = [];

before(async () => {
  nc = await connect({ servers: stack.natsUrls });
  jsm = await jetstreamManager(nc);
});

after(async () => {
  for (const load of loads) await load.stop().catch(() => undefined);
  for (const hub of hubs) {
    hub.process.child.kill('SIGCONT'); // a frozen process would ignore SIGTERM until its stop timeout
    await hub.process.stop();
  }
  // Hubs started later by other tests set their own ack wait, but leave the shared durable as the defaults have it.
  await jsm.consumers.update(EVENTS_STREAM, RAW_DURABLE, { ack_wait: nanos(DEFAULT_RAW_ACK_WAIT_MS) }).catch(() => undefined);
  for (const rig of rigs) await rig.stop().catch(() => undefined);
  await nc?.close();
});

/**
 * Readings of `metric` for the window rule over HTTP, one per device every `intervalMs`, stamped with the clock, plus
 * two late readings per step (LATE_BY_MS behind, devices in turn). Sent one request at a time and recorded in the
 * order sent, which is each partition's stream order: the offline run replays them in that order.
 */
function startWindowLoad(options: { agentId: string; metric: string; httpPort: number; devices: number; intervalMs: number }) {
  const events: WireEvent[] = [];
  let running = true;
  let failure: string | undefined;
  const loop = (async () => {
    for (let step = 0; running; step++) {
      const now = Date.now();
      const readings: Array<{ id: string; device: string; timestamp: number }> = [];
      for (let d = 0; d < options.devices; d++) readings.push({ id: `${options.agentId}-w${step}-${d}`, device: `${options.agentId}-d${d}`, timestamp: now + d });
      for (let i = 0; i < 2; i++) {
        const lateDevice = (step * 2 + i) % options.devices;
        const lateBy = LATE_BY_MS[(step * 2 + i) % LATE_BY_MS.length]!;
        readings.push({ id: `${options.agentId}-late${step}-${i}`, device: `${options.agentId}-d${lateDevice}`, timestamp: now - lateBy + lateDevice });
      }
      const bodies = readings.map((r, i) => ({ event_id: r.id, device_id: r.device, timestamp: r.timestamp, metric: options.metric, value: (step * 7 + i) % 13 }));
      const response = await fetch(`http://127.0.0.1:${options.httpPort}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: bodies.map((b) => JSON.stringify({ type: 'device.telemetry', ...b })).join('\n'),
        signal: AbortSignal.timeout(30_000),
      }).catch((error: unknown) => ({ status: 0, error }));
      // Not retried: a retry of a request the agent did commit would put the readings into the stream twice, and
      // the rules (unlike QuestDB's dedup keys) would count them twice. The agent is never the one at fault here.
      if (response.status !== 200) {
        failure = `window load: HTTP ${response.status} at step ${step}`;
        break;
      }
      for (const body of bodies) events.push({ id: body.event_id, type: 'device.telemetry', sv: 1, key: body.device_id, ts: body.timestamp * 1000, its: 0, src: 'http', body });
      await sleep(options.intervalMs);
    }
  })();
  return {
    events,
    async stop() {
      running = false;
      await loop;
      assert.equal(failure, undefined, failure);
    },
  };
}

/** The rig, the acked load (MQTT QoS 1 + HTTP) and the window load of one test, all through one agent. */
async function startLoads(agentId: string, rule: Rule, metric: string): Promise<{ rig: RuleAndAgent; acked: AckedLoad; windows: ReturnType<typeof startWindowLoad> }> {
  const rig = await startRuleAndAgent(rule, agentId);
  rigs.push(rig);
  const acked = startAckedLoad({ runId: agentId, mqttPort: rig.ports.mqtt, httpPort: rig.ports.http, devices: 4, intervalMs: 40, httpBatch: 10, eventTime: 'clock' });
  loads.push(acked);
  const windows = startWindowLoad({ agentId, metric, httpPort: rig.ports.http, devices: 12, intervalMs: 150 });
  loads.push(windows);
  return { rig, acked, windows };
}

/** Every acknowledged event once in QuestDB, and the window results equal to the offline run. */
async function assertExactlyOnceAndWindows(label: string, agentId: string, rule: Rule, acked: Set<string>, windowEvents: readonly WireEvent[]): Promise<void> {
  const ids = new Set([...acked, ...windowEvents.map((e) => e.id)]);
  const started = Date.now();
  await assertExactlyOnce(stack.questdbHttp, agentId, ids);
  const expected = offlineWindowValues(rule, windowEvents, PARTITIONS, agentId);
  assert.ok(expected.size > 100, `the offline run closes windows (${expected.size} values)`);
  await assertWindowsEqual(stack.questdbHttp, rule, expected);
  process.stderr.write(
    `[${label}] ${ids.size} acknowledged events in QuestDB once each, ${expected.size / 2} windows equal to the offline run ` +
      `(checked ${seconds(Date.now() - started)} after the load)\n`,
  );
}

/** A hub of this file with what the monitor last saw on its /healthz. */
interface Watched {
  name: string;
  hub: AnalyticsHub;
  owned: number[];
  partitions: PartitionStats[];
  lastFlushAt: number | undefined;
}

/**
 * Polls every hub's /healthz and the raw consumer every 200 ms, and resolves the recovery waits registered with it:
 * "every message delivered before T is acked" and "these partitions are owned by a live worker that checkpointed
 * after T".
 */
class Monitor {
  readonly watched = new Set<Watched>();
  private timer: NodeJS.Timeout | undefined;
  private waits: Array<{ check: () => boolean; resolve: () => void }> = [];
  private ackFloor = 0;
  /** Most messages the raw consumer had redelivered and not yet acked at one poll (reset by the test). */
  peakRedelivered = 0;

  start(): void {
    const tick = async () => {
      await this.poll().catch(() => undefined);
      for (const wait of [...this.waits]) {
        if (wait.check()) {
          this.waits.splice(this.waits.indexOf(wait), 1);
          wait.resolve();
        }
      }
      if (this.timer) this.timer = setTimeout(() => void tick(), 200);
    };
    this.timer = setTimeout(() => void tick(), 0);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  watch(name: string, hub: AnalyticsHub): Watched {
    const entry: Watched = { name, hub, owned: [], partitions: [], lastFlushAt: undefined };
    this.watched.add(entry);
    return entry;
  }

  private async poll(): Promise<void> {
    const info = await jsm.consumers.info(EVENTS_STREAM, RAW_DURABLE);
    this.ackFloor = info.ack_floor.stream_seq;
    this.peakRedelivered = Math.max(this.peakRedelivered, info.num_redelivered);
    await Promise.all(
      [...this.watched].map(async (w) => {
        if (!alive(w)) return;
        const report = (await fetch(`http://127.0.0.1:${w.hub.port}/healthz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.json())) as HealthReport;
        w.owned = report.analytics?.owned ?? [];
        w.partitions = report.analytics?.partitions ?? [];
        if (report.worker.lastFlush?.ok) w.lastFlushAt = report.worker.lastFlush.at;
      }),
    ).catch(() => undefined);
  }

  /** The raw consumer's delivered stream sequence now: everything the worker at fault can have held. */
  async delivered(): Promise<number> {
    return (await jsm.consumers.info(EVENTS_STREAM, RAW_DURABLE)).delivered.stream_seq;
  }

  /** Resolves with the time when every message up to `seq` is acked (by any worker). */
  ackedThrough(seq: number): Promise<number> {
    return this.until(() => this.ackFloor >= seq);
  }

  /** Resolves with the time when each partition is owned by a live hub other than `except` that checkpointed after `since`. */
  takenOver(partitions: readonly number[], since: number, except: Watched): Promise<number> {
    return this.until(() =>
      partitions.every((p) =>
        [...this.watched].some((w) => w !== except && alive(w) && w.owned.includes(p) && (w.partitions.find((s) => s.partition === p)?.lastCheckpointAt ?? 0) > since),
      ),
    );
  }

  until(check: () => boolean): Promise<number> {
    return new Promise((resolve) => this.waits.push({ check, resolve: () => resolve(Date.now()) }));
  }
}

const alive = (w: Watched) => w.hub.process.child.exitCode === null && w.hub.process.child.signalCode === null;

/** Size of a log file now (logs are appended across runs), to read only what a process writes after it. */
const logSize = (logFile: string) => (existsSync(logFile) ? statSync(logFile).size : 0);

/** The hub's stderr line written right before it killed itself, after `offset` (undefined if it died otherwise). */
async function killNotice(logFile: string, offset: number): Promise<KillNotice | undefined> {
  // The test reads the child's output through a pipe into the log file: give the last line a moment to land.
  for (let attempt = 0; attempt < 30; attempt++) {
    if (existsSync(logFile)) {
      const line = readFileSync(logFile)
        .subarray(offset)
        .toString('utf8')
        .split('\n')
        .find((l) => l.includes('"fault":"kill_after_write"'));
      if (line) return JSON.parse(line) as KillNotice;
    }
    await sleep(100);
  }
  return undefined;
}

/** Waits (bounded) until the hubs own every partition between them, each at most once. */
async function waitAllOwned(monitor: Monitor, what: string): Promise<void> {
  const owned = await waitFor(
    async () => [...monitor.watched].filter(alive).flatMap((w) => w.owned),
    (o) => o.length === PARTITIONS && new Set(o).size === PARTITIONS,
    60_000,
    200,
  );
  assert.deepEqual([...owned].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7], `${what}: each partition owned exactly once`);
}

function summary(label: string, values: number[]): string {
  if (values.length === 0) return `${label}: -`;
  const sorted = [...values].sort((a, b) => a - b);
  return `${label}: min ${seconds(sorted[0]!)}, median ${seconds(sorted[Math.floor(sorted.length / 2)]!)}, max ${seconds(sorted[sorted.length - 1]!)}`;
}

describe('hub worker faults under load', () => {
  test('kill -9 between the QuestDB write and the ack, 10-12 times (raw flush, checkpoint write, snapshot save): nothing lost, nothing twice, windows exact', { timeout: 300_000 }, async () => {
    const run = `kill-${Date.now().toString(36)}`;
    const agentId = `hwf-${run}`;
    const metric = `hwf_${run.replace(/-/g, '_')}`;
    const rule = windowRule(`hwf-${run}`, metric);
    /** Kills to aim for (armed workers still running then are stopped gracefully) and to require. */
    const KILLS = 12;
    const MIN_KILLS = 10;
    const KILL_PHASE_BOUND_MS = 180_000;
    const POINTS = ['raw', 'checkpoint-written', 'checkpoint-saved'] as const;
    const monitor = new Monitor();
    monitor.start();
    try {
      // The unarmed worker, alive throughout; it claims every partition before the load (freshStart=new).
      const survivor = monitor.watch('survivor', await startAnalyticsHub('hwf-survivor', run, FAULT_HUB_ENV));
      hubs.push(survivor.hub);
      await waitAllOwned(monitor, 'before the load');
      const { acked, windows } = await startLoads(agentId, rule, metric);
      const loadStarted = Date.now();

      // Three armed workers, each restarted (same worker id) as soon as it killed itself; each incarnation is armed at
      // one point, in turn, so the three points are hit about equally often. Three, because a restart takes 4-5 s
      // on an idle machine (loading the hub) and 15-20 s when the two cores are busy.
      const kills: Array<{ notice: KillNotice; rawAckedAfterMs: Promise<number>; partitions: number[]; takenOverAfterMs: Promise<number> | undefined }> = [];
      let incarnations = 0;
      let enough!: () => void;
      const enoughKills = new Promise<void>((resolve) => (enough = resolve));
      const phaseTimer = setTimeout(() => enough(), KILL_PHASE_BOUND_MS);
      const armedLoop = async (slot: string) => {
        while (kills.length < KILLS && Date.now() - loadStarted < KILL_PHASE_BOUND_MS) {
          const index = incarnations++;
          const point = POINTS[index % POINTS.length]!;
          // raw: the 3rd-5th flush after start (about a second of consuming); checkpoints: the 1st or 2nd with
          // something to ack (once the worker holds partitions).
          const nth = point === 'raw' ? 3 + (index % 3) : 1 + (index % 2);
          const name = `hwf-${slot}${index}`;
          const logFile = join(LOG_DIR, `hub-${name}.log`);
          const logOffset = logSize(logFile);
          let watched: Watched | undefined;
          try {
            // Armed at the raw point, it runs the raw path only: holding partitions too, it would take some over and
            // die with them before their first checkpoint, delaying their recovery for reasons of the test's making.
            const hub = await startAnalyticsHub(name, run, {
              ...FAULT_HUB_ENV,
              HUB_ANALYTICS__WORKERID: `hwf-${slot}-${run}`,
              ...(point === 'raw' ? { HUB_ANALYTICS__ENABLED: 'false' } : {}),
              FAULT_HUB_KILL_AFTER_WRITE: `${point}:${nth}`,
            });
            hubs.push(hub);
            watched = monitor.watch(name, hub);
            await Promise.race([hub.process.exited, enoughKills]);
            if (alive(watched)) {
              // Enough kills meanwhile: this one leaves gracefully and does not count.
              monitor.watched.delete(watched);
              await hub.process.stop();
              return;
            }
          } catch (error) {
            // Killed itself before its /healthz answered 200 (possible for an early raw flush): still a kill.
            if (!/exited .* before it was healthy/.test(String(error))) throw error;
          }
          const delivered = await monitor.delivered();
          const notice = await killNotice(logFile, logOffset);
          assert.ok(notice, `${name} died without the fault hook's notice (a crash?); see ${logFile}`);
          assert.equal(notice.point, point);
          const partitions = [...new Set([...(watched?.owned ?? []), ...(typeof notice.partition === 'number' ? [notice.partition] : [])])];
          const rawAckedAfterMs = monitor.ackedThrough(delivered).then((t) => t - notice.at);
          const takenOverAfterMs = partitions.length > 0 && watched ? monitor.takenOver(partitions, notice.at, watched).then((t) => t - notice.at) : undefined;
          kills.push({ notice, rawAckedAfterMs, partitions, takenOverAfterMs });
          if (kills.length >= KILLS) enough();
          if (watched) monitor.watched.delete(watched);
        }
      };
      await Promise.all([armedLoop('x'), armedLoop('y'), armedLoop('z')]);
      clearTimeout(phaseTimer);
      const killPhaseMs = Date.now() - loadStarted;
      assert.ok(kills.length >= MIN_KILLS, `${kills.length} kills within ${seconds(KILL_PHASE_BOUND_MS)} (${incarnations} incarnations)`);
      // The last recoveries happen under load too; then the load stops.
      const bounded = async (p: Promise<number>, what: string): Promise<number> => {
        const value = await within(p, RECOVERY_BOUND_MS);
        assert.ok(value !== undefined, `${what}: not done ${RECOVERY_BOUND_MS / 1000} s after the last kill`);
        return value;
      };
      const rawAfter = await Promise.all(kills.map((k, i) => bounded(k.rawAckedAfterMs, `kill ${i + 1}: raw messages acked`)));
      const takeovers = await Promise.all(kills.map((k, i) => (k.takenOverAfterMs ? bounded(k.takenOverAfterMs, `kill ${i + 1}: partitions taken over`) : undefined)));
      await acked.stop();
      await windows.stop();
      await waitAllOwned(monitor, 'after the kills');

      process.stderr.write(`[kill-after-write] ${kills.length} kills in ${seconds(killPhaseMs)} of load (${incarnations} incarnations of 3 armed workers, 1 unarmed)\n`);
      kills.forEach((k, i) => {
        const n = k.notice;
        const at = n.point === 'raw' ? `seqs ${String(n.firstSeq)}-${String(n.lastSeq)} (${String(n.rows)} rows)` : `partition ${String(n.partition)} at seq ${String(n.streamSeq)}`;
        process.stderr.write(
          `  kill ${String(i + 1).padStart(2)} after ${n.point.padEnd(18)} ${at}: every message delivered before it acked again after ${seconds(rawAfter[i]!)}` +
            (takeovers[i] === undefined ? '' : `; partitions ${k.partitions.join(',')} taken over and checkpointed after ${seconds(takeovers[i]!)}`) +
            '\n',
        );
      });
      process.stderr.write(`  ${summary('raw: delivered-before-kill acked again after', rawAfter)} (ack wait ${seconds(RAW_ACK_WAIT_MS)})\n`);
      process.stderr.write(`  ${summary('rules: partitions taken over after', takeovers.filter((t): t is number => t !== undefined))} (lease TTL ${seconds(LEASE_TTL_MS)})\n`);
      for (const point of POINTS) assert.ok(kills.some((k) => k.notice.point === point), `at least one kill after ${point}`);
      assert.ok(acked.acked.size > 1000, `enough load was acknowledged (${acked.acked.size})`);
      await assertExactlyOnceAndWindows('kill-after-write', agentId, rule, acked.acked, windows.events);
    } finally {
      monitor.stop();
    }
  });

  test('SIGSTOP longer than the ack wait and the lease TTL, then SIGCONT: redelivered work written once, no stale results, no crash', { timeout: 180_000 }, async () => {
    const run = `stop-${Date.now().toString(36)}`;
    const agentId = `hwf-${run}`;
    const metric = `hwf_${run.replace(/-/g, '_')}`;
    const rule = windowRule(`hwf-${run}`, metric);
    const STOP_MS = 12_000;
    const monitor = new Monitor();
    monitor.start();
    try {
      // The worker to freeze writes its window results only at its checkpoints, every 10 s on the clock, and is frozen
      // 1 s before one: it then holds 9 s of results unwritten, which late readings will revise while it is frozen.
      // Written after it resumes, they would replace the other worker's newer revisions.
      const CHECKPOINT_MS = 10_000;
      const frozen = monitor.watch(
        'frozen',
        await startAnalyticsHub('hwf-frozen', run, {
          ...FAULT_HUB_ENV,
          HUB_ANALYTICS__CHECKPOINTINTERVALMS: String(CHECKPOINT_MS),
          HUB_ANALYTICS__OUTPUTFLUSHINTERVALMS: '600000',
        }),
      );
      hubs.push(frozen.hub);
      await waitAllOwned(monitor, 'first worker');
      const other = monitor.watch('other', await startAnalyticsHub('hwf-other', run, FAULT_HUB_ENV));
      hubs.push(other.hub);
      await waitFor(async () => [frozen.owned.length, other.owned.length], ([a, b]) => a! > 0 && b! > 0 && a! + b! === PARTITIONS, 60_000, 200);
      const { acked, windows } = await startLoads(agentId, rule, metric);
      // At least 12 s of load (windows close from about 7 s on), then 1 s before a checkpoint of the frozen worker.
      const stopAt = Math.ceil((Date.now() + 12_000 + 1000) / CHECKPOINT_MS) * CHECKPOINT_MS - 1000;
      await sleep(stopAt - Date.now());

      const heldPartitions = [...frozen.owned];
      const pid = frozen.hub.process.child.pid!;
      process.kill(pid, 'SIGSTOP');
      const stoppedAt = Date.now();
      let continued = false;
      try {
        const delivered = await monitor.delivered();
        monitor.peakRedelivered = 0;
        const rawAcked = monitor.ackedThrough(delivered);
        const takenOver = monitor.takenOver(heldPartitions, stoppedAt, frozen);
        await sleep(STOP_MS);
        // Frozen for STOP_MS and until the other worker took its partitions over and checkpointed them (bounded):
        // only then can stale results written after SIGCONT overwrite newer ones.
        const takenOverAt = await within(takenOver, RECOVERY_BOUND_MS);
        assert.ok(takenOverAt !== undefined, `its partitions ${heldPartitions.join(',')} were taken over within ${seconds(STOP_MS + RECOVERY_BOUND_MS)} (lease TTL ${seconds(LEASE_TTL_MS)})`);
        // Its raw messages may be written by the other worker during the stop, or by itself after SIGCONT.
        const rawAckedWhileStopped = await within(rawAcked, 1);
        const redeliveredWhileStopped = monitor.peakRedelivered;
        process.kill(pid, 'SIGCONT');
        continued = true;
        const continuedAt = Date.now();
        const stoppedForMs = continuedAt - stoppedAt;
        const rawAckedAt = await within(rawAcked, RECOVERY_BOUND_MS);
        assert.ok(rawAckedAt !== undefined, 'every raw message delivered before SIGSTOP is acked in the end');
        // Resumed: it writes raw rows again, and takes its share of the partitions back (a new generation each).
        const writingAt = await within(monitor.until(() => (frozen.lastFlushAt ?? 0) > continuedAt), RECOVERY_BOUND_MS);
        const shareAt = await within(
          monitor.until(() => frozen.owned.length > 0 && frozen.owned.every((p) => (frozen.partitions.find((s) => s.partition === p)?.lastCheckpointAt ?? 0) > continuedAt)),
          RECOVERY_BOUND_MS,
        );
        assert.ok(writingAt !== undefined, 'the resumed worker writes raw rows again');
        assert.ok(shareAt !== undefined, 'the resumed worker owns and checkpoints partitions again');
        await sleep(3000);
        await acked.stop();
        await windows.stop();
        assert.ok(alive(frozen), 'the resumed worker did not crash');
        assert.ok(alive(other), 'the other worker did not crash');
        await waitAllOwned(monitor, 'after the resume');
        process.stderr.write(
          `[sigstop] frozen ${seconds(stoppedForMs)} holding partitions ${heldPartitions.join(',')}: every raw message delivered before SIGSTOP acked ` +
            `${seconds(rawAckedAt - stoppedAt)} after it (${rawAckedWhileStopped === undefined ? 'only after SIGCONT' : 'during the stop'}; ` +
            `up to ${redeliveredWhileStopped} messages redelivered at once, ack wait ${seconds(RAW_ACK_WAIT_MS)}); its partitions taken over and checkpointed after ` +
            `${seconds(takenOverAt - stoppedAt)} (lease TTL ${seconds(LEASE_TTL_MS)}); after SIGCONT it wrote raw rows again after ` +
            `${seconds(writingAt - continuedAt)} and owned and checkpointed ${frozen.owned.length} partitions after ${seconds(shareAt - continuedAt)}\n`,
        );
        assert.ok(acked.acked.size > 1000, `enough load was acknowledged (${acked.acked.size})`);
        await assertExactlyOnceAndWindows('sigstop', agentId, rule, acked.acked, windows.events);
      } finally {
        if (!continued) process.kill(pid, 'SIGCONT');
      }
    } finally {
      monitor.stop();
    }
  });
});
