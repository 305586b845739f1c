import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OperatorSet, ruleHash } from '../../hub/src/analytics/operator-set.js';
import type { Rule, WindowResult } from '../../hub/src/operators/index.js';
import type { EventBatch, WireEvent } from '../../shared/wire.js';

const countRule: Rule = {
  kind: 'window',
  name: 'count-10s',
  eventType: 'device.telemetry',
  keyBy: 'key',
  window: { type: 'tumbling', sizeMs: 10_000 },
  aggregates: [
    { name: 'n', fn: 'count' },
    { name: 'total', fn: 'sum', field: 'value' },
  ],
  allowedLatenessMs: 0,
} as Rule;
const watermark = { maxOutOfOrdernessMs: 1000, idleTimeoutMs: 60_000, advanceWhenAllIdle: false };

function event(device: string, tsMs: number, value: number): WireEvent {
  return { id: `${device}-${tsMs}`, type: 'device.telemetry', sv: 1, key: device, ts: tsMs * 1000, its: tsMs * 1000, src: 'test', body: { device_id: device, value } };
}
function batch(agent: string, events: WireEvent[]): EventBatch {
  return { v: 1, agent, partition: 0, first: 1, last: 1, events };
}
const results = (outputs: unknown[] | undefined) =>
  (outputs ?? []).filter((o): o is WindowResult => (o as WindowResult).type === 'window_result').map((r) => [r.key, r.windowStart, r.values.n, r.values.total]);

const input: Array<[number, EventBatch]> = [
  [1, batch('a1', [event('d1', 1_000, 1), event('d2', 2_000, 10)])],
  [2, batch('a1', [event('d1', 5_000, 2)])],
  [3, batch('a1', [event('d1', 12_000, 3)])],
  [4, batch('a1', [event('d2', 25_000, 4)])],
];

test('a message at or below the applied stream sequence is skipped, so a redelivery counts nothing twice', () => {
  const set = new OperatorSet([countRule], watermark);
  assert.ok(set.apply(input[0]![1], 1, 0));
  assert.equal(set.apply(input[0]![1], 1, 0), undefined);
  assert.equal(set.streamSeq, 1);
});

test('restoring a snapshot and replaying the rest gives the same window results as an uninterrupted run', () => {
  const straight = new OperatorSet([countRule], watermark);
  const all = input.flatMap(([seq, b]) => results(straight.apply(b, seq, 0)));
  assert.deepEqual(all, [
    ['d1', 0, 2, 3],
    ['d2', 0, 1, 10],
    ['d1', 10_000, 1, 3],
  ]);

  const first = new OperatorSet([countRule], watermark);
  const before = input.slice(0, 2).flatMap(([seq, b]) => results(first.apply(b, seq, 0)));
  const saved = JSON.parse(JSON.stringify(first.snapshot()));
  const second = new OperatorSet([countRule], watermark);
  assert.deepEqual(second.restore(saved), []);
  // The crashed worker's last messages come again: skipped; the rest continue.
  const after = input.flatMap(([seq, b]) => results(second.apply(b, seq, 0)));
  assert.deepEqual([...before, ...after], all);
});

test('a silent agent stops holding the watermark back once idle, so other agents windows still close', () => {
  const set = new OperatorSet([countRule], { ...watermark, idleTimeoutMs: 5_000 });
  set.apply(batch('slow', [event('d9', 1_000, 1)]), 1, 0);
  const fired = results(set.apply(batch('fast', [event('d1', 30_000, 5)]), 2, 1_000));
  assert.deepEqual(fired, [], 'agent "slow" still holds the watermark at 0 s');
  assert.deepEqual(results(set.advance(10_000)), [['d9', 0, 1, 1]], 'after 5 s without events "slow" is idle');
});

test('changing a rule restarts only that rule; unchanged rules keep their state', () => {
  const other: Rule = { ...(countRule as object), name: 'other' } as Rule;
  const set = new OperatorSet([countRule, other], watermark);
  set.apply(input[0]![1], 1, 0);
  const changed = { ...(countRule as object), window: { type: 'tumbling', sizeMs: 20_000 } } as Rule;
  assert.deepEqual(set.setRules([changed, other]), { added: [], changed: ['count-10s'], removed: [] });
  assert.deepEqual(set.setRules([other]), { added: [], changed: [], removed: ['count-10s'] });
  const out = results(set.apply(input[2]![1], 3, 0));
  assert.deepEqual(out, [['d1', 0, 1, 1], ['d2', 0, 1, 10]], 'rule "other" kept the first message');
});

