/** The worker's ack-after-flush contract, with an in-memory source and sink (fakes live only in unit tests). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import type { EventBatch, WireEvent } from '../../shared/wire.js';
import type { BatchSource, Inbound } from '../../hub/src/consumer/consumer.js';
import { HubWorker, type HubWorkerSettings } from '../../hub/src/hub-worker.js';
import { HubMetrics } from '../../hub/src/metrics.js';
import type { FlushResult, Sink, WriteResult } from '../../hub/src/sinks/sink.js';

const silent = pino({ level: 'silent' });

class FakeSource implements BatchSource {
  /** Messages the worker has taken from the source. */
  taken = 0;
  private queue: Inbound[] = [];
  private ended = false;
  private wake: (() => void) | undefined;

  push(...items: Inbound[]): void {
    this.queue.push(...items);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Inbound> {
    for (;;) {
      const next = this.queue.shift();
      if (next) {
        this.taken++;
        yield next;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  async stop(): Promise<void> {
    this.ended = true;
    this.wake?.();
  }
}

/** Confirms on flush every row written before the call, unless told to fail. */
class FakeSink implements Sink {
  failFlushes = 0;
  failAlways = false;
  probeOk = true;
  written: string[] = [];
  durable: string[] = [];
  flushCalls = 0;
  private pending: string[] = [];

  get bufferedRows(): number {
    return this.pending.length;
  }

  write(batch: EventBatch): WriteResult {
    for (const event of batch.events) this.pending.push(event.id);
    this.written.push(...batch.events.map((e) => e.id));
    return { rows: batch.events.length, skipped: [], invalidColumns: [] };
  }

  async flush(): Promise<FlushResult> {
    this.flushCalls++;
    const rows = this.pending.length;
    await new Promise((resolve) => setImmediate(resolve));
    if (this.failAlways || this.failFlushes > 0) {
      this.failFlushes--;
      throw new Error('QuestDB down');
    }
    this.durable.push(...this.pending.splice(0, rows));
    return { rows };
  }

  discard(): number {
    return this.pending.splice(0).length;
  }

  async probe(): Promise<void> {
    if (!this.probeOk) throw new Error('still down');
  }

  async close(): Promise<void> {}
}

interface FakeMessage {
  item: Extract<Inbound, { type: 'batch' }>;
  acked: number;
  naked: Array<number | undefined>;
}

let seq = 0;
function message(...ids: string[]): FakeMessage {
  const events: WireEvent[] = ids.map((id) => ({ id, type: 't', sv: 1, key: 'k', ts: Date.now() * 1000, its: Date.now() * 1000, src: 'mqtt', body: {} }));
  const state: FakeMessage = {
    acked: 0,
    naked: [],
    item: {
      type: 'batch',
      batch: { v: 1, agent: 'a1', partition: 0, first: 0, last: 0, events },
      bytes: 10,
      seq: ++seq,
      redelivered: false,
      pending: 0,
      ack: () => void state.acked++,
      nak: (delayMs?: number) => void state.naked.push(delayMs),
    },
  };
  return state;
}

const settings: HubWorkerSettings = {
  maxRows: 1000,
  backlogFlushIntervalMs: 60_000,
  backlogThresholdMessages: 100,
  flushIntervalMs: 60_000, // tests flush explicitly unless they test the triggers
  maxBufferedRows: 10_000,
  retryInitialMs: 60_000, // no automatic retry unless the test asks for it
  retryMaxMs: 60_000,
  holdOnFailureMs: 60_000,
  shutdownTimeoutMs: 50,
};

function setup(overrides: Partial<HubWorkerSettings> = {}) {
  const source = new FakeSource();
  const sink = new FakeSink();
  const worker = new HubWorker(source, sink, { ...settings, ...overrides }, { metrics: new HubMetrics(), log: silent });
  const running = worker.run();
  const stop = async (): Promise<void> => {
    await worker.stop();
    await running;
  };
  return { source, sink, worker, running, stop };
}

async function until(condition: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

test('acks a message only after the flush that covered its rows succeeded', async () => {
  const { source, sink, worker, stop } = setup();
  const m1 = message('e1', 'e2');
  source.push(m1.item);
  await until(() => sink.written.length === 2, 'rows written');
  assert.equal(m1.acked, 0, 'not acked while only buffered');
  assert.equal(await worker.flush(), true);
  assert.deepEqual(sink.durable, ['e1', 'e2']);
  assert.equal(m1.acked, 1);
  assert.deepEqual(m1.naked, []);
  await stop();
});

test('does not ack a message whose flush failed; acks it after a later successful flush', async () => {
  const { source, sink, worker, stop } = setup();
  const m1 = message('e1');
  source.push(m1.item);
  await until(() => sink.written.length === 1, 'row written');
  sink.failFlushes = 1;
  assert.equal(await worker.flush(), false);
  assert.equal(m1.acked, 0);
  assert.equal(worker.status().state, 'failing');
  assert.equal(worker.status().lastFlush?.ok, false);
  assert.equal(worker.status().heldMessages, 1);

  assert.equal(await worker.flush(), true);
  assert.equal(m1.acked, 1);
  assert.deepEqual(sink.durable, ['e1']);
  assert.equal(worker.status().state, 'running');
  assert.equal(worker.stats.flushErrors, 1);
  await stop();
});

test('a message read during a failing flush is acked with the retry, not before', async () => {
  const { source, sink, worker, stop } = setup();
  const m1 = message('e1');
  const m2 = message('e2');
  source.push(m1.item);
  await until(() => sink.written.length === 1, 'first row');
  sink.failFlushes = 1;
  const failed = worker.flush();
  source.push(m2.item); // arrives while the flush is in flight
  assert.equal(await failed, false);
  await until(() => sink.written.length === 2, 'second row');
  assert.equal(m1.acked + m2.acked, 0);
  assert.equal(await worker.flush(), true);
  assert.equal(m1.acked, 1);
  assert.equal(m2.acked, 1);
  await stop();
});

test('stops taking messages while flushes fail, retries by itself and resumes', async () => {
  const { source, sink, worker, stop } = setup({ retryInitialMs: 5, retryMaxMs: 20 });
  const [m1, m2, m3] = [message('e1'), message('e2'), message('e3')];
  source.push(m1.item);
  await until(() => source.taken === 1, 'first message taken');
  sink.failFlushes = 3;
  void worker.flush();
  await until(() => worker.status().state === 'failing', 'failing');
  source.push(m2.item, m3.item);
  await new Promise((resolve) => setTimeout(resolve, 5));
  // The loop was already waiting for the next message when the flush failed: it takes that one, then pauses.
  assert.equal(source.taken, 2, 'paused after at most one more message');
  await until(() => m1.acked === 1 && m2.acked === 1, 'acked after the automatic retry');
  await until(() => source.taken === 3, 'consumption resumed');
  assert.ok(sink.flushCalls >= 4);
  await stop(); // flushes and acks m3
  assert.equal(m3.acked, 1);
});

test('flushes without waiting for the interval once maxRows rows are buffered', async () => {
  const { source, sink, stop } = setup({ maxRows: 3 });
  const m1 = message('e1', 'e2');
  const m2 = message('e3');
  source.push(m1.item);
  await until(() => sink.written.length === 2, 'two rows');
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(sink.flushCalls, 0);
  source.push(m2.item);
  await until(() => m1.acked === 1 && m2.acked === 1, 'both acked');
  await stop();
});

test('flushes when the oldest buffered row is flushIntervalMs old', async () => {
  const { source, stop } = setup({ flushIntervalMs: 20 });
  const m1 = message('e1');
  const started = Date.now();
  source.push(m1.item);
  await until(() => m1.acked === 1, 'acked by the interval flush');
  assert.ok(Date.now() - started >= 15);
  await stop();
});

test('while the server has more messages for it, the worker flushes at backlogFlushIntervalMs instead', async () => {
  const { source, stop } = setup({ flushIntervalMs: 10, backlogFlushIntervalMs: 200 });
  const behind = message('e1');
  behind.item.pending = 500;
  const started = Date.now();
  source.push(behind.item);
  await until(() => behind.acked === 1, 'acked by the backlog interval flush');
  const waited = Date.now() - started;
  assert.ok(waited >= 150, `flushed after ${waited} ms, not at the 10 ms interval`);
  const caughtUp = message('e2');
  const again = Date.now();
  source.push(caughtUp.item);
  await until(() => caughtUp.acked === 1, 'acked by the normal interval flush');
  assert.ok(Date.now() - again < 150, 'caught up: the short interval again');
  // Live traffic: a few messages always wait on the server; that is not a backlog.
  const live = message('e3');
  live.item.pending = 99;
  const liveAt = Date.now();
  source.push(live.item);
  await until(() => live.acked === 1, 'acked by the normal interval flush');
  assert.ok(Date.now() - liveAt < 150, 'fewer than backlogThresholdMessages waiting: the short interval');
  await stop();
});

test('after holdOnFailureMs of failures it naks the held messages, drops their rows, and resumes once the store answers', async () => {
  const { source, sink, worker, stop } = setup({ retryInitialMs: 5, retryMaxMs: 5, holdOnFailureMs: 30 });
  const m1 = message('e1');
  source.push(m1.item);
  await until(() => sink.written.length === 1, 'row written');
  sink.failAlways = true;
  sink.probeOk = false;
  void worker.flush();
  await until(() => m1.naked.length === 1, 'nak after the hold time');
  assert.equal(m1.acked, 0);
  assert.equal(m1.naked[0], 5, 'nak delayed by retryMaxMs');
  assert.equal(sink.bufferedRows, 0);
  assert.equal(worker.status().state, 'failing');
  sink.failAlways = false;
  sink.probeOk = true;
  await until(() => worker.status().state === 'running', 'recovered by probe');
  const m2 = message('e1'); // the redelivery
  source.push(m2.item);
  await until(() => source.taken === 2, 'consuming again');
  assert.equal(await worker.flush(), true);
  assert.equal(m2.acked, 1);
  await stop();
});

test('pauses while maxBufferedRows rows are held and resumes after a flush', async () => {
  const { source, worker, stop } = setup({ maxRows: 100, maxBufferedRows: 2 });
  const m1 = message('e1', 'e2');
  const m2 = message('e3');
  source.push(m1.item, m2.item);
  await until(() => source.taken === 1, 'first taken');
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(source.taken, 1, 'paused at maxBufferedRows');
  assert.equal(await worker.flush(), true);
  await until(() => source.taken === 2, 'resumed');
  await stop();
  assert.equal(m2.acked, 1);
});

test('a poison message is counted and does not block the next one', async () => {
  const { source, worker, stop } = setup();
  const m1 = message('e1');
  source.push({ type: 'poison', bytes: 3, seq: 1, subject: 'events.a.0', error: 'not an event batch' }, m1.item);
  await until(() => source.taken === 2, 'both taken');
  assert.equal(await worker.flush(), true);
  assert.equal(m1.acked, 1);
  assert.equal(worker.stats.decodeErrors, 1);
  await stop();
});

test('stop() flushes and acks what is buffered; if the sink still fails, naks it for prompt redelivery', async () => {
  const ok = setup();
  const m1 = message('e1');
  ok.source.push(m1.item);
  await until(() => ok.sink.written.length === 1, 'row written');
  await ok.stop();
  assert.equal(m1.acked, 1);
  assert.equal(ok.worker.status().state, 'stopped');

  const down = setup();
  const m2 = message('e2');
  down.source.push(m2.item);
  await until(() => down.sink.written.length === 1, 'row written');
  down.sink.failAlways = true;
  await down.stop();
  assert.equal(m2.acked, 0);
  assert.deepEqual(m2.naked, [0]);
});
