/**
 * Rules in NATS KV on the real 3-node cluster (a bucket of its own per test, replicas 3):
 * - publishing hub/rules puts every rule, and publishing again changes nothing;
 * - a running store sees a changed rule within seconds, refuses an invalid one (logged, field named, old version
 *   stays active), and drops a deleted one;
 * - publishing never overwrites a rule edited or deleted in KV with a file, unless forced; a changed file replaces
 *   the files' own earlier version;
 * - the CLI puts, lists and deletes rules.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import type { Rule } from '../../hub/src/operators/rules.js';
import { DEFAULT_RULES_DIR, KvRuleStore, canonicalJson, openRuleBucket, publishRuleFiles, readRuleFiles } from '../../hub/src/rules/index.js';
import { runRulesCli } from '../../hub/src/rules/rules-cli.js';
import { testStack } from '../support/env.js';

const stack = testStack();
const runId = Date.now().toString(36);
let nc: NatsConnection;
let bucketNumber = 0;
const silent = pino({ level: 'silent' });

function bucket(): string {
  return `rules-${runId}-${++bucketNumber}`;
}

/** A logger whose lines are kept for assertions. */
function recordingLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

/** Starts a store and keeps every set it reports; `next(pred)` waits until the latest set satisfies pred. */
async function startStore(name: string, log: pino.Logger = silent) {
  const store = new KvRuleStore(nc, { bucket: name, replicas: 3, retryMs: 200, log });
  const sets: Rule[][] = [];
  const waiters: Array<{ pred: (rules: Rule[]) => boolean; resolve: (rules: Rule[]) => void }> = [];
  await store.start((rules) => {
    sets.push(rules);
    for (const waiter of [...waiters]) {
      if (waiter.pred(rules)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(rules);
      }
    }
  });
  const next = (pred: (rules: Rule[]) => boolean, timeoutMs = 5000): Promise<Rule[]> =>
    new Promise((resolve, reject) => {
      // The set may have come while the caller was awaiting its KV write.
      const latest = sets.at(-1);
      if (latest && pred(latest)) return resolve(latest);
      const timer = setTimeout(() => reject(new Error(`no rule set as expected within ${timeoutMs} ms; last: ${JSON.stringify(sets.at(-1)?.map((r) => r.name))}`)), timeoutMs);
      waiters.push({ pred, resolve: (rules) => (clearTimeout(timer), resolve(rules)) });
    });
  return { store, sets, next };
}

const tumbling = (name: string, sizeMs = 10_000): Record<string, unknown> => ({
  kind: 'window',
  name,
  eventType: 'device.telemetry',
  window: { type: 'tumbling', sizeMs },
  aggregates: [{ name: 'readings', fn: 'count' }],
});

const byName = (rules: Rule[], name: string): Rule | undefined => rules.find((r) => r.name === name);