test('a batch its agent sent again after the duplicate window (same range, new stream sequence) counts once, also after a restore', () => {
  const ranged = (agent: string, first: number, events: WireEvent[]): EventBatch => ({ v: 1, agent, partition: 0, first, last: first + 9, events });
  const b1 = ranged('a1', 1, [event('d1', 1_000, 1), event('d2', 2_000, 10)]);
  const b2 = ranged('a1', 11, [event('d1', 5_000, 2)]);
  const b3 = ranged('a1', 21, [event('d1', 12_000, 3)]);
  const b4 = ranged('a1', 31, [event('d2', 25_000, 4)]);
  const straight = new OperatorSet([countRule], watermark);
  const expected = [b1, b2, b3, b4].flatMap((b, i) => results(straight.apply(b, i + 1, 0)));

  const set = new OperatorSet([countRule], watermark);
  const got = [b1, b2].flatMap((b, i) => results(set.apply(b, i + 1, 0)));
  assert.equal(set.apply(b2, 3, 0), undefined, 'b2 stored a second time (seq 3) is skipped');
  assert.equal(set.streamSeq, 3, 'and covered by the state, so it is acked');
  const restored = new OperatorSet([countRule], watermark);
  restored.restore(JSON.parse(JSON.stringify(set.snapshot())));
  assert.equal(restored.apply(b1, 4, 0), undefined, 'b1 resent after a takeover is skipped too');
  got.push(...[b3, b4].flatMap((b, i) => results(restored.apply(b, i + 5, 0))));
  assert.deepEqual(got, expected);
  assert.equal(set.resentBatchesSkipped + restored.resentBatchesSkipped, 2);

  // Not a resend: the same range from another agent, or from an agent whose outbox was wiped (other events).
  assert.ok(restored.apply(ranged('a2', 11, [event('d3', 30_000, 1)]), 7, 0));
  assert.ok(restored.apply(ranged('a1', 11, [event('d9', 30_000, 1)]), 8, 0));
});

test('the resent-batch guard remembers a bounded number of ranges per agent', async () => {
  const { ResentBatchGuard } = await import('../../hub/src/analytics/resent-batch-guard.js');
  const guard = new ResentBatchGuard(4);
  for (let i = 0; i < 6; i++) assert.equal(guard.seenBefore('a', i * 10, i * 10 + 9, `e${i}`), false);
  assert.equal(guard.seenBefore('a', 50, 59, 'e5'), true);
  assert.equal(guard.seenBefore('a', 20, 29, 'e2'), true, 'the last 4 are remembered');
  assert.equal(guard.seenBefore('a', 0, 9, 'e0'), false, 'older ones are forgotten');
  assert.deepEqual(guard.snapshot().a?.length, 4);
});

test('lineage: each window result names the version of the rule that made it, which changes with the rule', () => {
  const set = new OperatorSet([countRule], watermark);
  const versionsOf = (outputs: unknown[] | undefined) => (outputs ?? []).filter((o): o is WindowResult => (o as WindowResult).type === 'window_result').map((r) => r.ruleVersion);
  const first = [1, 2, 3].flatMap((seq) => versionsOf(set.apply(input[seq - 1]![1], seq, 0)));
  assert.ok(first.length > 0 && first.every((v) => v === ruleHash(countRule)), `stamped: ${first.join()}`);
  const changed = { ...countRule, allowedLatenessMs: 500 } as Rule;
  set.setRules([changed]);
  const later = [...versionsOf(set.apply(input[3]![1], 4, 0)), ...versionsOf(set.apply(batch('a1', [event('d2', 40_000, 5)]), 5, 0))];
  assert.ok(later.length > 0 && later.every((v) => v === ruleHash(changed)) && ruleHash(changed) !== ruleHash(countRule));
});
