/**
 * IlpHttpWriter: the bytes are those of QuestDB's own client (its text protocol, used here as the reference), names
 * the client refuses are refused, and the transport retries what the client retries, over a real local socket.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { SenderBufferV1 } from '@questdb/nodejs-client';
import { IlpHttpError, IlpHttpWriter } from '../../hub/src/sinks/ilp-http-writer.js';

const awkward = ['plain', 'with space', 'a,b=c', 'quote"d', 'back\\slash', 'new\nline\r', 'ünïcødé €', 'tab\there', '"=, \\', '😀 emoji'];

/** Writes the same rows to anything with the client's row methods. */
function writeRows(w: {
  table(n: string): unknown;
  symbol(n: string, v: string): unknown;
  stringColumn(n: string, v: string): unknown;
  floatColumn(n: string, v: number): unknown;
  intColumn(n: string, v: number): unknown;
  booleanColumn(n: string, v: boolean): unknown;
  timestampColumn(n: string, v: number, u: 'us'): unknown;
  at(t: number, u: 'us'): unknown;
}): void {
  awkward.forEach((text, i) => {
    w.table(i % 2 ? 'device_telemetry' : 'name with space');
    w.symbol('s', text);
    w.symbol('sym bol', 'x');
    w.stringColumn('v', text);
    w.floatColumn('f', [20, -0.5, 1e21, 1.5e-7, 123456.789][i % 5]!);
    w.intColumn('n', [0, -3, 2 ** 40][i % 3]!);
    w.booleanColumn('b', i % 2 === 0);
    w.timestampColumn('ingest_ts', 1_700_000_000_123_456 + i, 'us');
    w.at(1_700_000_000_000_000 + i, 'us');
  });
}