describe('rules in NATS KV', () => {
  before(async () => {
    nc = await connect({ servers: stack.natsUrls });
  });

  after(async () => {
    await nc?.close();
  });

  test('publishing the rule files puts every rule; publishing again changes nothing', async () => {
    const name = bucket();
    const expected = readRuleFiles(DEFAULT_RULES_DIR).rules.map((r) => r.rule.name).sort();
    assert.ok(expected.length >= 6, `hub/rules has rules: ${expected.join(', ')}`);
    const first = await publishRuleFiles(nc, DEFAULT_RULES_DIR, { bucket: name, replicas: 3 });
    assert.deepEqual(first.created.sort(), expected);
    assert.deepEqual(first.refused, []);
    const second = await publishRuleFiles(nc, DEFAULT_RULES_DIR, { bucket: name, replicas: 3 });
    assert.deepEqual(second.unchanged.sort(), expected);
    assert.deepEqual([...second.created, ...second.updated, ...second.kept.map((k) => k.name)], []);

    const kv = await openRuleBucket(nc, { bucket: name });
    assert.equal((await kv.status()).replicas, 3);
    const { store } = await startStore(name);
    try {
      assert.deepEqual(store.current().map((r) => r.name), expected);
    } finally {
      await store.stop();
    }
  });

  test('a running store sees a change, refuses an invalid rule keeping the old one, and drops a deleted rule', async () => {
    const name = bucket();
    const kv = await openRuleBucket(nc, { bucket: name, replicas: 3 });
    await kv.put('rule.counts', JSON.stringify(tumbling('counts')));
    await kv.put('rule.other', JSON.stringify(tumbling('other')));
    const { log, lines } = recordingLogger();
    const { store, sets, next } = await startStore(name, log);
    try {
      assert.deepEqual(sets.at(-1)?.map((r) => r.name), ['counts', 'other']);

      await kv.put('rule.counts', JSON.stringify(tumbling('counts', 60_000)));
      const changed = await next((rules) => (byName(rules, 'counts') as { window?: { sizeMs?: number } })?.window?.sizeMs === 60_000);
      assert.deepEqual(changed.map((r) => r.name), ['counts', 'other']);

      // Invalid: refused with the field named; the 60 s version stays active.
      const before = sets.length;
      await kv.put('rule.counts', JSON.stringify(tumbling('counts', 0)));
      const deadline = Date.now() + 5000;
      let refusal: Record<string, unknown> | undefined;
      while (!refusal && Date.now() < deadline) {
        refusal = lines.find((l) => l.rule === 'counts' && l.level === 50);
        if (!refusal) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(refusal, 'the refusal is logged as an error');
      assert.match(String(refusal.err), /rule\.window\.sizeMs must be >= 1/);
      assert.match(String(refusal.msg), /previous version stays active/);
      assert.equal(sets.length, before, 'a refused value does not change the rule set');
      assert.equal((byName(store.current(), 'counts') as { window?: { sizeMs?: number } }).window?.sizeMs, 60_000);

      // A value whose name is not its key's is refused too.
      await kv.put('rule.other', JSON.stringify(tumbling('not-other', 5_000)));
      // Deleted: gone (and the refused `counts` value does not come back as anything).
      await kv.delete('rule.counts');
      const afterDelete = await next((rules) => byName(rules, 'counts') === undefined);
      assert.deepEqual(afterDelete.map((r) => r.name), ['other']);
      assert.equal((byName(store.current(), 'other') as { window?: { sizeMs?: number } }).window?.sizeMs, 10_000);
      assert.ok(lines.some((l) => l.rule === 'other' && /must be "other"/.test(String(l.err))));

      // And a new rule put after a delete appears.
      await kv.put('rule.counts', JSON.stringify(tumbling('counts', 30_000)));
      await next((rules) => byName(rules, 'counts') !== undefined);
    } finally {
      await store.stop();
    }
  });

  test('publishing keeps rules edited or deleted in KV unless forced, and replaces its own older version', async () => {
    const name = bucket();
    const dir = mkdtempSync(join(tmpdir(), 'hub-rules-kv-'));
    const file = (rules: Array<Record<string, unknown>>): void => writeFileSync(join(dir, 'rules.json'), JSON.stringify({ rules }));
    const kv = await openRuleBucket(nc, { bucket: name, replicas: 3 });
    const sizeOf = async (rule: string): Promise<number | undefined> => {
      const entry = await kv.get(`rule.${rule}`);
      return entry?.operation === 'PUT' ? (JSON.parse(entry.string()) as { window: { sizeMs: number } }).window.sizeMs : undefined;
    };

    file([tumbling('a', 1000), tumbling('b', 1000)]);
    assert.deepEqual((await publishRuleFiles(nc, dir, { bucket: name })).created, ['a', 'b']);

    // The file changes while KV still holds the files' version: replaced.
    file([tumbling('a', 2000), tumbling('b', 1000)]);
    assert.deepEqual((await publishRuleFiles(nc, dir, { bucket: name })).updated, ['a']);
    assert.equal(await sizeOf('a'), 2000);

    // Edited in KV (same content in another key order counts as unchanged; other content as an edit).
    await kv.put('rule.a', JSON.stringify(tumbling('a', 5000)));
    file([tumbling('a', 3000), tumbling('b', 1000)]);
    const kept = await publishRuleFiles(nc, dir, { bucket: name });
    assert.deepEqual(kept.kept.map((k) => k.name), ['a']);
    assert.match(kept.kept[0]!.reason, /changed in KV/);
    assert.equal(await sizeOf('a'), 5000);
    assert.deepEqual((await publishRuleFiles(nc, dir, { bucket: name, force: true })).updated, ['a']);
    assert.equal(await sizeOf('a'), 3000);

    // Deleted in KV, file unchanged: stays deleted; a changed file brings it back.
    await kv.delete('rule.b');
    assert.deepEqual((await publishRuleFiles(nc, dir, { bucket: name })).kept.map((k) => k.name), ['b']);
    assert.equal(await sizeOf('b'), undefined);
    file([tumbling('a', 3000), tumbling('b', 4000)]);
    assert.deepEqual((await publishRuleFiles(nc, dir, { bucket: name })).created, ['b']);
    assert.equal(await sizeOf('b'), 4000);

    // Same rule written by someone else with keys in another order: unchanged, nothing rewritten.
    const entry = await kv.get('rule.b');
    const shuffled = JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(entry!.string()) as object).reverse()));
    await kv.put('rule.b', shuffled);
    const again = await publishRuleFiles(nc, dir, { bucket: name });
    assert.deepEqual(again.unchanged.sort(), ['a', 'b']);
    assert.equal((await kv.get('rule.b'))!.string(), shuffled);
    assert.notEqual(shuffled, canonicalJson(JSON.parse(shuffled)));
  });

  test('the CLI puts, lists and deletes rules', async () => {
    const name = bucket();
    const dir = mkdtempSync(join(tmpdir(), 'hub-rules-cli-'));
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l), env: { HUB_NATS__SERVERS: JSON.stringify(stack.natsUrls) } };
    const cli = (...args: string[]) => runRulesCli([...args, '--bucket', name], io);

    writeFileSync(join(dir, 'one.yaml'), 'kind: window\nname: cli-rule\neventType: app.event\nwindow: { type: tumbling, sizeMs: 1000 }\naggregates: [{ name: n, fn: count }]\n');
    assert.equal(await cli('put', join(dir, 'one.yaml')), 0, err.join('\n'));
    assert.match(out.at(-1)!, /^put cli-rule \(window\), revision \d+$/);

    writeFileSync(join(dir, 'bad.yaml'), 'rules:\n  - kind: window\n    name: bad\n    eventType: x\n    window: { type: tumbling }\n    aggregates: [{ name: n, fn: count }]\n');
    assert.equal(await cli('put', join(dir, 'bad.yaml')), 1);
    assert.match(err.at(-1)!, /file\.rules\[0\]\.window/);

    assert.equal(await cli('list'), 0);
    assert.match(out.at(-1)!, /^cli-rule\s+window\s+rev \d+/);
    assert.equal(await cli('delete', 'cli-rule'), 0);
    assert.equal(await cli('delete', 'cli-rule'), 1);
    assert.match(err.at(-1)!, /no rule named "cli-rule"/);
    assert.equal(await runRulesCli(['list'], { ...io, env: {} }), 2);
    assert.match(err.at(-1)!, /no NATS servers/);
  });
});
