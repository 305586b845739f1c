/**
 * No event is acked without being in QuestDB or in the DLQ: the worker with an in-memory source, a sink that maps
 * only the versions it was told, a resolver and a DLQ whose answers each test controls.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import type { EventBatch, WireEvent } from '../../shared/wire.js';
import type { BatchSource, Inbound } from '../../hub/src/consumer/consumer.js';
import { HubWorker, type HubWorkerSettings } from '../../hub/src/hub-worker.js';
import { HubMetrics } from '../../hub/src/metrics.js';
import type { DeadLetter, DeadLetterSink } from '../../hub/src/sinks/dead-letter-sink.js';
import type { FlushResult, Sink, SkippedEvent, WriteResult } from '../../hub/src/sinks/sink.js';
import type { Resolution, SchemaResolver } from '../../hub/src/schema-resolver.js';
import { locateSkipped, UnmappedEvents } from '../../hub/src/unmapped-events.js';

const silent = pino({ level: 'silent' });

class FakeSource implements BatchSource {
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

/** Writes events of the versions in `mapped` (`type/vN`); skips the others like QuestDbSink, with positions. */
class MappingSink implements Sink {
  readonly mapped = new Set<string>(['known/v1']);
  durable: string[] = [];
  failAlways = false;
  private pending: string[] = [];

  get bufferedRows(): number {
    return this.pending.length;
  }

  write(batch: EventBatch): WriteResult {
    const skipped: SkippedEvent[] = [];
    const skippedAt: number[] = [];
    let rows = 0;
    batch.events.forEach((event, index) => {
      if (event === null || typeof event !== 'object' || typeof event.id !== 'string' || event.id === '') {
        skipped.push({ type: 'invalid_event', id: '', reason: 'event has no id' });
        skippedAt.push(index);
      } else if (!this.mapped.has(`${event.type}/v${event.sv}`)) {
        skipped.push({ type: 'unknown_schema', eventType: event.type, version: event.sv, id: event.id });
        skippedAt.push(index);
      } else {
        this.pending.push(event.id);
        rows++;
      }
    });
    return { rows, skipped, skippedAt, invalidColumns: [] };
  }

  async flush(): Promise<FlushResult> {
    const rows = this.pending.length;
    await new Promise((resolve) => setImmediate(resolve));
    if (this.failAlways) throw new Error('QuestDB down');
    this.durable.push(...this.pending.splice(0, rows));
    return { rows };
  }

  discard(): number {
    return this.pending.splice(0).length;
  }

  async probe(): Promise<void> {
    if (this.failAlways) throw new Error('still down');
  }

  async close(): Promise<void> {}
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** Answers each (type, version) with what the test says: at once, or when it resolves a pending lookup. */
class FakeResolver implements SchemaResolver {
  readonly calls: string[] = [];
  readonly answers = new Map<string, Resolution | Error>();
  /** Lookups waiting for `answer()`, per version. */
  readonly pending = new Map<string, Array<Deferred<Resolution>>>();
  hold = false;

  constructor(private readonly sink: MappingSink) {}

  resolve(type: string, version: number): Promise<Resolution> {
    const key = `${type}/v${version}`;
    this.calls.push(key);
    if (this.hold) {
      const d = deferred<Resolution>();
      this.pending.set(key, [...(this.pending.get(key) ?? []), d]);
      return d.promise.then((r) => this.apply(key, r));
    }
    const answer = this.answers.get(key) ?? { status: 'unknown', reason: `no schema ${type} v${version} in the registry` };
    if (answer instanceof Error) return Promise.reject(answer);
    return Promise.resolve(this.apply(key, answer));
  }

  /** Answers every pending lookup of `key`. */
  answer(key: string, resolution: Resolution): void {
    for (const d of this.pending.get(key) ?? []) d.resolve(resolution);
    this.pending.delete(key);
  }

  /** A learned version is mapped by the time the resolver answers, as with the real one. */
  private apply(key: string, resolution: Resolution): Resolution {
    if (resolution.status === 'mapped') this.sink.mapped.add(key);
    return resolution;
  }
}

class FakeDeadLetters implements DeadLetterSink {
  stored: DeadLetter[] = [];
  fail = false;
  hold: Deferred<void> | undefined;
  calls = 0;

