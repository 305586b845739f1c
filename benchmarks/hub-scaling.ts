/**
 * Does the hub scale out without costing more per event? The same backlog (--events, the hub benchmarks' mix: 8
 * partitions, 500 per message) drained by 1, 2, 3 and 4 hub processes that each run the raw path and the ready rules
 * (+ data quality unless --no-quality) and share the partitions by leases (hub/src/partitions). For each count:
 * events/s, the hubs' CPU-seconds (each from when it answered its health check until the drain was done) and events
 * per hub CPU-second, whose deviation from 1 process must stay within 15 %. On a 2-core machine the events/s cannot
 * grow with the processes; events per CPU-second is what says whether splitting the work adds cost.
 *
 * By default the N hubs start and share the partitions out before the backlog is published (--settled, the steady
 * state of N workers); --during-drain starts them one after the other with the backlog already waiting, so the first
 * drains alone and hands partitions over while draining (what a scale-up in the middle of a backlog costs).
 *
 *   npm run bench:hub-scaling [-- --hubs 1,2,3,4] [--events 200000] [--rounds 1] [--no-quality] [--during-drain]
 */
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { ensureRuntime } from '../scripts/lib/runtime.js';
import { DEFAULT_PORTS, DEFAULT_STACK_DIR, stackStatus, startStack } from '../scripts/lib/stack.js';
import { buildHub, runBacklogDrain } from './lib/hub-drain.js';
import { machineDescription, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({
  options: {
    hubs: { type: 'string', default: '1,2,3,4' },
    events: { type: 'string', default: '200000' },
    /** Rounds over the hub counts (1,2,3,4,1,2,3,4...), so a slow phase of the machine does not hit one count only. */
    rounds: { type: 'string', default: '1' },
    'no-quality': { type: 'boolean', default: false },
    'during-drain': { type: 'boolean', default: false },
  },
});
const settleFirst = !values['during-drain'];
const hubCounts = values.hubs.split(',').map(Number);
const events = Number(values.events);
const rounds = Number(values.rounds);
const quality = !values['no-quality'];
const TOLERANCE_PERCENT = 15;
const say = (line: string) => process.stderr.write(`${line}\n`);

buildHub(say);
const wasRunning = (await stackStatus(DEFAULT_STACK_DIR).catch(() => undefined))?.healthy === true;
const stack = await startStack({ dir: DEFAULT_STACK_DIR, ports: DEFAULT_PORTS, detached: true, runtime: await ensureRuntime(say), log: say });
const nc = await connect({ servers: stack.natsUrls });

interface Drain {
  hubs: number;
  round: number;
  drainSeconds: number;
  eventsPerSecond: number;
  hubCpuSeconds: number;
  hubCpuSecondsEach: number[];
  eventsPerHubCpuSecond: number;
  natsCpuSeconds: number;
  questdbCpuSeconds: number;
  hubPeakRssMB: number;
  timedOut: boolean;
}
const drains: Drain[] = [];
for (let round = 1; round <= rounds; round++) {
  for (const hubs of hubCounts) {
    say(`round ${round}: ${hubs} hub process(es)`);
    const drain = await runBacklogDrain({ stack, nc, events, roles: Array.from({ length: hubs }, () => 'both' as const), quality, say, settleFirst });
    await drain.close();
    const m = drain.measurement;
    drains.push({
      hubs,
      round,
      drainSeconds: Math.round(m.wholeSeconds * 10) / 10,
      eventsPerSecond: Math.round(events / m.wholeSeconds),
      hubCpuSeconds: Math.round(m.hubCpuSeconds * 100) / 100,
      hubCpuSecondsEach: m.hubCpuSecondsEach.map((s) => Math.round(s * 100) / 100),
      eventsPerHubCpuSecond: Math.round(events / m.hubCpuSeconds),
      natsCpuSeconds: Math.round(m.natsCpuSeconds * 100) / 100,
      questdbCpuSeconds: Math.round(m.questdbCpuSeconds * 100) / 100,
      hubPeakRssMB: Math.round(m.hubPeakRssBytes / 2 ** 20),
      timedOut: m.timedOut,
    });
  }
}
await nc.close();
if (!wasRunning) await stack.stop();

// Per hub count over the rounds: events per hub CPU-second of all its drains together (total events / total CPU).
const byCount = hubCounts.map((hubs) => {
  const runs = drains.filter((d) => d.hubs === hubs);
  const cpu = runs.reduce((sum, d) => sum + d.hubCpuSeconds, 0);
  const seconds = runs.reduce((sum, d) => sum + d.drainSeconds, 0);
  return { hubs, eventsPerSecond: Math.round((events * runs.length) / seconds), hubCpuSeconds: Math.round((cpu / runs.length) * 100) / 100, eventsPerHubCpuSecond: Math.round((events * runs.length) / cpu) };
});
const baseline = byCount.find((c) => c.hubs === 1) ?? byCount[0]!;
const summary = byCount.map((c) => ({ ...c, deviationFromOnePercent: Math.round(((c.eventsPerHubCpuSecond - baseline.eventsPerHubCpuSecond) / baseline.eventsPerHubCpuSecond) * 1000) / 10 }));
const maxDeviationPercent = Math.max(...summary.map((c) => Math.abs(c.deviationFromOnePercent)));
const setup =
  `${events.toLocaleString('en-US')} events backlog (8 partitions, 500 per message) drained by N compiled hub processes, each raw rows + 7 ready rules` +
  `${quality ? ' + 3 quality rules' : ''}, partitions shared by leases ${settleFirst ? 'before the backlog was published (settled)' : 'while draining (hubs started one after the other on a waiting backlog)'}; ${rounds} round(s); 3-node JetStream R3 and QuestDB on the same machine; ${machineDescription()}`;
// A drain that timed out did not process the whole backlog: its events per CPU-second mean nothing.
const timedOut = drains.filter((d) => d.timedOut).length;
const withinTolerance = timedOut === 0 && maxDeviationPercent <= TOLERANCE_PERCENT;
const file = writeResults('hub-scaling', { date: new Date().toISOString(), setup, mode: settleFirst ? 'settled' : 'during-drain', tolerancePercent: TOLERANCE_PERCENT, maxDeviationPercent, withinTolerance, summary, drains });

process.stdout.write(`\nHub scaling: the same backlog, 1..N hub processes. Setup: ${setup}\n\n`);
process.stdout.write(
  table(
    summary.map((c) => ({
      'hub processes': c.hubs,
      'events/s': c.eventsPerSecond.toLocaleString('en-US'),
      'hub CPU-s': c.hubCpuSeconds,
      'events / hub CPU-s': c.eventsPerHubCpuSecond.toLocaleString('en-US'),
      'vs 1 process %': c.deviationFromOnePercent,
    })),
  ) +
    `\n\nmax deviation from 1 process: ${maxDeviationPercent} % (${withinTolerance ? 'within' : 'NOT within'} ${TOLERANCE_PERCENT} %${timedOut > 0 ? `; ${timedOut} drain(s) timed out` : ''})\nwritten to ${file}\n`,
);