/** A local HTTP server that records request bodies and answers with the statuses given, then 204. */
async function server(statuses: number[] = [], delayMs = 0) {
  const bodies: string[] = [];
  const headers: http.IncomingHttpHeaders[] = [];
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks).toString('utf8'));
      headers.push(req.headers);
      const status = statuses.shift() ?? 204;
      setTimeout(() => {
        res.statusCode = status;
        res.end(status === 204 ? undefined : JSON.stringify({ code: 'invalid', message: 'error in line 1: table: t; bad' }));
      }, delayMs);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return { url, bodies, headers, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

test('rows are byte for byte what the QuestDB client encodes, escaping included', async () => {
  const reference = new SenderBufferV1({ protocol: 'http', init_buf_size: 1024 });
  writeRows({
    table: (n) => reference.table(n),
    symbol: (n, v) => reference.symbol(n, v),
    stringColumn: (n, v) => reference.stringColumn(n, v),
    floatColumn: (n, v) => reference.floatColumn(n, v),
    intColumn: (n, v) => reference.intColumn(n, v),
    booleanColumn: (n, v) => reference.booleanColumn(n, v),
    timestampColumn: (n, v, u) => reference.timestampColumn(n, v, u),
    at: (t, u) => reference.at(t, u),
  });
  const expected = reference.toBufferView()!.toString('utf8');

  const qdb = await server();
  const writer = new IlpHttpWriter({ httpUrl: qdb.url, username: 'admin', password: 'quest', requestTimeoutMs: 2000, retryTimeoutMs: 0 });
  try {
    writeRows(writer);
    assert.equal(await writer.flush(), true);
    assert.equal(await writer.flush(), false, 'nothing left to send');
    assert.equal(qdb.bodies.length, 1);
    assert.equal(qdb.bodies[0], expected);
    assert.match(qdb.bodies[0]!, /^name\\ with\\ space,s=plain,sym\\ bol=x v="plain",f=20,n=0i,b=t,ingest_ts=1700000000123456t 1700000000000000000\n/);
    assert.equal(qdb.headers[0]!.authorization, `Basic ${Buffer.from('admin:quest').toString('base64')}`);
  } finally {
    await writer.close();
    await qdb.close();
  }
});

test('names the client refuses are refused before anything is written', () => {
  const writer = new IlpHttpWriter({ httpUrl: 'http://127.0.0.1:1', requestTimeoutMs: 1, retryTimeoutMs: 0 });
  const reference = new SenderBufferV1({ protocol: 'http', init_buf_size: 1024 });
  for (const table of ['', '.hidden', 'a..b', 'end.', 'semi?colon', 'quo"te', 'x'.repeat(128)]) {
    assert.throws(() => reference.table(table), Error, `client refuses table ${JSON.stringify(table)}`);
    assert.throws(() => writer.table(table), Error, `writer refuses table ${JSON.stringify(table)}`);
    writer.reset();
  }
  for (const column of ['', 'a.b', 'min-max', 'par(en)', 'tab\tname']) {
    assert.throws(() => writer.table('t').floatColumn(column, 1), Error, `writer refuses column ${JSON.stringify(column)}`);
    writer.reset();
  }
  assert.throws(() => writer.table('t').floatColumn('v', 1).symbol('late', 'x'), /Symbols must be written before/);
  writer.reset();
  assert.throws(() => writer.table('t').intColumn('n', 1.5), /must be an integer/);
  writer.reset();
  assert.throws(() => writer.table('t').symbol('s', 'x').at(1, 'us'), /at least one column/);
});

test('a symbol value with a NUL character is refused before it is written (QuestDB fails the whole request on it); the rows around it are sent', async () => {
  const qdb = await server();
  const writer = new IlpHttpWriter({ httpUrl: qdb.url, requestTimeoutMs: 2000, retryTimeoutMs: 0 });
  try {
    writer.table('t').symbol('s', 'a').floatColumn('v', 1).at(1, 'us');
    assert.throws(() => writer.table('t').symbol('s', 'x\u0000y'), /Symbol value of s contains a NUL character/);
    writer.abortRow();
    writer.table('t').symbol('s', 'b c').stringColumn('v', 'nul \u0000 in a string is stored').at(2, 'us');
    assert.equal(await writer.flush(), true);
    assert.equal(qdb.bodies[0], 't,s=a v=1 1000\nt,s=b\\ c v="nul \u0000 in a string is stored" 2000\n');
  } finally {
    await writer.close();
    await qdb.close();
  }
});

test('a retriable status is retried within retryTimeoutMs; a refusal (400) fails at once with QuestDB\'s message and the rows are kept', async () => {
  const qdb = await server([503, 500, 204, 400]);
  const writer = new IlpHttpWriter({ httpUrl: qdb.url, requestTimeoutMs: 2000, retryTimeoutMs: 5000 });
  try {
    writer.table('t').floatColumn('v', 1).at(1, 'us');
    assert.equal(await writer.flush(), true);
    assert.equal(qdb.bodies.length, 3, '503 and 500 retried, then 204');
    assert.deepEqual(new Set(qdb.bodies), new Set(['t v=1 1000\n']));

    writer.table('t').floatColumn('v', 2).at(2, 'us');
    const error = await writer.flush().then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof IlpHttpError);
    assert.equal(error.status, 400);
    assert.match(error.message, /400.*error in line 1/);
    assert.equal(qdb.bodies.length, 4, 'a 400 is not retried');
    writer.table('t').floatColumn('v', 3).at(3, 'us');
    assert.equal(await writer.flush(), true, 'the failed rows go again, first, with the rows written since');
    assert.equal(qdb.bodies[4], 't v=2 2000\nt v=3 3000\n');
    assert.equal(await writer.flush(), false, 'nothing left');
  } finally {
    await writer.close();
    await qdb.close();
  }
});

test('no answer within the request timeout fails the flush once retryTimeoutMs has passed', async () => {
  const qdb = await server([], 500);
  const writer = new IlpHttpWriter({ httpUrl: qdb.url, requestTimeoutMs: 100, retryTimeoutMs: 150 });
  try {
    writer.table('t').floatColumn('v', 1).at(1, 'us');
    const error = await writer.flush().then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof IlpHttpError);
    assert.equal(error.status, 524);
    assert.ok(qdb.bodies.length >= 1);
  } finally {
    await writer.close();
    await qdb.close();
  }
});

test('a refused connection fails the flush at once', async () => {
  const writer = new IlpHttpWriter({ httpUrl: 'http://127.0.0.1:1', requestTimeoutMs: 1000, retryTimeoutMs: 10_000 });
  writer.table('t').floatColumn('v', 1).at(1, 'us');
  const started = Date.now();
  await assert.rejects(writer.flush(), (e: unknown) => e instanceof IlpHttpError && e.status === 0 && /ECONNREFUSED/.test(e.message));
  assert.ok(Date.now() - started < 1000);
  assert.ok(writer.bufferedBytes > 0, 'the rows are kept for the next flush');
  writer.reset();
  assert.equal(writer.bufferedBytes, 0);
  assert.equal(await writer.flush(), false, 'reset() drops the rows of a failed flush too');
  await writer.close();
});