  async publish(letters: readonly DeadLetter[]): Promise<void> {
    this.calls++;
    if (this.hold) await this.hold.promise;
    if (this.fail) throw new Error('DLQ stream not reachable');
    this.stored.push(...letters);
  }
}

interface FakeMessage {
  item: Extract<Inbound, { type: 'batch' }>;
  acked: number;
  naked: Array<number | undefined>;
}

let seq = 100;
function event(id: string, type = 'known', sv = 1): WireEvent {
  return { id, type, sv, key: 'k', ts: 1_700_000_000_000_000, its: 1_700_000_000_000_000, src: 'http', body: { id } };
}
function message(...events: WireEvent[]): FakeMessage {
  const state: FakeMessage = {
    acked: 0,
    naked: [],
    item: {
      type: 'batch',
      batch: { v: 1, agent: 'gw-1', partition: 3, first: 1, last: events.length, events },
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
  flushIntervalMs: 60_000, // tests flush explicitly
  maxBufferedRows: 10_000,
  retryInitialMs: 60_000,
  retryMaxMs: 7_000,
  holdOnFailureMs: 60_000,
  shutdownTimeoutMs: 200,
};

function setup(overrides: Partial<HubWorkerSettings> = {}, options: { withoutRecovery?: boolean } = {}) {
  const source = new FakeSource();
  const sink = new MappingSink();
  const resolver = new FakeResolver(sink);
  const dlq = new FakeDeadLetters();
  const metrics = new HubMetrics();
  const unmapped = options.withoutRecovery ? undefined : new UnmappedEvents(resolver, dlq);
  const worker = new HubWorker(source, sink, { ...settings, ...overrides }, { metrics, log: silent, ...(unmapped ? { unmapped } : {}) });
  const running = worker.run();
  const stop = async (): Promise<void> => {
    await worker.stop();
    await running;
  };
  return { source, sink, resolver, dlq, metrics, worker, stop };
}

async function until(condition: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function counter(metrics: HubMetrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const value = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return value?.value ?? 0;
}

test('an event of a version learned at lookup is written, and its message acked only after the flush that holds it', async () => {
  const { source, sink, resolver, worker, stop } = setup();
  resolver.hold = true;
  const m = message(event('e1'), event('e2', 'fresh', 2));
  source.push(m.item);
  await until(() => resolver.pending.has('fresh/v2'), 'lookup started');
  assert.equal(await worker.flush(), true);
  assert.deepEqual(sink.durable, ['e1'], 'the known event is written at once');
  assert.equal(m.acked, 0, 'not acked while e2 is neither written nor dead-lettered');
  assert.equal(worker.status().unresolvedMessages, 1);

  resolver.answer('fresh/v2', { status: 'mapped' });
  await until(() => sink.bufferedRows === 1, 'e2 written after the lookup');
  assert.equal(m.acked, 0, 'written is not durable yet');
  assert.equal(await worker.flush(), true);
  assert.deepEqual(sink.durable, ['e1', 'e2']);
  assert.equal(m.acked, 1);
  assert.equal(worker.stats.writtenAfterLookup, 1);
  await stop();
});

test('messages of known types are acked while a lookup for another message is pending', async () => {
  const { source, resolver, worker, stop } = setup();
  resolver.hold = true;
  const waiting = message(event('u1', 'fresh', 2));
  const known = message(event('k1'));
  source.push(waiting.item, known.item);
  await until(() => resolver.pending.has('fresh/v2') && source.taken === 2, 'both taken');
  assert.equal(await worker.flush(), true);
  assert.equal(known.acked, 1);
  assert.equal(waiting.acked, 0);
  resolver.answer('fresh/v2', { status: 'mapped' });
  await until(() => worker.status().unresolvedMessages === 0, 'settled');
  assert.equal(await worker.flush(), true);
  assert.equal(waiting.acked, 1);
  await stop();
});

test('an event of a version unknown anywhere goes to the DLQ, and its message is acked only after the PubAck', async () => {
  const { source, sink, dlq, metrics, worker, stop } = setup();
  dlq.hold = deferred<void>();
  const m = message(event('e1'), event('x1', 'nowhere', 1));
  source.push(m.item);
  await until(() => dlq.calls === 1, 'DLQ publish started');
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 0, 'not acked before the DLQ confirmed');
  dlq.hold.resolve();
  await until(() => dlq.stored.length === 1, 'dead letter stored');
  await until(() => worker.status().unresolvedMessages === 0, 'settled');
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 1);
  assert.deepEqual(sink.durable, ['e1']);
  const [letter] = dlq.stored;
  assert.deepEqual(
    { reason: letter!.reason, agent: letter!.agent, partition: letter!.partition, seq: letter!.seq, index: letter!.index, id: (letter!.event as WireEvent).id },
    { reason: 'unknown_schema', agent: 'gw-1', partition: 3, seq: m.item.seq, index: 1, id: 'x1' },
  );
  assert.match(letter!.detail, /no schema nowhere v1/);
  assert.equal(await counter(metrics, 'hub_events_dead_lettered_total', { reason: 'unknown_schema' }), 1);
  assert.equal(worker.stats.deadLettered, 1);
  await stop();
});

test('an event of a version the hub refuses goes to the DLQ as schema_incompatible, with the reasons', async () => {
  const { source, resolver, dlq, metrics, worker, stop } = setup();
  resolver.answers.set('known/v2', { status: 'refused', reason: 'known v2: field "quality" became required (breaks backward)' });
  const m = message(event('e1', 'known', 2));
  source.push(m.item);
  await until(() => dlq.stored.length === 1, 'dead-lettered');
  await until(() => worker.status().unresolvedMessages === 0, 'settled');
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 1);
  assert.equal(dlq.stored[0]!.reason, 'schema_incompatible');
  assert.match(dlq.stored[0]!.detail, /became required/);
  assert.equal(await counter(metrics, 'hub_events_dead_lettered_total', { reason: 'schema_incompatible' }), 1);
  await stop();
});

test('an event that cannot become a row goes to the DLQ as invalid_event, without a lookup', async () => {
  const { source, resolver, dlq, worker, stop } = setup();
  const m = message(event('e1'), { ...event(''), id: '' });
  source.push(m.item);
  await until(() => dlq.stored.length === 1, 'dead-lettered');
  await until(() => worker.status().unresolvedMessages === 0, 'settled');
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 1);
  assert.deepEqual([dlq.stored[0]!.reason, dlq.stored[0]!.index], ['invalid_event', 1]);
  assert.deepEqual(resolver.calls, []);
  await stop();
});

