/** Scenario files load and are checked with clear errors; planted patterns are what the ready rules look for. */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { readFileSync } from 'node:fs';
import { lastSettleMs, plantPattern } from '../../simulators/lib/patterns.js';
import { loadScenario, parseScenario } from '../../simulators/scenario.js';

const dir = join(import.meta.dirname, '../../simulators/scenarios');

test('every scenario file in simulators/scenarios is valid and gets the defaults', () => {
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 2);
  for (const file of files) {
    const scenario = loadScenario(join(dir, file));
    assert.equal(`${scenario.name}.yaml`, file, 'file named after the scenario');
    assert.ok(scenario.plant.length > 0, `${file} plants patterns`);
    assert.equal(typeof scenario.chaos.outOfOrderShare, 'number');
    assert.ok(scenario.devices.batch >= 1 && scenario.apps.batch >= 1);
  }
});

test('a bad scenario fails with the field and the reason, every problem at once', () => {
  const text = 'name: Bad Name\ndurationSeconds: 0\ndevices: { count: 1, ratePerSecond: 1, qos: 2 }\napps: { users: 1, ratePerSecond: 1 }\nplant: [{ pattern: nope, count: 1 }]\nextra: 1\n';
  assert.throws(() => parseScenario(text, 'bad.yaml'), (error: Error) => {
    assert.match(error.message, /bad\.yaml is not a valid scenario/);
    assert.match(error.message, /\/name must match pattern/);
    assert.match(error.message, /\/durationSeconds must be > 0/);
    assert.match(error.message, /\/devices\/qos must be equal to one of the allowed values \(0, 1\)/);
    assert.match(error.message, /\/plant\/0\/pattern must be equal to one of the allowed values/);
    assert.match(error.message, /must NOT have additional properties: extra/);
    return true;
  });
  const late = 'name: late\ndurationSeconds: 10\ndevices: { count: 1, ratePerSecond: 1 }\napps: { users: 1, ratePerSecond: 1 }\nplant: [{ pattern: overheating, count: 1, atSeconds: 20 }]\n';
  assert.throws(() => parseScenario(late), /overheating x1 at 20 s runs 40 s, past the end of the run \(10 s\)/);
  const tooLong = late.replace('atSeconds: 20', 'atSeconds: 1').replace('durationSeconds: 10', 'durationSeconds: 30');
  assert.throws(() => parseScenario(tooLong), /runs 40 s, past the end of the run \(30 s\)/, 'the whole pattern must fit, not only its start');
});

/** The ready rules' parameters, read from hub/rules, so that a changed rule fails this test, not a run. */
function rule(name: string): Record<string, unknown> {
  const rulesDir = join(import.meta.dirname, '../../hub/rules');
  for (const file of readdirSync(rulesDir)) {
    const { rules } = parse(readFileSync(join(rulesDir, file), 'utf8')) as { rules: Array<Record<string, unknown>> };
    const found = rules.find((r) => r.name === name);
    if (found) return found;
  }
  throw new Error(`no rule ${name}`);
}

test('overheating: readings above the threshold for longer than the duration, never further apart than maxGapMs', () => {
  const r = rule('overheating') as { value: number; durationMs: number; maxGapMs: number };
  const p = plantPattern('overheating', 'd1', 0, 'x');
  const times = p.events.map((e) => e.atMs);
  assert.ok(p.events.every((e) => e.channel === 'mqtt' && (e.body.value as number) > r.value && e.body.metric === 'temperature'));
  assert.ok(times[times.length - 1]! - times[0]! > r.durationMs);
  assert.ok(times.every((t, i) => i === 0 || t - times[i - 1]! <= r.maxGapMs));
});

test('suspicious-login: the failures the rule counts, then a success, within its time', () => {
  const r = rule('suspicious-login') as { steps: Array<{ times?: number }>; withinMs: number };
  const p = plantPattern('suspicious-login', 'u1', 0, 'x');
  const kinds = p.events.map((e) => e.body.event_type);
  assert.deepEqual(kinds, [...Array(r.steps[0]!.times).fill('failed_login'), 'login_success']);
  assert.ok(p.events[p.events.length - 1]!.atMs < r.withinMs);
  assert.ok(p.events.every((e) => e.body.user_id === 'u1' && e.body.type === 'app.event'));
});

test('hyperactive-user: more events than the threshold within the window', () => {
  const r = rule('hyperactive-user') as { threshold: number; windowMs: number };
  const p = plantPattern('hyperactive-user', 'u2', 0, 'x');
  assert.ok(p.events.length > r.threshold);
  assert.ok(p.events[p.events.length - 1]!.atMs < r.windowMs);
  assert.equal(new Set(p.events.map((e) => e.body.event_id)).size, p.events.length, 'distinct event ids');
});

test('device-silent: a few readings, then a silence the runner waits out', () => {
  const r = rule('device-silent') as { silenceMs: number };
  const p = plantPattern('device-silent', 'd2', 5000, 'x');
  assert.ok(p.events.length > 0 && p.settleMs >= r.silenceMs);
  assert.equal(lastSettleMs([p]), 5000 + p.events[p.events.length - 1]!.atMs + p.settleMs);
});
