/**
 * Window results checked against an offline run: the same operators over the same input, partition by partition in
 * stream order, give `key|windowStart|aggregate -> value`; QuestDB's `window_results` rows give the same map.
 */
import assert from 'node:assert/strict';
import { OperatorSet } from '../../hub/src/analytics/operator-set.js';
import type { Rule, WatermarkSettings, WindowResult } from '../../hub/src/operators/index.js';
import { partitionOf, type EventBatch, type WireEvent } from '../../shared/wire.js';
import { query, waitFor } from './questdb.js';

/**
 * A rule for these checks: count and sum of `value` per device in tumbling windows (10 s, no allowed lateness unless
 * told), telemetry of `metric` only. With an allowed lateness, late events revise closed windows (new revisions).
 */
export function countAndSumRule(name: string, metric: string, options: { sizeMs?: number; allowedLatenessMs?: number } = {}): Rule {
  return {
    kind: 'window',
    name,
    eventType: 'device.telemetry',
    keyBy: 'key',
    where: { metric },
    window: { type: 'tumbling', sizeMs: options.sizeMs ?? 10_000 },
    aggregates: [
      { name: 'n', fn: 'count' },
      { name: 'total', fn: 'sum', field: 'value' },
    ],
    allowedLatenessMs: options.allowedLatenessMs ?? 0,
  } as unknown as Rule;
}

/** The hub's default watermark settings. */
const DEFAULT_WATERMARK: WatermarkSettings = { maxOutOfOrdernessMs: 5000, idleTimeoutMs: 30000, advanceWhenAllIdle: false };

/**
 * The rule over messages in stream order, one OperatorSet per partition as the hub runs it. Given the messages a
 * stream really holds, the comparison is exact, late events included.
 */
export function offlineWindowValuesOf(
  rule: Rule,
  messages: Iterable<{ seq: number; batch: EventBatch }>,
  watermark: WatermarkSettings = DEFAULT_WATERMARK,
): Map<string, number> {
  const sets = new Map<number, OperatorSet>();
  const expected = new Map<string, number>();
  for (const { seq, batch } of messages) {
    let set = sets.get(batch.partition);
    if (!set) sets.set(batch.partition, (set = new OperatorSet([rule], watermark)));
    for (const output of set.apply(batch, seq, 0) ?? []) {
      if (output.type !== 'window_result') continue;
      const result = output as WindowResult;
      for (const [name, value] of Object.entries(result.values)) expected.set(`${result.key}|${result.windowStart}|${name}`, Number(value));
    }
  }
  return expected;
}

/** The same over events in the order sent, each its own message on the partition of its key. */
export function offlineWindowValues(rule: Rule, events: readonly WireEvent[], partitions: number, agent: string): Map<string, number> {
  return offlineWindowValuesOf(
    rule,
    events.map((event, i) => ({ seq: i + 1, batch: { v: 1, agent, partition: partitionOf(event.key, partitions), first: 0, last: 0, events: [event] } as EventBatch })),
  );
}

/**
 * The rule's window values in QuestDB equal `expected` (waiting up to 60 s for them to arrive). With `exhaustive`,
 * QuestDB must have no window of the rule beyond them either.
 */
export async function assertWindowsEqual(questdbHttp: string, rule: Rule, expected: ReadonlyMap<string, number>, options: { exhaustive?: boolean } = {}): Promise<void> {
  const got = await waitFor(() => storedWindowValues(questdbHttp, rule.name, ['n', 'total']), (m) => [...expected].every(([k, v]) => m.get(k) === v), 60_000, 500);
  const wrong = [...expected].filter(([k, v]) => got.get(k) !== v);
  assert.deepEqual(
    wrong.slice(0, 8).map(([k, v]) => `${k}: expected ${v}, got ${got.get(k)}`),
    [],
    `${wrong.length} of ${expected.size} window values differ from the offline run`,
  );
  if (options.exhaustive) {
    const extra = [...got.keys()].filter((k) => !expected.has(k));
    assert.deepEqual(extra.slice(0, 5), [], 'no window the offline run does not have');
  }
}

/** The rule's visible rows in `window_results`, as the same map (one entry per aggregate column). */
export async function storedWindowValues(questdbHttp: string, ruleName: string, aggregates: readonly string[]): Promise<Map<string, number>> {
  const rows = await query<Record<string, unknown> & { key: string; ts: string }>(
    questdbHttp,
    `select key, ts, ${aggregates.join(', ')} from window_results where rule = '${ruleName}' and not superseded`,
  );
  const got = new Map<string, number>();
  for (const row of rows) for (const aggregate of aggregates) got.set(`${row.key}|${Date.parse(row.ts)}|${aggregate}`, Number(row[aggregate]));
  return got;
}
