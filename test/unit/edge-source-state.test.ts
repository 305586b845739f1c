import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SourceState, stateFilePath } from '../../edge-agent/src/sources/source-state.js';
import type { SourceDeps } from '../../edge-agent/src/sources/source.js';

const dir = (): string => mkdtempSync(join(tmpdir(), 'source-state-'));

test('offsets written by save() are there after a reload; nothing is written before save()', () => {
  const d = dir();
  try {
    const path = join(d, 'nested', 'state.json');
    const state = new SourceState<{ offset: number }>(path);
    state.set('a', { offset: 10 });
    assert.deepEqual(new SourceState(path).keys(), [], 'set alone is not durable');
    state.save();
    state.set('b', { offset: 20 });
    state.save();
    state.delete('a');
    state.save();
    const again = new SourceState<{ offset: number }>(path);
    assert.deepEqual(again.keys(), ['b']);
    assert.deepEqual(again.get('b'), { offset: 20 });
    assert.deepEqual(readdirSync(join(d, 'nested')), ['state.json'], 'no temporary file is left behind');
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { version: 1, entries: { b: { offset: 20 } } });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('an unreadable state file stops the source instead of silently starting over', () => {
  const d = dir();
  try {
    const path = join(d, 'state.json');
    writeFileSync(path, '{"version":1,"entr');
    assert.throws(() => new SourceState(path), /source state file .*state\.json is unreadable .*move it away/);
    writeFileSync(path, '{"version":2,"entries":{}}');
    assert.throws(() => new SourceState(path), /expected \{"version": 1/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('the state file is per agent and per source, in the data folder', () => {
  const deps = { dataDir: '/data', agentId: 'gw-1' } as SourceDeps;
  assert.equal(stateFilePath(deps, 'file'), '/data/source-state-gw-1-file.json');
  assert.throws(() => stateFilePath({} as SourceDeps, 'file'), /needs the agent's dataDir/);
});
