/** The test-only kill hook (FAULT_HUB_KILL_AFTER_WRITE): what the variable means, and when the hook fires. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FaultInjector, parseKillPlan, type KillNotice } from '../../hub/src/fault-injection.js';

describe('parseKillPlan', () => {
  const cases: Array<{ value: string | undefined; plan?: ReturnType<typeof parseKillPlan>; error?: RegExp }> = [
    { value: undefined, plan: {} },
    { value: ' ', plan: {} },
    { value: 'raw:3', plan: { raw: { nth: 3 } } },
    { value: 'checkpoint-written:0.2, raw:1', plan: { 'checkpoint-written': { probability: 0.2 }, raw: { nth: 1 } } },
    { value: 'checkpoint-saved:2', plan: { 'checkpoint-saved': { nth: 2 } } },
    { value: 'sink:3', error: /point must be one of raw, checkpoint-written, checkpoint-saved, got "sink"/ },
    { value: 'raw', error: /"raw" must be <point>:<n>/ },
    { value: 'raw:0', error: /must be <point>:<n> \(an integer >= 1\) or <point>:<p> \(0 < p < 1\)/ },
    { value: 'raw:1.5', error: /must be <point>:<n>/ },
    { value: 'raw:x', error: /must be <point>:<n>/ },
    { value: 'raw:1:2', error: /must be <point>:<n>/ },
    { value: 'raw:1,raw:2', error: /point raw given twice/ },
  ];
  for (const c of cases) {
    test(`${JSON.stringify(c.value)} ${c.error ? 'is refused' : 'parses'}`, () => {
      if (c.error) assert.throws(() => parseKillPlan(c.value), c.error);
      else assert.deepEqual(parseKillPlan(c.value), c.plan);
    });
  }
});

describe('FaultInjector', () => {
  function injector(value: string, random = () => 0.5) {
    const deaths: KillNotice[] = [];
    const faults = new FaultInjector(parseKillPlan(value), { random, now: () => 1000, die: (notice) => deaths.push(notice) });
    return { faults, deaths };
  }

  test('dies at the n-th time the point is reached, with the detail in its notice', () => {
    const { faults, deaths } = injector('raw:3');
    faults.afterWrite('raw', { lastSeq: 1 });
    faults.afterWrite('checkpoint-written');
    faults.afterWrite('raw', { lastSeq: 2 });
    assert.equal(deaths.length, 0);
    faults.afterWrite('raw', { lastSeq: 3 });
    assert.deepEqual(deaths, [{ fault: 'kill_after_write', point: 'raw', count: 3, at: 1000, lastSeq: 3 }]);
  });

  test('with a probability, dies each time the draw is below it', () => {
    const draws = [0.9, 0.3, 0.1];
    const { faults, deaths } = injector('checkpoint-saved:0.2', () => draws.shift()!);
    for (let i = 0; i < 3; i++) faults.afterWrite('checkpoint-saved', { partition: i });
    assert.deepEqual(
      deaths.map((d) => [d.count, d.partition]),
      [[3, 2]],
    );
  });

  test('does nothing at a point it was not armed for', () => {
    const { faults, deaths } = injector('');
    for (let i = 0; i < 10; i++) faults.afterWrite('raw');
    assert.equal(deaths.length, 0);
  });
});