test('does not ack a message whose dead letters the DLQ did not confirm: it is nak\'ed for redelivery', async () => {
  const { source, sink, dlq, metrics, worker, stop } = setup();
  dlq.fail = true;
  const m = message(event('e1'), event('x1', 'nowhere', 1));
  source.push(m.item);
  await until(() => m.naked.length === 1, 'given back');
  assert.deepEqual(m.naked, [7_000], 'redelivered after retryMaxMs');
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 0);
  assert.deepEqual(sink.durable, ['e1'], 'the known row is written anyway (dedup makes the redelivery harmless)');
  assert.equal(worker.status().heldMessages, 0);
  assert.equal(await counter(metrics, 'hub_dead_letter_failures_total'), 1);
  assert.equal(await counter(metrics, 'hub_events_dead_lettered_total', { reason: 'unknown_schema' }), 0);
  await stop();
});

test('does not ack or dead-letter when the registry cannot be read: the message is nak\'ed', async () => {
  const { source, resolver, dlq, worker, stop } = setup();
  resolver.answers.set('fresh/v2', new Error('registry unreachable'));
  const m = message(event('e1', 'fresh', 2));
  source.push(m.item);
  await until(() => m.naked.length === 1, 'given back');
  assert.equal(dlq.calls, 0, 'an unanswered lookup is not a reason to dead-letter');
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 0);
  assert.equal(worker.stats.unresolvedFailures, 1);
  await stop();
});

test('a lookup slower than unresolvedTimeoutMs gives the message back; its late answer writes and acks nothing', async () => {
  const { source, sink, resolver, dlq, worker, stop } = setup({ unresolvedTimeoutMs: 20 });
  resolver.hold = true;
  const m = message(event('e1', 'fresh', 2));
  source.push(m.item);
  await until(() => m.naked.length === 1, 'given back after the timeout');
  resolver.answer('fresh/v2', { status: 'unknown', reason: 'none' });
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(dlq.calls, 0, 'nothing published for a message given back');
  assert.equal(sink.bufferedRows, 0);
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 0);
  await stop();
});

test('stop() lets a lookup in flight finish, then flushes and acks', async () => {
  const { source, sink, resolver, worker, stop } = setup({ shutdownTimeoutMs: 2000 });
  resolver.hold = true;
  const m = message(event('e1', 'fresh', 2));
  source.push(m.item);
  await until(() => resolver.pending.has('fresh/v2'), 'lookup started');
  const stopped = stop();
  await new Promise((resolve) => setTimeout(resolve, 10));
  resolver.answer('fresh/v2', { status: 'mapped' });
  await stopped;
  assert.deepEqual(sink.durable, ['e1']);
  assert.equal(m.acked, 1);
  assert.equal(worker.status().state, 'stopped');
});

