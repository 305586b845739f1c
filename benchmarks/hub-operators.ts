/**
 * The hub's operators alone, without I/O: how fast one thread applies the ready rules of hub/rules to the events
 * the hub benchmark publishes, and how long a checkpoint's snapshot (state -> msgpack -> deflate) takes. This is
 * the analytics ceiling of one hub worker thread; hub-throughput.ts measures the whole path.
 *
 * The data-quality rules of schemas/<type>/quality.json run too, unless --no-quality.
 *
 *   npx tsx benchmarks/hub-operators.ts [--events 400000] [--checkpoint-every 20000] [--no-quality]
 */
import { parseArgs } from 'node:util';
import { encodeSnapshot } from '../hub/src/analytics/kv-snapshot-store.js';
import { OperatorSet } from '../hub/src/analytics/operator-set.js';
import { readRuleFiles } from '../hub/src/rules/kv-rule-store.js';
import { readQualityRules } from '../hub/src/quality/quality-rules.js';
import type { EventBatch } from '../shared/wire.js';
import { mixEvent } from './lib/hub-event-mix.js';
import { machineDescription, table, writeResults } from './lib/measure.js';

const { values } = parseArgs({
  options: { events: { type: 'string', default: '400000' }, 'checkpoint-every': { type: 'string', default: '20000' }, 'no-quality': { type: 'boolean', default: false } },
});
const quality = !values['no-quality'];
const totalEvents = Number(values.events);
const checkpointEvery = Number(values['checkpoint-every']);
const PER_BATCH = 500;

const rules = [
  ...readRuleFiles(new URL('../hub/rules', import.meta.url).pathname).rules,
  ...(quality ? readQualityRules(new URL('../schemas', import.meta.url).pathname).rules : []),
].map(({ rule }) => rule);
const operators = new OperatorSet(rules, { maxOutOfOrdernessMs: 5000, idleTimeoutMs: 30000, advanceWhenAllIdle: true });

const start = Date.now() - 3_600_000;
const batches: EventBatch[] = [];
for (let i = 0; i < totalEvents; i += PER_BATCH) {
  const events = Array.from({ length: Math.min(PER_BATCH, totalEvents - i) }, (_, j) => mixEvent(i + j, start + Math.floor(((i + j) / totalEvents) * 3_500_000), 'bench'));
  batches.push({ v: 1, agent: 'bench', partition: 0, first: i, last: i, events });
}

let applyMs = 0;
let snapshotMs = 0;
let encodeMs = 0;
let outputs = 0;
let checkpoints = 0;
let lastBytes = 0;
let sinceCheckpoint = 0;
for (const [seq, batch] of batches.entries()) {
  const t0 = performance.now();
  outputs += operators.apply(batch, seq + 1, Date.now())?.length ?? 0;
  applyMs += performance.now() - t0;
  sinceCheckpoint += batch.events.length;
  if (sinceCheckpoint >= checkpointEvery) {
    sinceCheckpoint = 0;
    const t1 = performance.now();
    const snapshot = operators.snapshot();
    const t2 = performance.now();
    lastBytes = encodeSnapshot(snapshot).length;
    encodeMs += performance.now() - t2;
    snapshotMs += t2 - t1;
    checkpoints++;
  }
}
const result = {
  date: new Date().toISOString(),
  setup: `${rules.length} rules of hub/rules${quality ? ' and schemas/*/quality.json' : ' (data quality off)'}, ${totalEvents} events (2000 devices, 5000 users, 1 h of event time), one thread; ${machineDescription()}`,
  applyEventsPerSecond: Math.round(totalEvents / (applyMs / 1000)),
  outputs,
  checkpoints,
  snapshotMsPerCheckpoint: Math.round(snapshotMs / Math.max(1, checkpoints)),
  encodeMsPerCheckpoint: Math.round(encodeMs / Math.max(1, checkpoints)),
  lastSnapshotKB: Math.round(lastBytes / 1024),
  rssMB: Math.round(process.memoryUsage().rss / 2 ** 20),
};
const file = writeResults('hub-operators', result);
process.stdout.write(
  `\nHub operators, no I/O. ${result.setup}\n\n` +
    table([
      {
        'apply events/s': result.applyEventsPerSecond.toLocaleString('en-US'),
        outputs: result.outputs.toLocaleString('en-US'),
        [`snapshot ms / checkpoint (every ${checkpointEvery})`]: result.snapshotMsPerCheckpoint,
        'msgpack+deflate ms / checkpoint': result.encodeMsPerCheckpoint,
        'last snapshot KB': result.lastSnapshotKB,
        'RSS MB': result.rssMB,
      },
    ]) +
    `\n\nwritten to ${file}\n`,
);
