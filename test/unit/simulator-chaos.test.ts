/** The simulators' chaos: seeded and repeatable, each knob does what it says, planted events are left alone. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChaosMixer, NO_CHAOS, type ChaosOptions, type OutgoingPayload } from '../../simulators/lib/chaos.js';
import { seededRandom } from '../../simulators/lib/random.js';

const T0 = 1_700_000_000_000;

function drive(options: ChaosOptions, seed: number, events = 10_000, planted = false): { out: OutgoingPayload[]; mixer: ChaosMixer } {
  const mixer = new ChaosMixer(options, seededRandom(seed));
  const out: OutgoingPayload[] = [];
  for (let i = 0; i < events; i++) {
    const now = T0 + i; // one event per ms
    mixer.push({ source: `d${i % 50}`, timestampMs: now, body: { event_id: `e${i}`, device_id: `d${i % 50}`, value: i }, planted }, now);
    out.push(...mixer.due(now));
  }
  out.push(...mixer.drain());
  return { out, mixer };
}

const chaotic: ChaosOptions = { ...NO_CHAOS, outOfOrderShare: 0.1, meanDelayMs: 200, lateShare: 0.02, lateByMs: 600_000, duplicateShare: 0.03, malformedShare: 0.01, clockSkewMs: 2000 };

test('the same seed gives the same payloads in the same order; another seed does not', () => {
  const a = drive(chaotic, 7).out.map((o) => o.payload);
  const b = drive(chaotic, 7).out.map((o) => o.payload);
  const c = drive(chaotic, 8).out.map((o) => o.payload);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('without chaos every event goes out once, in order, unchanged', () => {
  const { out, mixer } = drive(NO_CHAOS, 1, 1000);
  assert.equal(out.length, 1000);
  assert.deepEqual(out.map((o) => o.eventId), Array.from({ length: 1000 }, (_, i) => `e${i}`));
  assert.deepEqual(JSON.parse(out[5]!.payload), { event_id: 'e5', device_id: 'd5', value: 5, timestamp: T0 + 5 });
  assert.equal(mixer.counts.normal, 1000);
});

test('each knob plants about its share, and the counts say what was done', () => {
  const { out, mixer } = drive(chaotic, 3);
  const n = 10_000;
  const near = (count: number, share: number) => Math.abs(count - share * n) < share * n * 0.3 + 10;
  assert.ok(near(mixer.counts.malformed, 0.01), `malformed ${mixer.counts.malformed}`);
  assert.ok(near(mixer.counts.late, 0.02), `late ${mixer.counts.late}`);
  assert.ok(near(mixer.counts.duplicate, 0.03), `duplicate ${mixer.counts.duplicate}`);
  assert.ok(near(mixer.counts.out_of_order, 0.1 * 0.97), `out of order ${mixer.counts.out_of_order}`);
  const byKind = (kind: OutgoingPayload['kind']) => out.filter((o) => o.kind === kind);
  for (const o of byKind('malformed')) {
    let bad = false;
    try {
      const parsed = JSON.parse(o.payload) as Record<string, unknown>;
      bad = typeof parsed.value !== 'number' || parsed.timestamp === undefined || typeof parsed.event_id !== 'string' || !parsed.event_id.startsWith('e');
    } catch {
      bad = true;
    }
    assert.ok(bad, `malformed payload is actually bad: ${o.payload}`);
  }
  for (const o of byKind('late')) {
    const body = JSON.parse(o.payload) as { event_id: string; timestamp: number };
    const sentAt = T0 + Number(body.event_id.slice(1));
    assert.ok(sentAt - body.timestamp >= 600_000 - 2000, 'a late event is 10 minutes old, give or take the skew');
  }
  const ids = out.filter((o) => o.kind !== 'malformed').map((o) => o.eventId);
  assert.equal(ids.length - new Set(ids).size, mixer.counts.duplicate, 'duplicates repeat an event id');
  // Out-of-order: some event goes out after a newer one of the same source.
  const position = new Map(out.map((o, i) => [o.eventId, i]));
  const overtaken = byKind('out_of_order').filter((o) => position.get(o.eventId)! > (position.get(`e${Number(o.eventId!.slice(1)) + 50}`) ?? Infinity));
  assert.ok(overtaken.length > mixer.counts.out_of_order / 2, 'most held-back events arrive after a newer one of their source');
});

test('a source keeps one clock skew within the bound', () => {
  const mixer = new ChaosMixer({ ...NO_CHAOS, clockSkewMs: 1500 }, seededRandom(5));
  const skews = Array.from({ length: 100 }, (_, i) => mixer.skewOf(`d${i}`));
  assert.ok(skews.every((s) => Math.abs(s) <= 1500));
  assert.ok(new Set(skews).size > 50);
  assert.equal(mixer.skewOf('d3'), skews[3]);
});

test('planted events are never delayed, corrupted, made late or duplicated', () => {
  const { out, mixer } = drive({ ...chaotic, malformedShare: 0.5, duplicateShare: 0.5 }, 9, 2000, true);
  assert.equal(out.length, 2000);
  assert.equal(mixer.counts.normal, 2000);
  assert.deepEqual(out.map((o) => o.eventId), Array.from({ length: 2000 }, (_, i) => `e${i}`));
});

test('bursts multiply the rate for their seconds of each period', () => {
  const mixer = new ChaosMixer({ ...NO_CHAOS, burstEverySeconds: 30, burstSeconds: 5, burstFactor: 4 }, seededRandom(1));
  assert.equal(mixer.rateFactor(0), 1);
  assert.equal(mixer.rateFactor(24.9), 1);
  assert.equal(mixer.rateFactor(25), 4);
  assert.equal(mixer.rateFactor(29.9), 4);
  assert.equal(mixer.rateFactor(30), 1);
});