test('stop() gives back a message whose lookup does not finish by the shutdown deadline', async () => {
  const { source, resolver, stop } = setup({ shutdownTimeoutMs: 30 });
  resolver.hold = true;
  const m = message(event('e1'), event('u1', 'fresh', 2));
  source.push(m.item);
  await until(() => resolver.pending.has('fresh/v2'), 'lookup started');
  await stop();
  assert.equal(m.acked, 0);
  assert.deepEqual(m.naked, [0]);
});

test('a long sink outage gives back unresolved messages with the others', async () => {
  const { source, sink, resolver, worker, stop } = setup({ retryInitialMs: 5, retryMaxMs: 5, holdOnFailureMs: 20 });
  resolver.hold = true;
  const m = message(event('e1'), event('u1', 'fresh', 2));
  source.push(m.item);
  await until(() => resolver.pending.has('fresh/v2'), 'lookup started');
  sink.failAlways = true;
  void worker.flush();
  await until(() => m.naked.length === 1, 'given back');
  resolver.answer('fresh/v2', { status: 'mapped' });
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(sink.bufferedRows, 0, 'nothing written for a message given back');
  assert.equal(m.acked, 0);
  sink.failAlways = false;
  await stop();
  assert.equal(m.acked, 0);
});

test('stops reading while maxUnresolvedMessages messages wait for a lookup', async () => {
  const { source, resolver, worker, stop } = setup({ maxUnresolvedMessages: 2 });
  resolver.hold = true;
  const ms = [message(event('u1', 'fresh', 2)), message(event('u2', 'fresh', 2)), message(event('k1'))];
  source.push(...ms.map((m) => m.item));
  await until(() => source.taken === 2, 'two taken');
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(source.taken, 2, 'paused');
  resolver.answer('fresh/v2', { status: 'mapped' });
  await until(() => source.taken === 3, 'resumed');
  await until(() => worker.status().unresolvedMessages === 0, 'settled');
  assert.equal(await worker.flush(), true);
  assert.deepEqual(ms.map((m) => m.acked), [1, 1, 1]);
  await stop();
});

test('a worker given no registry and no DLQ never acks an event it cannot write', async () => {
  const { source, worker, stop } = setup({}, { withoutRecovery: true });
  const m = message(event('e1'), event('x1', 'nowhere', 1));
  source.push(m.item);
  await until(() => m.naked.length === 1, 'given back');
  assert.equal(await worker.flush(), true);
  assert.equal(m.acked, 0);
  await stop();
});

test('settle: one lookup per version, learned events rewritten in batch order, the rest dead-lettered', async () => {
  const sink = new MappingSink();
  const resolver = new FakeResolver(sink);
  resolver.answers.set('fresh/v2', { status: 'mapped' });
  const dlq = new FakeDeadLetters();
  const batch: EventBatch = {
    v: 1,
    agent: 'gw-1',
    partition: 0,
    first: 1,
    last: 5,
    events: [event('a', 'fresh', 2), event('b'), event('c', 'nowhere', 1), event('d', 'fresh', 2), 7 as unknown as WireEvent],
  };
  const first = sink.write(batch);
  const written: string[][] = [];
  const outcome = await new UnmappedEvents(resolver, dlq).settle({ batch, seq: 9, skipped: first.skipped, skippedAt: first.skippedAt }, (sub) => {
    written.push(sub.events.map((e) => e.id));
    return sink.write(sub);
  });
  assert.deepEqual(resolver.calls, ['fresh/v2', 'nowhere/v1']);
  assert.deepEqual(written, [['a', 'd']]);
  assert.equal(outcome.written, 2);
  assert.deepEqual(
    dlq.stored.map((l) => [l.reason, l.index]),
    [
      ['invalid_event', 4],
      ['unknown_schema', 2],
    ],
  );
});

test('locateSkipped finds skipped events by id when a sink does not report positions', () => {
  const batch: EventBatch = {
    v: 1,
    agent: 'gw-1',
    partition: 0,
    first: 1,
    last: 4,
    events: [event('a'), event('b', 'fresh', 2), null as unknown as WireEvent, event('b', 'fresh', 2)],
  };
  const skipped: SkippedEvent[] = [
    { type: 'unknown_schema', eventType: 'fresh', version: 2, id: 'b' },
    { type: 'invalid_event', id: '', reason: 'event is not an object' },
    { type: 'unknown_schema', eventType: 'fresh', version: 2, id: 'b' },
  ];
  assert.deepEqual(locateSkipped(batch, skipped), [1, 2, 3]);
});
