/** The hub's dead letters: record, subject, deterministic Nats-Msg-Id, and the JetStream publisher with a fake client. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import { AGENT_ID_PATTERN, DLQ_SUBJECTS, type WireEvent } from '../../shared/wire.js';
import { HubError, HubErrorCode } from '../../hub/src/errors.js';
import {
  deadLetterMessageId,
  decodeHubDeadLetter,
  hubDeadLetterSubject,
  type DeadLetter,
} from '../../hub/src/sinks/dead-letter-sink.js';
import { JetStreamDeadLetterSink } from '../../hub/src/sinks/jetstream-dead-letter-sink.js';
import { lateLetters } from '../../hub/src/analytics/partition-processor.js';

const wireEvent: WireEvent = {
  id: 'evt-1',
  type: 'app.click',
  sv: 3,
  key: 'u1',
  ts: 1_700_000_000_123_000,
  its: 1_700_000_000_200_000,
  src: 'http',
  body: { user_id: 'u1', button: 'buy' },
};

function letter(overrides: Partial<DeadLetter> = {}): DeadLetter {
  return {
    reason: 'unknown_schema',
    detail: 'no schema app.click v3 in the registry bucket "schemas"',
    agent: 'gw-1',
    partition: 2,
    seq: 41,
    index: 0,
    event: wireEvent,
    ...overrides,
  };
}

test('a dead letter goes to dlq.hub.<reason>, inside the DLQ stream\'s subjects and apart from every agent\'s dlq.<agent>', () => {
  assert.equal(hubDeadLetterSubject('unknown_schema'), 'dlq.hub.unknown_schema');
  assert.equal(DLQ_SUBJECTS, 'dlq.>');
  assert.equal(hubDeadLetterSubject('invalid_event').split('.').length, 3, 'agents publish on two tokens only');
});

test('the Nats-Msg-Id comes from the event\'s id and time, so a redelivered event is stored once', () => {
  const first = deadLetterMessageId(letter());
  assert.equal(first, 'hub.dlq:evt-1@1700000000123000');
  assert.equal(deadLetterMessageId(letter({ seq: 99, index: 7, reason: 'schema_incompatible' })), first, 'same event, other message: same id');
  assert.notEqual(deadLetterMessageId(letter({ event: { ...wireEvent, ts: wireEvent.ts + 1 } })), first);
  assert.ok(!new RegExp(AGENT_ID_PATTERN).test(first.split(':')[0]!), 'never an agent\'s <agent>:dlq:<n>');
  // Without a usable id: the message's stream position, which a redelivery repeats.
  assert.equal(deadLetterMessageId(letter({ event: { ...wireEvent, id: '' }, seq: 41, index: 3 })), 'hub.dlq:seq:41:3');
  assert.equal(deadLetterMessageId(letter({ event: 42, seq: 41, index: 4 })), 'hub.dlq:seq:41:4');
  // An id that does not fit a header value is hashed.
  const odd = deadLetterMessageId(letter({ event: { ...wireEvent, id: 'line\nbreak' } }));
  assert.match(odd, /^hub\.dlq:sha256:[0-9a-f]{64}$/);
  assert.equal(deadLetterMessageId(letter({ event: { ...wireEvent, id: 'line\nbreak' } })), odd);
});

interface Sent {
  subject: string;
  data: Uint8Array;
  msgID: string | undefined;
  stream: string | undefined;
}

function fakeJetStream(options: { fail?: (msgID: string | undefined) => boolean; holdMs?: number; duplicate?: boolean } = {}) {
  const sent: Sent[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const js = {
    async publish(subject: string, data?: Uint8Array, opts?: { msgID?: string; expect?: { streamName?: string } }): Promise<PubAck> {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        await new Promise((resolve) => setTimeout(resolve, options.holdMs ?? 0));
        if (options.fail?.(opts?.msgID)) throw new Error('timeout waiting for PubAck');
        sent.push({ subject, data: data!, msgID: opts?.msgID, stream: opts?.expect?.streamName });
        return { stream: 'DLQ', seq: sent.length, duplicate: options.duplicate ?? false, domain: '' } as PubAck;
      } finally {
        inFlight--;
      }
    },
  } as unknown as Pick<JetStreamClient, 'publish'>;
  return { js, sent, maxInFlight: () => maxInFlight };
}

const clock = { now: () => 1_700_000_001_000 };

test('publishes one msgpack record per event with the event, the reason, the detail and the hub\'s name', async () => {
  const { js, sent } = fakeJetStream();
  const sink = new JetStreamDeadLetterSink(js, { hubName: 'hub-a', publishTimeoutMs: 1000, maxInFlight: 8, clock });
  await sink.publish([letter(), letter({ reason: 'invalid_event', detail: 'event evt-2 has no usable event time', index: 1, event: { id: 'evt-2' } })]);
  assert.deepEqual(
    sent.map((s) => [s.subject, s.msgID, s.stream]),
    [
      ['dlq.hub.unknown_schema', 'hub.dlq:evt-1@1700000000123000', 'DLQ'],
      ['dlq.hub.invalid_event', 'hub.dlq:evt-2@undefined', 'DLQ'],
    ],
  );
  const record = decodeHubDeadLetter(sent[0]!.data);
  assert.deepEqual(record, {
    v: 1,
    origin: 'hub',
    hub: 'hub-a',
    at: 1_700_000_001_000,
    code: HubErrorCode.UNKNOWN_SCHEMA,
    reason: 'unknown_schema',
    detail: 'no schema app.click v3 in the registry bucket "schemas"',
    agent: 'gw-1',
    partition: 2,
    seq: 41,
    index: 0,
    eventId: 'evt-1',
    eventType: 'app.click',
    version: 3,
    event: wireEvent,
  });
  assert.equal(decodeHubDeadLetter(sent[1]!.data).code, HubErrorCode.INVALID_EVENT);
  assert.equal(sink.stats.published, 2);
});

test('rejects when any record was not confirmed, so the message is not acked', async () => {
  const { js, sent } = fakeJetStream({ fail: (msgID) => msgID?.includes('evt-2@') === true });
  const sink = new JetStreamDeadLetterSink(js, { hubName: 'hub-a', publishTimeoutMs: 1000, maxInFlight: 8, clock });
  await assert.rejects(
    sink.publish([letter(), letter({ event: { ...wireEvent, id: 'evt-2' } }), letter({ event: { ...wireEvent, id: 'evt-3' } })]),
    (error: unknown) => error instanceof HubError && error.code === HubErrorCode.DEAD_LETTER_FAILED && /1 of 3 dead letters not confirmed/.test(error.message),
  );
  assert.equal(sent.length, 2, 'the others were still published (a retry repeats their ids)');
});

test('keeps at most maxInFlight publishes waiting for their PubAck, and counts duplicates', async () => {
  const { js, sent, maxInFlight } = fakeJetStream({ holdMs: 2, duplicate: true });
  const sink = new JetStreamDeadLetterSink(js, { hubName: 'hub-a', publishTimeoutMs: 1000, maxInFlight: 3, clock });
  const letters = Array.from({ length: 10 }, (_, i) => letter({ index: i, event: { ...wireEvent, id: `e${i}` } }));
  await sink.publish(letters);
  assert.equal(sent.length, 10);
  assert.equal(maxInFlight(), 3);
  assert.equal(sink.stats.duplicates, 10);
});

test('decodeHubDeadLetter refuses an agent\'s dead-letter record', () => {
  assert.throws(() => decodeHubDeadLetter(new Uint8Array([0x81, 0xa1, 0x76, 0x01])), /not a hub dead-letter record/);
});

test('an event late for several rules becomes one dead letter naming them all, at its position in the batch', async () => {
  const other: WireEvent = { ...wireEvent, id: 'evt-2' };
  const late = (rule: string, event: WireEvent, watermark: number) => ({ type: 'late_event' as const, rule, event, reason: 'beyond_allowed_lateness' as const, watermark });
  const letters = lateLetters(
    [late('overheating', other, 1_700_000_100_000), late('device-silent', other, 1_700_000_090_000), late('overheating', wireEvent, 1_700_000_100_000)],
    { agent: 'gw-1', partition: 2, events: [wireEvent, other] },
    41,
  );
  assert.deepEqual(
    letters.map((l) => [l.event, l.index, l.rules]),
    [
      [other, 1, ['device-silent', 'overheating']],
      [wireEvent, 0, ['overheating']],
    ],
  );
  assert.match(letters[0]!.detail, /^event evt-2 at 2023-11-14T22:13:20.123Z is behind the watermark 2023-11-14T22:15:00.000Z plus the allowed lateness of rules device-silent, overheating$/);
  assert.equal(deadLetterMessageId(letters[0]!), 'hub.dlq:late:device-silent+overheating:evt-2@1700000000123000');

  const { js, sent } = fakeJetStream();
  await new JetStreamDeadLetterSink(js, { hubName: 'hub-a', publishTimeoutMs: 1000, maxInFlight: 8, clock }).publish(letters);
  assert.deepEqual(decodeHubDeadLetter(sent[0]!.data).rules, ['device-silent', 'overheating']);
});
