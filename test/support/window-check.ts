/**
 * Window results checked against an offline run: the same operators over the same input, partition by partition in
 * stream order, give `key|windowStart|aggregate -> value`; QuestDB's `window_results` rows give the same map.
 */
import { OperatorSet } from '../../hub/src/analytics/operator-set.js';
import type { Rule, WindowResult } from '../../hub/src/operators/index.js';
import { partitionOf, type WireEvent } from '../../shared/wire.js';
import { query } from './questdb.js';

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

export function offlineWindowValues(rule: Rule, events: readonly WireEvent[], partitions: number, agent: string): Map<string, number> {
  const watermark = { maxOutOfOrdernessMs: 5000, idleTimeoutMs: 30000, advanceWhenAllIdle: false };
  const sets = Array.from({ length: partitions }, () => new OperatorSet([rule], watermark));
  const expected = new Map<string, number>();
  let seq = 0;
  for (const event of events) {
    const partition = partitionOf(event.key, partitions);
    for (const output of sets[partition]!.apply({ v: 1, agent, partition, first: 0, last: 0, events: [event] }, ++seq, 0) ?? []) {
      if (output.type !== 'window_result') continue;
      const result = output as WindowResult;
      for (const [name, value] of Object.entries(result.values)) expected.set(`${result.key}|${result.windowStart}|${name}`, Number(value));
    }
  }
  return expected;
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
