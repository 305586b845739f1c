import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Logger } from '../../shared/logger.js';
import { Refusals } from '../../edge-agent/src/sources/refusals.js';

function recordingLog() {
  const lines: Array<{ fields: Record<string, unknown>; message: string }> = [];
  const log = { warn: (fields: Record<string, unknown>, message: string) => lines.push({ fields, message }) } as unknown as Logger;
  return { log, lines };
}

test('every refusal is counted by code; a flood is logged once per interval with the number suppressed', () => {
  let now = 0;
  const { log, lines } = recordingLog();
  const refusals = new Refusals(log, 1000, () => now);
  for (let i = 0; i < 100; i++) refusals.refuse('EDGE_ERR_AUTH_FAILED', { username: `u${i}` }, 'mqtt connection refused');
  refusals.refuse('EDGE_ERR_RATE_LIMITED', { client: 'a' }, 'http request refused');
  refusals.count('EDGE_ERR_TOO_DEEP', 3);
  assert.deepEqual(refusals.snapshot(), { EDGE_ERR_AUTH_FAILED: 100, EDGE_ERR_RATE_LIMITED: 1, EDGE_ERR_TOO_DEEP: 3 });
  assert.deepEqual(lines.map((l) => [l.fields.code, l.fields.username ?? l.fields.client]), [['EDGE_ERR_AUTH_FAILED', 'u0'], ['EDGE_ERR_RATE_LIMITED', 'a']]);
  now = 1000;
  refusals.refuse('EDGE_ERR_AUTH_FAILED', { username: 'late' }, 'mqtt connection refused');
  assert.deepEqual(lines.at(-1)!.fields, { code: 'EDGE_ERR_AUTH_FAILED', username: 'late', suppressed: 99 });
  now = 5000;
  refusals.refuse('EDGE_ERR_AUTH_FAILED', { username: 'calm' }, 'mqtt connection refused');
  assert.deepEqual(lines.at(-1)!.fields, { code: 'EDGE_ERR_AUTH_FAILED', username: 'calm' }, 'no suppressed field when none were');
});
