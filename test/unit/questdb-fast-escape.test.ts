/** The patched escaping of the QuestDB client writes exactly the bytes of the client's own loop. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SenderBufferV2 } from '@questdb/nodejs-client';
import { installFastIlpEscaping } from '../../hub/src/sinks/questdb-fast-escape.js';

const awkward = ['plain', 'with space', 'a,b=c', 'quote"d', 'back\\slash', 'new\nline\r', 'ünïcødé €', '', 'tab\there', '"=, \\'];

function encode(): string {
  const buffer = new SenderBufferV2({ protocol: 'http', init_buf_size: 1024 });
  for (const text of awkward) {
    buffer.table('t').symbol('s', text || 'x').stringColumn('v', text).at(1_700_000_000_000_000n, 'ns');
  }
  return buffer.toBufferView()!.toString('utf8');
}

test('fast ILP escaping writes the same lines as the client, for names, symbols and quoted strings', () => {
  const before = encode();
  assert.equal(installFastIlpEscaping(), true, 'the client still has the method the patch replaces');
  const after = encode();
  assert.equal(after, before);
  assert.match(after, /s=with\\ space,?.*v="with space"/);
  assert.match(after, /v="quote\\"d"/);
});
